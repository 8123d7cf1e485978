"""Realistic k-space perturbations (docs/maths.md §14): spikes, rigid motion between phase-encode lines,
coil maps from another calibration, and the worst case over a set of candidates.

Shapes: measured k-space ``b`` and perturbation ``γ`` complex ``(B, C, H, W)``; coil maps ``S``
complex ``(B, C, H, W)``; mask real, broadcastable to ``(B, 1, H, W)``; images complex ``(B, H, W)``.
A phase-encode line is a column ``w`` of k-space (the masks of :mod:`robustkit.physics.masks` sample
whole columns); lines are acquired in sequential order, left to right.

Every family is a :class:`Candidate` generator driven by one size ε:

* ``spikes``: ``n`` corrupted samples at distinct measured positions ``(h, w)``, in every coil,
  ``‖γ‖ = ε‖b‖`` split equally (``‖γ[:, h_j, w_j]‖ = ε‖b‖/√n``), random complex amplitudes;
* ``motion``: the object (ground truth ``x``) rotated by ``θ`` and translated by ``Δ`` for the last
  fraction ``f`` of the measured lines, ``γ = L ⊙ M ⊙ F(S (T_{θ,Δ} x − x))``; the motion range is
  ``|θ| ≤ ε`` radians and ``Δ = (0, ε W)`` pixels along the phase-encode axis;
* ``coil-map``: maps ``S̃ = cos φ S + sin φ V`` with ``V ⟂ S`` per pixel, ``|V| = |S|``, smooth, and
  ``2 sin(φ/2) = ε``, so ``‖S̃ − S‖ = ε‖S‖`` and ``Σ_c |S̃_c|² = Σ_c |S_c|²`` pixel by pixel; the model
  reconstructs with ``S̃``, and ``γ = M F((S − S̃) x)`` is the k-space error it then sees.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch

from robustkit.attacks.threat import per_sample_norm
from robustkit.choices import PERTURBATION_FAMILIES
from robustkit.errors import RobustkitError
from robustkit.physics.fft import fft2c, ifft2c
from robustkit.physics.sense import as_mask

FAMILIES = PERTURBATION_FAMILIES

#: the highest spatial frequency (cycles per field of view) of the smooth coil-map perturbation.
SMOOTH_FREQUENCIES = 2


@dataclass
class Candidate:
    """One perturbation of a batch: the k-space ``kspace`` and the ``maps`` the model reconstructs
    with, the (equivalent) k-space perturbation ``gamma`` ``(B, C, H, W)`` and the family's
    parameters, each a ``(B,)`` tensor (the columns of the attack study)."""

    kspace: torch.Tensor
    maps: torch.Tensor
    gamma: torch.Tensor
    params: dict[str, torch.Tensor] = field(default_factory=dict)


# ------------------------------------------------------------------ spikes
def spikes(kspace: torch.Tensor, mask: torch.Tensor, eps: float, n: int,
           generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``(γ, positions)``: ``n`` spikes at distinct measured positions of each slice, in every coil.

    ``positions`` ``(B, n, 2)`` long, ``(h, w)``; ``γ`` is zero elsewhere and
    ``‖γ_i[:, h_j, w_j]‖ = ε‖b_i‖/√n``, hence ``‖γ_i‖ = ε‖b_i‖``. ``generator`` is a CPU generator.
    """
    if n < 1:
        raise RobustkitError(f"the number of spikes must be >= 1, got {n}")
    b, c, h, w = kspace.shape
    measured = (as_mask(mask, 4).to(kspace.device).expand(b, 1, h, w)[:, 0] > 0).reshape(b, -1).cpu()
    radius = eps * per_sample_norm(kspace).cpu()
    gamma = torch.zeros(b, c, h * w, dtype=kspace.dtype)
    positions = torch.zeros(b, n, 2, dtype=torch.long)
    for i in range(b):
        where = torch.nonzero(measured[i]).flatten()
        if where.numel() < n:
            raise RobustkitError(f"{n} spikes do not fit in the {where.numel()} measured samples; use fewer spikes")
        chosen = where[torch.randperm(where.numel(), generator=generator)[:n]]
        amp = torch.randn(c, n, dtype=kspace.dtype, generator=generator)
        amp = amp / torch.linalg.vector_norm(amp, dim=0).clamp_min(1e-30) * (radius[i] / math.sqrt(n))
        gamma[i][:, chosen] = amp
        positions[i] = torch.stack([chosen // w, chosen % w], dim=1)
    return gamma.reshape(b, c, h, w).to(kspace.device), positions


# ------------------------------------------------------------------ motion
def translate(x: torch.Tensor, shift: tuple[float, float]) -> torch.Tensor:
    """``x(r − Δ)`` for ``Δ = (Δy, Δx)`` pixels (sub-pixel allowed, periodic), ``(..., H, W)``:
    the phase ramp ``F[x(· − Δ)](k) = e^{−2πi (k_y Δy/H + k_x Δx/W)} F[x](k)``, ``k`` counted from
    the centre sample ``(H//2, W//2)``."""
    if shift[0] == 0 and shift[1] == 0:
        return x
    return ifft2c(phase_ramp(x.shape[-2:], shift, x.device).to(x.dtype) * fft2c(x))


def phase_ramp(shape: tuple[int, int], shift: tuple[float, float], device=None) -> torch.Tensor:
    """``e^{−2πi (k_y Δy/H + k_x Δx/W)}`` on the centred k-space grid, complex128 ``(H, W)``."""
    h, w = shape
    ky = torch.arange(h, device=device, dtype=torch.float64) - h // 2
    kx = torch.arange(w, device=device, dtype=torch.float64) - w // 2
    angle = -2 * math.pi * (ky[:, None] * shift[0] / h + kx[None, :] * shift[1] / w)
    return torch.polar(torch.ones_like(angle), angle)


def rotate(x: torch.Tensor, angle: float) -> torch.Tensor:
    """``x`` ``(B, H, W)`` rotated by ``angle`` radians about the centre pixel ``(H//2, W//2)``:
    ``(R_θ x)(p) = x(c + R_{−θ}(p − c))``, bilinear interpolation, zero outside the field of view.
    With rows drawn downwards, ``θ > 0`` turns the image clockwise (``θ = π/2`` is ``rot90(x, −1)``)."""
    if angle == 0:
        return x
    b, h, w = x.shape
    real = x.real.dtype
    py, px = torch.meshgrid(torch.arange(h, dtype=real, device=x.device),
                            torch.arange(w, dtype=real, device=x.device), indexing="ij")
    cy, cx = float(h // 2), float(w // 2)
    cos, sin = math.cos(angle), math.sin(angle)
    sy = cy + cos * (py - cy) - sin * (px - cx)
    sx = cx + sin * (py - cy) + cos * (px - cx)
    grid = torch.stack([2 * sx / (w - 1) - 1, 2 * sy / (h - 1) - 1], dim=-1).expand(b, h, w, 2)
    planes = torch.view_as_real(x).permute(0, 3, 1, 2)  # (B, 2, H, W)
    out = torch.nn.functional.grid_sample(planes, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return torch.view_as_complex(out.permute(0, 2, 3, 1).contiguous())


def rigid_motion(x: torch.Tensor, angle: float, shift: tuple[float, float]) -> torch.Tensor:
    """``T_{θ,Δ} x``: rotation by ``angle`` then translation by ``shift``; exactly ``x`` for (0, (0, 0))."""
    return translate(rotate(x, angle), shift)


def moved_lines(mask: torch.Tensor, fraction: float) -> torch.Tensor:
    """``(B, W)`` bool: the last ``round(fraction · n)`` of the ``n`` measured phase-encode lines
    (columns) of each slice, in sequential order — the lines acquired after the motion."""
    if not 0 < fraction <= 1:
        raise RobustkitError(f"the fraction of moved lines must be in (0, 1], got {fraction}")
    lines = as_mask(mask, 4)[:, 0].amax(dim=-2) > 0  # (B, W)
    count = lines.sum(dim=1, keepdim=True)
    later = count - lines.long().cumsum(dim=1)  # measured lines after this one
    moved = torch.round(fraction * count.double()).long()
    return lines & (later < moved)


def motion(maps: torch.Tensor, mask: torch.Tensor, image: torch.Tensor, angle: float, shift: tuple[float, float],
           fraction: float) -> torch.Tensor:
    """``γ = L ⊙ M ⊙ F(S (T_{θ,Δ} x − x))`` ``(B, C, H, W)``: the k-space change when the object ``x``
    ``(B, H, W)`` moves rigidly before the last ``fraction`` of the measured lines ``L``."""
    diff = rigid_motion(image, angle, shift) - image
    lines = moved_lines(mask, fraction).to(maps.device)
    return fft2c(maps * diff.unsqueeze(-3)) * as_mask(mask, 4).to(maps.device) * lines[:, None, None, :]


# ------------------------------------------------------------------ coil maps
def smooth_field(shape: tuple[int, ...], generator: torch.Generator, frequencies: int = SMOOTH_FREQUENCIES,
                 dtype: torch.dtype = torch.complex64) -> torch.Tensor:
    """A smooth complex random field ``(..., H, W)``: complex Gaussian Fourier coefficients on the
    ``(2f + 1)²`` lowest frequencies, ``f = frequencies``, zero above."""
    *lead, h, w = shape
    coeff = torch.zeros(*lead, h, w, dtype=dtype)
    fy, fx = min(frequencies, h // 2 - 1 if h > 2 else 0), min(frequencies, w // 2 - 1 if w > 2 else 0)
    block = torch.randn(*lead, 2 * fy + 1, 2 * fx + 1, dtype=dtype, generator=generator)
    coeff[..., h // 2 - fy: h // 2 + fy + 1, w // 2 - fx: w // 2 + fx + 1] = block
    return ifft2c(coeff)


def coil_maps(maps: torch.Tensor, eps: float, generator: torch.Generator) -> torch.Tensor:
    """Maps of another calibration ``S̃ = cos φ S + sin φ V``, ``2 sin(φ/2) = ε`` (``0 ≤ ε ≤ 2``).

    ``V`` is a smooth random field made orthogonal to ``S`` in coil space and scaled to ``|S|`` pixel
    by pixel, so ``|S̃(r) − S(r)| = ε |S(r)|`` and ``|S̃(r)| = |S(r)|`` at every pixel ``r`` (the
    normalisation ``Σ_c |S_c|² = 1`` on the support and 0 off it is kept exactly).
    """
    if not 0 <= eps <= 2:
        raise RobustkitError(f"a coil-map error ε = {eps} is not in [0, 2] (‖S̃ − S‖ ≤ 2‖S‖); use a smaller --eps")
    if maps.shape[-3] < 2:
        raise RobustkitError("a coil-map error needs at least 2 coils (one coil has no other direction); "
                             "use data with more coils or drop --kind coil-map")
    r = smooth_field(tuple(maps.shape), generator, dtype=maps.dtype).to(maps.device)
    power = (maps.abs() ** 2).sum(dim=-3, keepdim=True)  # (B, 1, H, W)
    inner = (maps.conj() * r).sum(dim=-3, keepdim=True)
    ortho = r - maps * inner / power.clamp_min(1e-30)
    size = torch.linalg.vector_norm(ortho, dim=-3, keepdim=True)
    v = torch.where(power > 0, ortho * power.sqrt() / size.clamp_min(1e-30), torch.zeros_like(ortho))
    phi = 2 * math.asin(eps / 2)
    return math.cos(phi) * maps + math.sin(phi) * v


# ------------------------------------------------------------------ candidates and the worst case
def candidates(family: str, kspace: torch.Tensor, maps: torch.Tensor, mask: torch.Tensor, image: torch.Tensor,
               eps: float, count: int, generator: torch.Generator, n_spikes: int = 4,
               lines_fraction: float = 0.5) -> Iterator[Candidate]:
    """The ``count`` perturbations of one family at size ε that the worst case searches (docs/maths.md §14).

    spikes: ``count`` random position sets; motion: ``count`` angles evenly spaced over
    ``[−ε, ε]`` radians (``count = 1``: ``θ = ε``), each with the translation ``(0, ε W)`` pixels;
    coil-map: ``count`` random smooth directions ``V``. ``image`` is the ground truth ``x``.
    """
    if family not in FAMILIES:
        raise RobustkitError(f"unknown perturbation family {family!r}; choose from {', '.join(FAMILIES)}")
    if count < 1:
        raise RobustkitError(f"the worst case needs at least 1 candidate, got {count}")
    b = kspace.shape[0]

    def per_sample(value: float) -> torch.Tensor:
        return torch.full((b,), float(value), dtype=torch.float64)

    if family == "spikes":
        for _ in range(count):
            gamma, _ = spikes(kspace, mask, eps, n_spikes, generator)
            yield Candidate(kspace + gamma, maps, gamma, {"spikes": per_sample(n_spikes)})
    elif family == "motion":
        angles = [eps] if count == 1 else torch.linspace(-eps, eps, count, dtype=torch.float64).tolist()
        shift = (0.0, eps * kspace.shape[-1])
        lines = moved_lines(mask, lines_fraction).sum(1) / (as_mask(mask, 4)[:, 0].amax(dim=-2) > 0).sum(1)
        for angle in angles:
            gamma = motion(maps, mask, image, angle, shift, lines_fraction)
            yield Candidate(kspace + gamma, maps, gamma, {"angle": per_sample(math.degrees(angle)),
                                                          "shift_px": per_sample(shift[1]),
                                                          "lines_fraction": lines.double().cpu().expand(b)})
    else:
        m = as_mask(mask, 4).to(maps.device)
        for _ in range(count):
            wrong = coil_maps(maps, eps, generator)
            gamma = m * fft2c((maps - wrong) * image.unsqueeze(-3))
            error = per_sample_norm(wrong - maps) / per_sample_norm(maps).clamp_min(1e-30)
            yield Candidate(kspace, wrong, gamma, {"map_error": error.double().cpu()})


def worst_case(found: list[Candidate], damage: Callable[[Candidate], torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(index, losses)``: ``losses`` ``(n, B)`` the damage of each candidate per slice and ``index``
    ``(B,)`` the candidate of largest damage per slice (ties: the first)."""
    losses = torch.stack([damage(c).detach().double().cpu() for c in found])
    return losses.argmax(dim=0), losses


def pick(values: list[torch.Tensor], index: torch.Tensor) -> torch.Tensor:
    """Per slice ``i``, ``values[index[i]][i]``: the worst candidate's entry of per-candidate ``(B, ...)`` tensors."""
    stacked = torch.stack(values)
    return stacked[index.to(stacked.device), torch.arange(stacked.shape[1], device=stacked.device)]


__all__ = ["FAMILIES", "Candidate", "candidates", "coil_maps", "motion", "moved_lines", "phase_ramp", "pick",
           "rigid_motion", "rotate", "smooth_field", "spikes", "translate", "worst_case"]
