"""The built-in dataset: axial (default), coronal or sagittal slices of the MNI152 2009 T1 template
(shipped inside nilearn, no download) encoded as fully sampled multi-coil k-space with simulated
coil maps.

Planes (:data:`PLANES`; template axes X left→right, Y posterior→anterior, Z inferior→superior):
``axial`` slices along Z, rows anterior→posterior, columns left→right, padded to ``PADDING``;
``coronal`` slices along Y, rows superior→inferior, columns left→right, padded to ``PADDING``;
``sagittal`` slices along X, rows superior→inferior, columns posterior→anterior, padded to
``PADDING`` transposed (the template is longer front to back than top to bottom).

Per kept slice ``z`` (template intensities ``m``, zero-padded to ``(H, W)``):

* a smooth random phase ``φ(y, x) = Σ_{i+j≤2} a_ij yⁱ xʲ``, ``a_ij ~ N(0, (π/3)²)`` drawn from
  ``default_rng([seed, z])``, with ``y, x ∈ [-1, 1]``: the image is ``x = m · exp(iφ)``;
* ``C`` ring-coil maps (:func:`robustkit.physics.coils.birdcage_maps`, loops) normalised to
  ``Σ_c |S_c|² = 1`` on the brain support dilated by 4 mm and 0 outside it (like ESPIRiT maps);
* k-space ``k = s · F(S x)`` and target ``s · Σ_c conj(S_c) Fᴴ k_c = s · x`` with ``s`` such that
  ``max|target| = 1`` (``meta["scale"] = s``).

Slices whose brain area (pixels above 10 % of the volume's maximum) is below 30 % of the largest
cross-section of that plane are dropped. Splits are contiguous slice ranges along the slicing axis
(axial: inferior to superior):
``train | gap | test | gap | val | gap | train`` with 4 mm gaps (2 slices at 2 mm), so no test
slice touches a training slice. Masks are drawn at read time (:class:`PreparedDataset`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from robustkit.data.sample import Sample
from robustkit.errors import RobustkitError

#: bump when the construction changes: it is part of the cache file name.
BUILTIN_VERSION = 1
TEMPLATE = "MNI ICBM152 2009a nonlinear symmetric T1 (nilearn: mni_icbm152_t1_tal_nlin_sym_09a_converted)"
LICENCE = (
    "MNI ICBM152 template, Copyright (C) 1993-2009 Louis Collins, McConnell Brain Imaging Centre, "
    "Montreal Neurological Institute, McGill University: free to use, copy, modify and distribute "
    "with this notice (Fonov et al., NeuroImage 2011); shipped with nilearn (BSD-3-Clause)"
)
#: (H, W) = (anterior-posterior, left-right) after zero padding, per resolution in mm.
PADDING = {2: (120, 104), 1: (240, 200)}
BRAIN_LEVEL = 0.1  # a brain pixel exceeds this fraction of the volume's maximum
MIN_AREA = 0.3  # keep slices with ≥ this fraction of the largest axial brain area
SUPPORT_MARGIN_MM = 4.0
GAP_MM, TEST_MM, VAL_MM = 4.0, 20.0, 10.0
TEST_START = 0.4  # the test block starts this far up the kept slice range
PHASE_STD = np.pi / 3
COIL_RADIUS, LOOP_RADIUS = 1.0, 0.2
#: plane → template axis it slices along (the template is (X, Y, Z)).
PLANES = {"axial": 2, "coronal": 1, "sagittal": 0}


def cache_dir() -> Path:
    """``$ROBUSTKIT_CACHE`` or ``~/.cache/robustkit``."""
    return Path(os.environ.get("ROBUSTKIT_CACHE") or Path.home() / ".cache" / "robustkit")


def builtin_path(resolution: int = 2, seed: int = 0, n_coils: int = 12, plane: str = "axial") -> Path:
    """Where the cached built-in dataset for these settings lives (the plane is part of the name)."""
    return cache_dir() / f"builtin-mni152-{resolution}mm-{plane}-{n_coils}coils-seed{seed}-v{BUILTIN_VERSION}.h5"


def _check(resolution: int, n_coils: int, plane: str = "axial") -> None:
    if resolution not in PADDING:
        raise RobustkitError(f"resolution must be 2 or 1 (mm), got {resolution}; use --resolution 2")
    if n_coils < 2:
        raise RobustkitError(f"need at least 2 coils for parallel imaging, got {n_coils}; use --coils 12")
    if plane not in PLANES:
        raise RobustkitError(f"unknown plane {plane!r}; choose from {', '.join(PLANES)}")


def padded_shape(resolution: int, plane: str = "axial") -> tuple[int, int]:
    """``(H, W)`` of the slices of ``plane`` (module docstring)."""
    h, w = PADDING[resolution]
    return (w, h) if plane == "sagittal" else (h, w)


def plane_slice(volume: np.ndarray, index: int, plane: str = "axial") -> np.ndarray:
    """Slice ``index`` along the axis of ``plane``, oriented as in the module docstring, ``(H, W)``."""
    return np.take(volume, index, axis=PLANES[plane]).T[::-1]


def load_template(resolution: int = 2) -> np.ndarray:
    """The MNI152 T1 template as float64 ``(X, Y, Z)`` = (left→right, posterior→anterior, inferior→superior)."""
    from nilearn.datasets import load_mni152_template

    return np.asarray(load_mni152_template(resolution=resolution).get_fdata(), dtype=np.float64)


def split_ranges(z0: int, z1: int, resolution: int = 2) -> dict[str, list[list[int]]]:
    """Half-open template slice ranges ``[start, stop)`` per split for kept slices ``[z0, z1)``."""
    gap, n_test, n_val = (round(mm / resolution) for mm in (GAP_MM, TEST_MM, VAL_MM))
    test = z0 + round(TEST_START * (z1 - z0))
    val = test + n_test + gap
    rest = val + n_val + gap
    if test - gap <= z0 or rest >= z1:
        raise RobustkitError(f"only {z1 - z0} usable slices; too few to split into train/val/test")
    return {"train": [[z0, test - gap], [rest, z1]], "test": [[test, test + n_test]], "val": [[val, val + n_val]]}


def _split_of(z: int, ranges: dict[str, list[list[int]]]) -> str | None:
    for name, spans in ranges.items():
        if any(a <= z < b for a, b in spans):
            return name
    return None


def kept_slices(volume: np.ndarray, plane: str = "axial") -> tuple[int, int]:
    """``[z0, z1)``: the contiguous range of ``plane`` slices whose brain area is ≥ ``MIN_AREA`` of the largest."""
    others = tuple(a for a in range(3) if a != PLANES[plane])
    area = (volume > BRAIN_LEVEL * volume.max()).sum(axis=others)
    keep = np.flatnonzero(area >= MIN_AREA * area.max())
    return int(keep[0]), int(keep[-1]) + 1


def _pad(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    h, w = image.shape
    if h > shape[0] or w > shape[1]:
        raise RobustkitError(f"slice of size {image.shape} does not fit the padded size {shape}")
    out = np.zeros(shape, dtype=image.dtype)
    oy, ox = (shape[0] - h) // 2, (shape[1] - w) // 2
    out[oy : oy + h, ox : ox + w] = image
    return out


def smooth_phase(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """``φ(y, x) = Σ_{i+j≤2} a_ij yⁱ xʲ`` on ``[-1, 1]²``, ``a_ij ~ N(0, PHASE_STD²)``, ``(H, W)``."""
    y, x = np.meshgrid(np.linspace(-1, 1, shape[0]), np.linspace(-1, 1, shape[1]), indexing="ij")
    a = rng.normal(0.0, PHASE_STD, 6)
    return a[0] + a[1] * y + a[2] * x + a[3] * y**2 + a[4] * x * y + a[5] * x**2


def encode_slice(
    magnitude: np.ndarray, phase: np.ndarray, coils: np.ndarray, support: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """``(k, S, target, s)``: maps ``S`` = coils normalised on ``support``, ``k = s F(S x)``,
    ``target = Σ_c conj(S_c) Fᴴ k_c``, ``x = magnitude · exp(iφ)``, ``s = 1 / max|Σ_c conj(S_c) S_c x|``."""
    import torch

    from robustkit.physics.coils import normalise_maps
    from robustkit.physics.fft import fft2c, ifft2c

    maps = normalise_maps(coils, support)
    s = torch.from_numpy(maps)
    x = torch.from_numpy(magnitude * np.exp(1j * phase))
    k = fft2c(s * x)
    target = (s.conj() * ifft2c(k)).sum(dim=0)
    scale = 1.0 / float(target.abs().max())
    return (k * scale).numpy(), maps, (target * scale).numpy(), scale


def _samples(volume: np.ndarray, resolution: int, seed: int, n_coils: int, progress: bool,
             plane: str = "axial") -> Iterator[Sample]:
    from scipy import ndimage
    from tqdm import tqdm

    from robustkit.physics.coils import birdcage_maps

    shape = padded_shape(resolution, plane)
    coils = birdcage_maps((n_coils, *shape), COIL_RADIUS, LOOP_RADIUS)
    z0, z1 = kept_slices(volume, plane)
    ranges = split_ranges(z0, z1, resolution)
    level = BRAIN_LEVEL * volume.max()
    margin = max(1, round(SUPPORT_MARGIN_MM / resolution))
    slices = [z for z in range(z0, z1) if _split_of(z, ranges) is not None]
    show = progress and sys.stderr.isatty()
    for z in tqdm(slices, desc=f"built-in MNI152 {plane} slices", unit="slice", disable=not show, file=sys.stderr):
        magnitude = _pad(plane_slice(volume, z, plane), shape)
        support = ndimage.binary_fill_holes(ndimage.binary_dilation(magnitude > level, iterations=margin))
        phase = smooth_phase(shape, np.random.default_rng([seed, z]))
        k, maps, target, scale = encode_slice(magnitude, phase, coils, support)
        meta = {
            "source": "builtin-mni152",
            "file": f"mni152-{resolution}mm",
            "slice": z,
            "plane": plane,
            "scale": scale,
            "seed": seed,
            "split": _split_of(z, ranges),
        }
        yield Sample(
            kspace=k.astype(np.complex64), maps=maps.astype(np.complex64), target=target.astype(np.complex64), meta=meta
        )


def provenance(volume: np.ndarray, resolution: int, seed: int, n_coils: int, plane: str = "axial") -> dict[str, Any]:
    import nilearn

    z0, z1 = kept_slices(volume, plane)
    return {
        "source": "builtin-mni152",
        "builtin_version": BUILTIN_VERSION,
        "template": TEMPLATE,
        "nilearn": nilearn.__version__,
        "resolution_mm": resolution,
        "plane": plane,
        "template_shape": list(volume.shape),
        "seed": seed,
        "coils": n_coils,
        "coil_geometry": {
            "model": "ring of circular loops, Biot-Savart, S = Bx - i By",
            "ring_radius": COIL_RADIUS,
            "ring_radius_unit": "half field of view per axis (ellipse)",
            "loop_radius": LOOP_RADIUS,
            "loop_radius_unit": "half image width W/2",
            "normalisation": f"sum_c |S_c|^2 = 1 on brain support dilated {SUPPORT_MARGIN_MM:g} mm, 0 outside",
        },
        "phase": "quadratic polynomial on [-1,1]^2, coefficients N(0, (pi/3)^2), rng([seed, slice])",
        "padding": {"shape": list(padded_shape(resolution, plane)), "axes": _AXES_TEXT[plane]},
        "slice_threshold": f"brain area (> {BRAIN_LEVEL:g} max) >= {MIN_AREA:g} of the largest {plane} area",
        "kept_slices": [z0, z1],
        "split_ranges": split_ranges(z0, z1, resolution),
        "scale": "k and target multiplied by meta['scale'] so that max|target| = 1",
        "licence": LICENCE,
    }


_AXES_TEXT = {
    "axial": "H anterior-posterior (anterior first), W left-right",
    "coronal": "H superior-inferior (superior first), W left-right",
    "sagittal": "H superior-inferior (superior first), W posterior-anterior",
}


def build_builtin(
    path: str | os.PathLike | None = None,
    resolution: int = 2,
    seed: int = 0,
    n_coils: int = 12,
    overwrite: bool = False,
    progress: bool = True,
    plane: str = "axial",
) -> Path:
    """Build the built-in dataset of ``plane`` at ``path`` (default :func:`builtin_path`) and return the path.

    Deterministic: the same arguments give the same bytes. Refuses to overwrite an existing file
    unless ``overwrite``.
    """
    from robustkit.data.prepared import write_prepared

    _check(resolution, n_coils, plane)
    path = Path(path) if path is not None else builtin_path(resolution, seed, n_coils, plane)
    if path.exists() and not overwrite:
        raise RobustkitError(f"{path} already exists; choose another output path or pass --overwrite")
    volume = load_template(resolution)
    samples = _samples(volume, resolution, seed, n_coils, progress, plane)
    return write_prepared(path, samples, provenance(volume, resolution, seed, n_coils, plane), overwrite=overwrite)


def ensure_builtin(resolution: int = 2, seed: int = 0, n_coils: int = 12, progress: bool = True,
                   plane: str = "axial") -> Path:
    """The cached built-in dataset of ``plane``, built on first use."""
    _check(resolution, n_coils, plane)
    path = builtin_path(resolution, seed, n_coils, plane)
    if path.exists():
        return path
    return build_builtin(path, resolution, seed, n_coils, overwrite=False, progress=progress, plane=plane)
