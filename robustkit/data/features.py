"""Small features inserted into a ground-truth image, and the matched-filter detector (docs/maths.md §11).

A feature of kind ``disc``, ``gaussian`` or ``cross`` and size ``s`` pixels has a real profile
``p`` with peak 1 centred on pixel ``(row, col)``:

- ``disc``: ``p = 1`` where ``r ≤ s/2`` (``r``: distance to the centre in pixels);
- ``gaussian``: ``p = exp(−4 ln2 · r² / s²)`` (full width at half maximum ``s``);
- ``cross``: ``p = 1`` on two bars through the centre, span ``s`` (``|Δ| ≤ s/2``) and thickness
  ``w = max(1, round(s/4))`` (``|Δ⊥| ≤ (w − 1)/2``).

Its *footprint* is ``p ≥ ½``. Inserted with contrast ``c`` at a position, the feature image is

    x_f = a · e^{iφ} · p,   a = c · Σ p |x| / Σ p,   φ = arg Σ p x,

(``x``: the ground truth ``(H, W)``): an amplitude ``c`` times the local intensity, in the local
phase, so that it brightens the anatomy. No physics here: the k-space of ``x + x_f`` is the study's
(``A(x + x_f) = b + A x_f``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from robustkit.errors import RobustkitError

KINDS = ("disc", "gaussian", "cross")


def kernel(kind: str, size: float) -> torch.Tensor:
    """The profile ``p`` of a feature, real ``(K, K)`` with ``K = 2R + 1`` odd and the centre at ``[R, R]``."""
    if kind not in KINDS:
        raise RobustkitError(f"unknown feature {kind!r}; choose from {', '.join(KINDS)}")
    if not size > 0:
        raise RobustkitError(f"feature size must be > 0 pixels, got {size}")
    sigma = size / (2 * math.sqrt(2 * math.log(2)))
    radius = int(math.ceil(3 * sigma)) + 1 if kind == "gaussian" else int(math.ceil(size / 2)) + 1
    d = torch.arange(-radius, radius + 1, dtype=torch.float64)
    dy, dx = torch.meshgrid(d, d, indexing="ij")
    r2 = dy**2 + dx**2
    if kind == "disc":
        p = (r2 <= (size / 2) ** 2 + 1e-9).double()
    elif kind == "gaussian":
        p = torch.exp(-4 * math.log(2) * r2 / size**2)
    else:
        half_w = (max(1, round(size / 4)) - 1) / 2 + 1e-9
        span = size / 2 + 1e-9
        p = (((dy.abs() <= half_w) & (dx.abs() <= span)) | ((dx.abs() <= half_w) & (dy.abs() <= span))).double()
    return p


def place(k: torch.Tensor, shape: tuple[int, int], row: int, col: int) -> torch.Tensor:
    """``k`` ``(K, K)`` placed with its centre on pixel ``(row, col)`` of a zero image ``shape`` (clipped at the border)."""
    h, w = shape
    radius = k.shape[-1] // 2
    out = torch.zeros(shape, dtype=k.dtype)
    r0, r1 = max(0, row - radius), min(h, row + radius + 1)
    c0, c1 = max(0, col - radius), min(w, col + radius + 1)
    out[r0:r1, c0:c1] = k[r0 - row + radius:r1 - row + radius, c0 - col + radius:c1 - col + radius]
    return out


def support(x: torch.Tensor, level: float = 0.05) -> torch.Tensor:
    """The anatomy: bool ``(H, W)``, pixels where ``|x| > level · max|x|`` (``x`` complex ``(H, W)``)."""
    mag = x.abs()
    return mag > level * mag.max()


def inside_centres(mask: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Bool ``(H, W)``: centres at which the footprint ``k ≥ ½`` lies wholly inside ``mask``."""
    foot = (k >= 0.5).double()
    radius = k.shape[-1] // 2
    hits = torch.nn.functional.conv2d(mask.double()[None, None], foot[None, None], padding=radius)[0, 0]
    return hits >= foot.sum() - 0.5


def region(shape: tuple[int, int], row: int, col: int, size: float) -> torch.Tensor:
    """The feature region ``R``: bool ``(H, W)``, pixels within ``s/2 + max(1, s/2)`` of the centre."""
    h, w = shape
    dy = torch.arange(h, dtype=torch.float64)[:, None] - row
    dx = torch.arange(w, dtype=torch.float64)[None, :] - col
    return dy**2 + dx**2 <= (size / 2 + max(1.0, size / 2)) ** 2 + 1e-9


@dataclass(frozen=True)
class Candidate:
    """One feature to insert: kind, size (px), contrast, centre pixel."""

    kind: str
    size: int
    contrast: float
    row: int
    col: int


def draw_candidates(x: torch.Tensor, kinds: list[str], size: int, contrast: float, n: int,
                    rng: np.random.Generator, level: float = 0.05) -> list[Candidate]:
    """``n`` candidates, each of a kind drawn uniformly from ``kinds`` and a centre drawn uniformly from
    those whose footprint lies inside the anatomy of ``x`` (:func:`support`); where no centre keeps the
    whole footprint inside, centres inside the anatomy are used."""
    anatomy = support(x, level).cpu()
    if not anatomy.any():
        raise RobustkitError("the ground truth has no anatomy above the support level; check the data (an all-zero target?)")
    out = []
    for _ in range(n):
        kind = kinds[int(rng.integers(len(kinds)))]
        ok = inside_centres(anatomy, kernel(kind, size))
        centres = torch.nonzero(ok if ok.any() else anatomy)
        row, col = centres[int(rng.integers(len(centres)))].tolist()
        out.append(Candidate(kind, size, contrast, row, col))
    return out


def insert(x: torch.Tensor, c: Candidate) -> tuple[torch.Tensor, torch.Tensor, float]:
    """``(x_f, t, a)``: the feature image ``x_f = a·t`` and its template ``t = e^{iφ} p`` (complex
    ``(H, W)``, like ``x``) and the amplitude ``a = c · Σ p|x| / Σ p`` (module docstring)."""
    p = place(kernel(c.kind, c.size), tuple(x.shape[-2:]), c.row, c.col).to(device=x.device, dtype=x.real.dtype)
    local = float((p * x.abs()).sum() / p.sum())
    phase = torch.angle((p * x).sum())
    t = p * torch.exp(1j * phase).to(x.dtype)
    a = c.contrast * local
    return a * t, t, a


@dataclass(frozen=True)
class Detection:
    """What the detector measured on a difference image ``d`` (see :func:`detect`)."""

    contrast_recovered: float
    correlation: float
    detected: bool


def detect(d: torch.Tensor, t: torch.Tensor, a: float, r: torch.Tensor, threshold: float = 0.5) -> Detection:
    """The matched filter on ``d`` = (reconstruction with the feature) − (without), complex ``(H, W)``,
    with template ``t``, inserted amplitude ``a`` and region ``r`` (bool ``(H, W)``):

        â = Re⟨r·t, r·d⟩ / ‖r·t‖²   (least-squares amplitude of the template in d),
        contrast_recovered = â / a,   ρ = Re⟨r·t, r·d⟩ / (‖r·t‖ ‖r·d‖),
        detected = (â / a ≥ threshold) and (ρ ≥ threshold).

    ``d = a·t`` (the ground truth) gives ``â/a = ρ = 1``: detected for any threshold ≤ 1."""
    rt, rd = t * r, d * r
    inner = float(torch.vdot(rt.flatten(), rd.flatten()).real)
    nt, nd = float(torch.linalg.vector_norm(rt)), float(torch.linalg.vector_norm(rd))
    amplitude = inner / max(nt**2, 1e-30)
    recovered = amplitude / a if a != 0 else float("nan")
    rho = inner / max(nt * nd, 1e-30)
    return Detection(recovered, rho, bool(recovered >= threshold and rho >= threshold))
