"""The canonical multi-coil sample every loader produces and every model and study consumes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from robustkit.errors import RobustkitError

#: the smallest image side robustkit handles: the SSIM window (``robustkit.metrics.ssim``, 7 × 7).
MIN_SIDE = 7


@dataclass
class Sample:
    """One 2-D multi-coil slice, scaled so that ``max|target| = 1`` (the factor is ``meta["scale"]``).

    Attributes:
        kspace: complex64 ``(C, H, W)``; fully sampled when ``mask`` is None, else the measured
            samples (zero where ``mask`` is 0).
        maps: coil sensitivities ``S``, complex64 ``(C, H, W)``.
        target: ground truth, complex64 ``(H, W)``: the coil-combined fully sampled image
            ``Σ_c conj(S_c) Fᴴ k_c`` (docs/maths.md §1); None when the data has no fully sampled reference.
        mask: the acquisition mask, float32 0/1 ``(H, W)``, or None for fully sampled k-space.
        meta: provenance: ``source``, ``file``, ``slice``, ``scale``, ``split``, … (JSON-serialisable).
    """

    kspace: np.ndarray
    maps: np.ndarray
    target: np.ndarray | None = None
    mask: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.kspace.shape[-2:])  # type: ignore[return-value]

    def validate(self) -> None:
        """Raise :class:`RobustkitError` naming the first inconsistency (rank, shape, NaN, empty mask)."""
        name = self.meta.get("file", "sample")
        if self.kspace.ndim != 3:
            raise RobustkitError(
                f"{name}: k-space must have shape (coils, H, W), got {self.kspace.shape}; "
                "pass one slice at a time"
            )
        coils, h, w = self.kspace.shape
        if coils < 1:
            raise RobustkitError(f"{name}: k-space has no coils, shape {self.kspace.shape}; a slice needs at least one coil")
        if min(h, w) < MIN_SIDE:
            raise RobustkitError(f"{name}: the image is {h}x{w} (H x W); robustkit needs at least {MIN_SIDE} pixels a "
                                 f"side (the SSIM window); use larger images or a larger --crop")
        if self.maps.shape != self.kspace.shape:
            raise RobustkitError(
                f"{name}: coil maps of shape {self.maps.shape} do not match k-space of shape "
                f"{self.kspace.shape}; supply maps for the same coils and matrix size (or estimate them)"
            )
        if not np.isfinite(self.kspace).all():
            raise RobustkitError(f"{name}: k-space contains NaN or Inf values; clean or drop this slice")
        if not np.isfinite(self.maps).all():
            raise RobustkitError(f"{name}: coil maps contain NaN or Inf values; re-estimate the maps")
        if self.target is not None and self.target.shape != self.shape:
            raise RobustkitError(
                f"{name}: target of shape {self.target.shape} does not match k-space size {self.shape}"
            )
        if self.mask is not None:
            if self.mask.shape != self.shape:
                raise RobustkitError(
                    f"{name}: mask of shape {self.mask.shape} does not match k-space size {self.shape}; "
                    "build the mask for this matrix size"
                )
            if not (self.mask > 0).any():
                raise RobustkitError(f"{name}: the mask samples no k-space location; use a mask with samples")
