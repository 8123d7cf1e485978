"""Cartesian sampling masks (fastMRI convention), seeded by an explicit generator only.

A 1-D mask samples whole phase-encode lines (columns, the last dim W): a fully sampled centre of
``round(W · center_fraction)`` lines plus random or equispaced lines elsewhere, so that the total
is about ``W / accel``. No function here touches numpy's or torch's global RNG state.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from robustkit.errors import RobustkitError

#: fastMRI's default centre fractions: 8 % of lines at 4×, 4 % at 8×; we interpolate 0.32/accel.
_CENTER_CONSTANT = 0.32

MASK_KINDS = ("random", "equispaced", "variable-density-2d")


def default_center_fraction(accel: float) -> float:
    """fastMRI convention: 0.08 at 4×, 0.04 at 8× (``0.32 / accel``), capped at 1."""
    return min(1.0, _CENTER_CONSTANT / accel)


def _check(shape: tuple[int, int], accel: float, center_fraction: float | None) -> float:
    if not np.isfinite(accel) or accel < 1:
        raise RobustkitError(f"acceleration must be a number ≥ 1, got {accel}; use e.g. --accel 4")
    if len(shape) != 2 or min(shape) < 2:
        raise RobustkitError(f"mask shape must be (H, W) with H, W ≥ 2, got {shape}")
    cf = default_center_fraction(accel) if center_fraction is None else center_fraction
    if not 0 <= cf <= 1 or cf > 1 / accel + 1e-12 and accel > 1:
        raise RobustkitError(
            f"centre fraction {cf} is not in [0, 1/accel = {1 / accel:.3f}]; lower it or the acceleration"
        )
    return cf


def cartesian_mask(
    shape: tuple[int, int],
    accel: float,
    rng: np.random.Generator,
    center_fraction: float | None = None,
    kind: str = "random",
) -> np.ndarray:
    """A 0/1 float32 mask of ``shape = (H, W)``.

    ``kind``: ``"random"`` (uniformly random outer lines), ``"equispaced"`` (every ``accel``-th
    outer line from a random offset) or ``"variable-density-2d"`` (2-D Gaussian-density points with
    a fully sampled central square). ``rng`` is the only source of randomness.
    """
    if kind not in MASK_KINDS:
        raise RobustkitError(f"unknown mask kind {kind!r}; choose one of {', '.join(MASK_KINDS)}")
    cf = _check(shape, accel, center_fraction)
    h, w = shape
    if kind == "variable-density-2d":
        return _variable_density_2d(shape, accel, cf, rng)
    n_center = max(1, int(round(w * cf))) if cf > 0 else 0
    lines = np.zeros(w, dtype=bool)
    start = (w - n_center + 1) // 2
    lines[start : start + n_center] = True
    n_target = int(round(w / accel))
    n_outer = max(0, n_target - n_center)
    outer = np.flatnonzero(~lines)
    if kind == "random":
        chosen = rng.choice(outer, size=min(n_outer, outer.size), replace=False)
        lines[chosen] = True
    else:
        # Equispaced outer lines with spacing chosen so the total hits W / accel (fastMRI's
        # EquispacedMaskFractionFunc idea), from a random offset.
        if n_outer > 0:
            spacing = outer.size / n_outer
            offset = rng.uniform(0, spacing)
            idx = np.floor(offset + spacing * np.arange(n_outer)).astype(int)
            lines[outer[np.clip(idx, 0, outer.size - 1)]] = True
    return np.broadcast_to(lines[None, :], (h, w)).astype(np.float32)


def _variable_density_2d(shape: tuple[int, int], accel: float, cf: float, rng: np.random.Generator) -> np.ndarray:
    h, w = shape
    ky, kx = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    mask = np.zeros(shape, dtype=bool)
    ch, cw = max(1, int(round(h * np.sqrt(cf)))), max(1, int(round(w * np.sqrt(cf))))
    mask[(h - ch + 1) // 2 : (h - ch + 1) // 2 + ch, (w - cw + 1) // 2 : (w - cw + 1) // 2 + cw] = True
    n_target = int(round(h * w / accel))
    n_rest = max(0, n_target - int(mask.sum()))
    density = np.exp(-(kx**2 + ky**2) / (2 * 0.35**2))
    density[mask] = 0
    p = density.ravel() / density.sum()
    chosen = rng.choice(h * w, size=min(n_rest, int((p > 0).sum())), replace=False, p=p)
    mask.ravel()[chosen] = True
    return mask.astype(np.float32)


@dataclass(frozen=True)
class MaskSpec:
    """How to draw masks for a dataset: acceleration, centre fraction, kind.

    ``draw(shape, seed)`` is deterministic in ``seed``; datasets use ``seed = base + sample index``
    for fixed evaluation masks and add the epoch for per-epoch training draws.
    """

    accel: float = 4.0
    center_fraction: float | None = None
    kind: str = "random"

    def draw(self, shape: tuple[int, int], seed: int) -> np.ndarray:
        return cartesian_mask(shape, self.accel, np.random.default_rng(seed), self.center_fraction, self.kind)
