"""Calgary-Campinas multi-channel brain HDF5 files (Souza et al.; the MC-MRI-Rec challenge).

Layout: ``kspace`` float ``(slices, H, W, 2C)``, real and imaginary parts interleaved along the
last axis: ``k = kspace[..., 0::2] + 1j · kspace[..., 1::2]`` (C = 12 for the 12-channel coil).
Each slice is a 2-D (ky, kz) k-space (the readout was inverse-transformed); the last ~15 % of kz
are zero (partial Fourier): that is part of the reference, not undersampling.

Grid: the public tooling (the challenge code, DIRECT) uses an uncentred FFT, so the layout is not
trusted. The loader (1) moves the k-space peak to the centre (``fftshift`` when the energy sits at
the corners) and (2) if the image then sits at the corners of the field of view, shifts it by
half (``ifftshift`` of the image: ``k[f] ← k[f] · e^{+2πi f ⌊N/2⌋/N}``, exact and zero-preserving).
Both steps are recorded in ``meta["layout"]``; after them ``Fᴴ k_c`` (robustkit's centred F) is
coil image c, centred.

Undersampled files (the challenge's test set, zeros where unsampled) are recognised when fewer
than half the k-space locations carry data in any coil: the mask is that non-zero pattern and
the target is None. Maps: ESPIRiT from the (fully sampled) centre.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import numpy as np

from robustkit.data.loaders import (
    LoadOptions,
    check_extent,
    check_finite,
    dataset,
    estimate_maps,
    is_hdf5,
    make_sample,
    open_hdf5,
    progress_bar,
    read_dataset,
    sampling_pattern,
    select,
    split_from_path,
)
from robustkit.data.sample import Sample
from robustkit.errors import RobustkitError

NAME = "Calgary-Campinas"
#: below this fraction of sampled k-space locations a slice counts as undersampled.
MIN_FULL_FRACTION = 0.5


def detect(path: Path) -> bool:
    """An HDF5 file whose ``kspace`` is real with an even last axis (interleaved channels) and
    nothing of a fastMRI file (a fastMRI file with real k-space is not Calgary-Campinas data)."""
    if not is_hdf5(path):
        return False
    import h5py

    from robustkit.data.loaders.fastmri import markers

    try:
        with h5py.File(path, "r") as f:
            ds = f.get("kspace")
            return (isinstance(ds, h5py.Dataset) and ds.dtype.kind == "f" and ds.ndim == 4 and ds.shape[-1] % 2 == 0
                    and not markers(f))
    except OSError:
        return False


def _kspace_info(f, name: str) -> tuple[int, int, int, int]:
    """``(slices, coils, H, W)`` after checking rank, dtype and the channel axis."""
    ds = dataset(f, "kspace", NAME)
    if ds.ndim != 4 or ds.dtype.kind != "f" or ds.shape[-1] % 2 or ds.shape[-1] == 0:
        raise RobustkitError(
            f"{name}: Calgary-Campinas k-space must be real of shape (slices, H, W, 2 x coils), got "
            f"{ds.shape} {ds.dtype}; for complex fastMRI files use --format fastmri"
        )
    n, h, w, channels = ds.shape
    check_extent(name, n, channels // 2, h, w)
    return n, channels // 2, h, w


def to_complex(raw: np.ndarray) -> np.ndarray:
    """``(H, W, 2C)`` interleaved real/imag → complex ``(C, H, W)``."""
    return np.ascontiguousarray((raw[..., 0::2] + 1j * raw[..., 1::2]).transpose(2, 0, 1))


def _box_energy(energy: np.ndarray) -> float:
    """Energy inside the central box of half the size (a quarter of the area)."""
    h, w = energy.shape
    return float(energy[h // 4 : h // 4 + h // 2, w // 4 : w // 4 + w // 2].sum())


def centre(kspace: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """``kspace`` ``(C, H, W)`` on robustkit's centred grid with a centred image, and the steps taken."""
    import torch

    from robustkit.physics.fft import ifft2c

    steps: list[str] = []
    energy = (np.abs(kspace) ** 2).sum(axis=0)
    if _box_energy(energy) < _box_energy(np.fft.fftshift(energy)):
        kspace = np.fft.fftshift(kspace, axes=(-2, -1))
        steps.append("fftshift k-space (DC was at the corners)")
    image = (ifft2c(torch.from_numpy(kspace.astype(np.complex128))).abs() ** 2).sum(dim=0).numpy()
    if _box_energy(image) < _box_energy(np.fft.fftshift(image)):
        h, w = kspace.shape[-2:]
        fy = (np.arange(h) - h // 2) * (h // 2) / h
        fx = (np.arange(w) - w // 2) * (w // 2) / w
        kspace = kspace * np.exp(2j * np.pi * (fy[:, None] + fx[None, :]))
        steps.append("half-FOV image shift (the image was at the corners)")
    return kspace, steps


def iter_samples(path: Path, options: LoadOptions) -> Iterator[Sample]:
    """One :class:`Sample` per selected slice of a Calgary-Campinas file."""
    name = path.name
    split = options.split or split_from_path(path)
    with open_hdf5(path, NAME) as f:
        n, _, _, _ = _kspace_info(f, name)
        for i in progress_bar(select(n, options.slices, name), f"{name} (ESPIRiT)", options.progress):
            where = f"{name} slice {i}"
            k = to_complex(read_dataset(f, "kspace", i, NAME).astype(np.float64))
            check_finite(k, where)
            k, steps = centre(k)
            mask = None if options.ignore_mask else sampling_pattern(k, MIN_FULL_FRACTION)
            maps = estimate_maps(k, mask, options, where)
            meta = {
                "source": "calgary-campinas",
                "file": name,
                "slice": i,
                "split": split,
                "maps": "espirit",
                "layout": "; ".join(steps) or "centred as stored",
            }
            yield make_sample(k, maps, meta, mask=mask, reference=mask is None)


def inspect(path: Path) -> dict[str, Any]:
    """Slices, coils, matrix and split of a Calgary-Campinas file (reads the middle slice once)."""
    name = path.name
    with open_hdf5(path, NAME) as f:
        n, coils, h, w = _kspace_info(f, name)
        k = to_complex(read_dataset(f, "kspace", n // 2, NAME).astype(np.float64))
    pattern = (np.abs(k) > 0).any(axis=0)
    fraction = float(pattern.mean())
    undersampled = fraction < MIN_FULL_FRACTION
    return {
        "slices": n,
        "coils": coils,
        "matrix": [h, w],
        "sampled fraction (middle slice)": round(fraction, 3),
        "mask": "non-zero pattern (undersampled)"
        if undersampled
        else "none (fully sampled; partial Fourier zeros kept)",
        "target": "none (undersampled)" if undersampled else "coil combination of the fully sampled k-space",
        "maps": "ESPIRiT, estimated per slice",
        "split": split_from_path(path) or "unknown (pass --split)",
    }
