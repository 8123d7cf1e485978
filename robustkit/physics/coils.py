"""Simulated receive-coil sensitivities on a ring around the field of view, and map normalisation.

Geometry (the convention of ``sigpy.mri.birdcage_maps``): in coordinates where the image spans
``[-1, 1)`` along each axis, coil ``c`` of ``C`` sits at angle ``θ_c = 2πc/C`` on the ring
``(y_c, x_c) = r · (sin θ_c, cos θ_c)``, an ellipse that follows the field of view (``r = 1``
touches its edges). Distances are then measured isotropically in units of half the image width
``W/2`` (pixels are square).

Each element is either

* an infinite straight wire along z (sigpy's model, ``loop_radius=None``)::

      S_c(p) = exp(i (atan2(x − x_c, −(y − y_c)) − θ_c)) / ‖p − p_c‖,

* or a circular loop of radius ``a`` centred on the ring, its plane tangent to the ring and
  perpendicular to the slice (a phased-array head coil); its in-plane field ``B`` follows from the
  Biot–Savart law ``B(p) ∝ ∮ dl × (p − l) / ‖p − l‖³`` (64 segments), and the receive
  sensitivity is ``S_c = B_x − i B_y``. Loops fall off as ``‖p − p_c‖⁻³`` far away, so they are
  more localised and encode better than wires (better SENSE conditioning).
"""

from __future__ import annotations

import numpy as np

from robustkit.errors import RobustkitError

#: Biot–Savart quadrature: segments per loop.
_SEGMENTS = 64


def birdcage_maps(
    shape: tuple[int, int, int], radius: float = 1.0, loop_radius: float | None = 0.2
) -> np.ndarray:
    """Un-normalised ring-coil maps ``S``, complex128 ``(C, H, W)`` for ``shape = (C, H, W)``.

    Args:
        radius: coil-ring radius ``r`` relative to the half field of view (sigpy's ``r``).
        loop_radius: loop radius ``a`` in units of ``W/2``; None for sigpy's infinite wires.
    Normalise the result with :func:`normalise_maps`.
    """
    n_coils, h, w = shape
    if n_coils < 1 or h < 2 or w < 2:
        raise RobustkitError(f"coil map shape must be (C ≥ 1, H ≥ 2, W ≥ 2), got {tuple(shape)}")
    if not radius > 0 or (loop_radius is not None and not loop_radius > 0):
        raise RobustkitError(f"coil ring radius {radius} and loop radius {loop_radius} must be > 0")
    theta = 2 * np.pi * np.arange(n_coils) / n_coils
    aspect = h / w
    # Pixel centres in units of W/2; the ring is an ellipse with semi-axes r·(W/2, H/2).
    y = (np.arange(h) - h / 2) / (w / 2)
    x = (np.arange(w) - w / 2) / (w / 2)
    yc, xc = radius * aspect * np.sin(theta), radius * np.cos(theta)
    if loop_radius is None:
        dy = y[None, :, None] - yc[:, None, None]
        dx = x[None, None, :] - xc[:, None, None]
        return np.exp(1j * (np.arctan2(dx, -dy) - theta[:, None, None])) / np.hypot(dy, dx)
    return np.stack([_loop_map(y, x, yc[c], xc[c], theta[c], aspect, loop_radius) for c in range(n_coils)])


def _loop_map(
    y: np.ndarray, x: np.ndarray, yc: float, xc: float, theta: float, aspect: float, a: float
) -> np.ndarray:
    """``B_x − i B_y`` of one circular loop in the plane z = 0, ``(H, W)``."""
    # The loop's axis is the ring's outward normal at θ; it spans the tangent t and z.
    normal = np.array([np.cos(theta) * aspect, np.sin(theta)])
    tx, ty = -normal[1] / np.linalg.norm(normal), normal[0] / np.linalg.norm(normal)
    alpha = 2 * np.pi * (np.arange(_SEGMENTS) + 0.5) / _SEGMENTS
    dalpha = 2 * np.pi / _SEGMENTS
    px, py = x[None, :], y[:, None]
    bx = np.zeros((y.size, x.size))
    by = np.zeros((y.size, x.size))
    for al in alpha:
        # point l = c + a(cos α t + sin α e_z), element dl = a dα (−sin α t + cos α e_z)
        lx, ly, lz = xc + a * np.cos(al) * tx, yc + a * np.cos(al) * ty, a * np.sin(al)
        dlx, dly, dlz = -a * dalpha * np.sin(al) * tx, -a * dalpha * np.sin(al) * ty, a * dalpha * np.cos(al)
        rx, ry, rz = px - lx, py - ly, -lz
        r3 = (rx**2 + ry**2 + rz**2) ** 1.5
        bx += (dly * rz - dlz * ry) / r3
        by += (dlz * rx - dlx * rz) / r3
    return bx - 1j * by


def normalise_maps(maps: np.ndarray, support: np.ndarray | None = None) -> np.ndarray:
    """Scale maps ``(C, H, W)`` so that ``Σ_c |S_c|² = 1`` on ``support`` (bool ``(H, W)``; all
    pixels if None) and 0 outside it, hence ``Σ_c |S_c|² ≤ 1`` and ``‖A‖ ≤ 1`` (docs/maths.md §1), like
    ESPIRiT maps cropped to the object. Pixels where every map is 0 stay 0."""
    rss = np.sqrt((np.abs(maps) ** 2).sum(axis=0))
    keep = rss > 0 if support is None else (rss > 0) & support
    return np.where(keep, maps / np.where(keep, rss, 1.0), 0).astype(maps.dtype)
