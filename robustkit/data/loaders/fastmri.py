"""fastMRI HDF5 files (Zbontar et al., arXiv 1811.08839), multi-coil (and single-coil).

Layout: ``kspace`` complex64 ``(slices, coils, H, W)`` (single-coil: ``(slices, H, W)``), on the
centred orthonormal grid of fastMRI's ``ifft2c`` — the same as robustkit's F, so it is used as is
(knee readouts keep their 2× oversampling, H = 640). Optional: ``mask`` (test and challenge files)
1-D over W with the k-space zero at unsampled columns; ``reconstruction_rss`` (cropped RSS images,
not used: the target is recomputed); ``ismrmrd_header``; attrs ``acquisition``, ``max``, ``norm``.

Maps: ESPIRiT from the k-space centre (24 × 24, or the fully sampled centre lines of ``mask``);
single-coil files get ``S = 1``. Split: from the path (``multicoil_train`` → train, …) or --split.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import numpy as np

from robustkit.data.loaders import (
    LoadOptions,
    as_complex,
    check_finite,
    check_extent,
    check_mask,
    dataset,
    estimate_maps,
    is_hdf5,
    make_sample,
    open_hdf5,
    progress_bar,
    read_dataset,
    select,
    split_from_path,
)
from robustkit.data.sample import Sample
from robustkit.errors import RobustkitError

NAME = "fastMRI"


#: what only fastMRI files hold (datasets and attributes besides ``kspace``).
MARKERS = ("ismrmrd_header", "reconstruction_rss", "reconstruction_esc", "acquisition", "patient_id", "norm", "max")


def markers(f) -> list[str]:
    """The fastMRI-only datasets and attributes of an open HDF5 file."""
    return [m for m in MARKERS if m in f or m in f.attrs]


def real_kspace_problem(path: Path) -> str | None:
    """Why ``path`` is a fastMRI file that cannot be read (its ``kspace`` is real), else None."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            ds, found = f.get("kspace"), markers(f)
            if not found or not isinstance(ds, h5py.Dataset) or ds.dtype.kind == "c":
                return None
            return (
                f"{path} looks like a fastMRI file ({', '.join(found)}) but its 'kspace' is real ({ds.dtype}, shape "
                f"{ds.shape}); fastMRI k-space must be complex: store it as complex64, or pass --format calgary "
                "if it is Calgary-Campinas data"
            )
    except OSError:
        return None


def detect(path: Path) -> bool:
    """An HDF5 file whose ``kspace`` dataset is complex."""
    if not is_hdf5(path):
        return False
    import h5py

    try:
        with h5py.File(path, "r") as f:
            ds = f.get("kspace")
            return isinstance(ds, h5py.Dataset) and ds.dtype.kind == "c" and "trnOrg" not in f
    except OSError:
        return False


def _kspace_info(f, name: str) -> tuple[Any, bool, int, int, int, int]:
    """``(dataset, single_coil, slices, coils, H, W)`` after checking rank and dtype."""
    ds = dataset(f, "kspace", NAME)
    if ds.ndim not in (3, 4):
        raise RobustkitError(
            f"{name}: fastMRI k-space must have shape (slices, coils, H, W), got {ds.shape}; "
            "is it another format? check --format"
        )
    if ds.dtype.kind != "c" and not ds.dtype.names:
        raise RobustkitError(
            f"{name}: fastMRI k-space must be complex, got {ds.dtype}; for Calgary-Campinas files "
            "(real/imaginary channels) use --format calgary"
        )
    single = ds.ndim == 3
    n, coils = ds.shape[0], 1 if single else ds.shape[1]
    check_extent(name, n, coils, ds.shape[-2], ds.shape[-1])
    return ds, single, n, coils, ds.shape[-2], ds.shape[-1]


def _attr(f, key: str) -> Any:
    value = f.attrs.get(key)
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return value.item() if isinstance(value, np.generic) else value


def iter_samples(path: Path, options: LoadOptions) -> Iterator[Sample]:
    """One :class:`Sample` per selected slice of a fastMRI file."""
    name = path.name
    with open_hdf5(path, NAME) as f:
        _, single, n, _, h, w = _kspace_info(f, name)
        mask = check_mask(read_dataset(f, "mask", fmt=NAME), (h, w), name) if "mask" in f else None
        if mask is not None and options.ignore_mask:
            raise RobustkitError(
                f"{name} is undersampled (it carries an acquisition mask), so it has no fully sampled "
                "reference; drop --ignore-mask"
            )
        split = options.split or split_from_path(path)
        acquisition = _attr(f, "acquisition")
        for i in progress_bar(select(n, options.slices, name), f"{name} (ESPIRiT)", options.progress):
            where = f"{name} slice {i}"
            k = as_complex(read_dataset(f, "kspace", i, NAME), "k-space", where)
            k = k[None] if single else k
            check_finite(k, where)
            maps = estimate_maps(k, mask, options, where)
            meta = {
                "source": "fastmri",
                "file": name,
                "slice": i,
                "split": split,
                "maps": "ones (single coil)" if single else "espirit",
            }
            if acquisition is not None:
                meta["acquisition"] = str(acquisition)
            yield make_sample(k, maps, meta, mask=mask, reference=mask is None)


def inspect(path: Path) -> dict[str, Any]:
    """Slices, coils, matrix, mask and split of a fastMRI file, without reading the k-space."""
    name = path.name
    with open_hdf5(path, NAME) as f:
        _, single, n, coils, h, w = _kspace_info(f, name)
        info: dict[str, Any] = {"slices": n, "coils": coils, "matrix": [h, w]}
        if "mask" in f:
            mask = check_mask(read_dataset(f, "mask", fmt=NAME), (h, w), name)
            info["mask"] = f"acquisition mask, {int(mask[0].sum())} of {w} lines (R = {w / mask[0].sum():.2f})"
            info["target"] = "none (undersampled)"
        else:
            info["mask"] = "none (fully sampled; masks drawn at training time)"
            info["target"] = "coil combination of the fully sampled k-space"
        info["maps"] = "ones (single coil)" if single else "ESPIRiT, estimated per slice"
        info["split"] = split_from_path(path) or "unknown (pass --split)"
        extra = sorted(set(f.keys()) - {"kspace", "mask"})
        if extra:
            info["other datasets"] = ", ".join(extra)
        if _attr(f, "acquisition") is not None:
            info["acquisition"] = str(_attr(f, "acquisition"))
    return info
