"""BART ``.cfl``/``.hdr`` pairs (github.com/mrirecon/bart).

``name.hdr`` is text, ``# Dimensions`` then the sizes of up to 16 dimensions; ``name.cfl`` holds
complex64 values in column-major (Fortran) order. BART's dimension order is READ, PHS1, PHS2,
COIL, MAPS, TE, COEFF, COEFF2, ITER, CSHIFT, TIME, TIME2, LEVEL, SLICE, AVG, BATCH. robustkit reads
``H = READ``, ``W = PHS1``, ``C = COIL`` and slices from ``SLICE`` (dimension 13); every other
dimension must be 1 (3-D k-space, PHS2 > 1, must first be inverse-transformed along PHS2:
``bart fft -u -i 4``). BART's FFT is centred, like robustkit's F up to a global factor, which
the per-slice scaling removes.

Maps (``--maps``, e.g. from ``bart ecalib``): ``READ, PHS1, 1, COIL, MAPS[, …, SLICE]``, one set
for all slices or one per slice; with MAPS > 1 the first set is used. Without maps, ESPIRiT.
K-space with locations that are exactly zero in every coil is undersampled (``bart pattern``):
its mask is that pattern and the target is None (``--ignore-mask`` treats it as fully sampled).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from robustkit.data.loaders import (
    LoadOptions,
    check_finite,
    estimate_maps,
    make_sample,
    normalise_file_maps,
    progress_bar,
    sampling_pattern,
    select,
    split_from_path,
)
from robustkit.data.sample import Sample
from robustkit.errors import RobustkitError

READ, PHS1, PHS2, COIL, MAPS, SLICE = 0, 1, 2, 3, 4, 13
N_DIMS = 16


def base(path: Path) -> Path:
    """``x.cfl`` / ``x.hdr`` / ``x`` → ``x``."""
    return path.with_suffix("") if path.suffix in (".cfl", ".hdr") else path


def _file(path: Path, suffix: str) -> Path:
    stem = base(path)
    return stem.with_name(stem.name + suffix)


def _short(dims: list[int]) -> list[int]:
    """``dims`` without trailing 1s (at least READ and PHS1)."""
    last = max([1] + [i for i, d in enumerate(dims) if d > 1])
    return dims[: last + 1]


def detect(path: Path) -> bool:
    """A ``.cfl``/``.hdr`` path, or a base name with a ``.hdr`` next to it."""
    return path.suffix in (".cfl", ".hdr") or (not path.exists() and _file(path, ".hdr").exists())


def read_dims(path: Path) -> list[int]:
    """The 16 dimensions from ``base.hdr`` (missing trailing ones are 1)."""
    hdr = _file(path, ".hdr")
    if not hdr.is_file():
        raise RobustkitError(f"{hdr} does not exist; a BART array needs both NAME.hdr and NAME.cfl")
    try:
        lines = hdr.read_text(errors="replace").splitlines()
        start = next(i for i, line in enumerate(lines) if line.strip().startswith("# Dimensions"))
        dims = [int(v) for v in lines[start + 1].split()]
    except (StopIteration, IndexError, ValueError):
        raise RobustkitError(
            f"{hdr} is not a BART header ('# Dimensions' then integer sizes); write it with BART or cfl.writecfl"
        ) from None
    if not dims or len(dims) > N_DIMS or min(dims) < 1:
        raise RobustkitError(f"{hdr}: dimensions {dims} are not 1 to 16 positive sizes; fix the header")
    return dims + [1] * (N_DIMS - len(dims))


def read_cfl(path: Path) -> np.ndarray:
    """The complex64 array of a ``.cfl``/``.hdr`` pair, shape = its 16 dims (Fortran order, memory-mapped)."""
    dims = read_dims(path)
    cfl = _file(path, ".cfl")
    if not cfl.is_file():
        raise RobustkitError(f"{cfl} does not exist; a BART array needs both NAME.hdr and NAME.cfl")
    expected = math.prod(dims) * 8  # Python ints: huge header dims cannot overflow
    size = cfl.stat().st_size
    if size != expected:
        raise RobustkitError(
            f"{cfl} has {size} bytes but its header (dims {_short(dims)}) needs {expected}; the file is "
            "truncated or the header is wrong: write it again"
        )
    return np.memmap(cfl, dtype=np.complex64, mode="r", shape=tuple(dims), order="F")


def _check_dims(dims: list[int], allowed: set[int], what: str, path: Path) -> None:
    extra = [i for i, d in enumerate(dims) if d > 1 and i not in allowed]
    if extra:
        hint = " (3-D k-space: inverse-FFT along PHS2 first, `bart fft -u -i 4`)" if PHS2 in extra else ""
        raise RobustkitError(
            f"{path.name}: {what} has size > 1 in BART dimension(s) {extra} (dims {_short(dims)}); robustkit reads "
            f"READ, PHS1, COIL and SLICE only{hint}"
        )


def _as_slices(array: np.ndarray) -> np.ndarray:
    """16-D BART array (READ, PHS1, 1, COIL, …, SLICE) → a ``(slices, C, H, W)`` view (nothing read yet)."""
    return array[:, :, 0, :, 0, 0, 0, 0, 0, 0, 0, 0, 0, :, 0, 0].transpose(3, 2, 0, 1)


def _load_maps(path: Path, kshape: tuple[int, int, int, int]) -> tuple[np.ndarray, int]:
    """Maps ``(slices or 1, C, H, W)`` from a BART file, checked against k-space ``(slices, C, H, W)``."""
    dims = read_dims(path)
    _check_dims(dims, {READ, PHS1, COIL, MAPS, SLICE}, "the coil maps", path)
    maps = read_cfl(path)
    sets = dims[MAPS]
    maps = _as_slices(maps)
    n, c, h, w = kshape
    if maps.shape[1:] != (c, h, w) or maps.shape[0] not in (1, n):
        raise RobustkitError(
            f"{path.name}: coil maps of shape (slices, C, H, W) = {maps.shape} do not match k-space {kshape}; "
            "supply maps with the same READ, PHS1 and COIL sizes (and 1 or all slices)"
        )
    return maps, sets


def iter_samples(path: Path, options: LoadOptions) -> Iterator[Sample]:
    """One :class:`Sample` per selected slice of a BART k-space array."""
    name = base(path).name
    dims = read_dims(path)
    _check_dims(dims, {READ, PHS1, COIL, SLICE}, "the k-space", path)
    kspace = _as_slices(read_cfl(path))
    maps_all, sets = (None, 0) if options.maps is None else _load_maps(options.maps, kspace.shape)
    split = options.split or split_from_path(path)
    for i in progress_bar(select(kspace.shape[0], options.slices, name), name, options.progress):
        where = f"{name} slice {i}"
        k = np.array(kspace[i], dtype=np.complex128)
        check_finite(k, where)
        mask = None if options.ignore_mask else sampling_pattern(k, 1.0)
        meta: dict[str, Any] = {"source": "bart", "file": name, "slice": i, "split": split}
        if maps_all is None:
            maps = estimate_maps(k, mask, options, where)
            meta["maps"] = "espirit"
        else:
            maps = normalise_file_maps(np.array(maps_all[i if maps_all.shape[0] > 1 else 0]), k.shape, where)
            first = f", first of {sets} sets" if sets > 1 else ""
            meta["maps"] = f"file {base(options.maps).name} (normalised{first})"
        yield make_sample(k, maps, meta, mask=mask, reference=mask is None)


def inspect(path: Path) -> dict[str, Any]:
    """Dimensions and what would be loaded from a BART k-space array."""
    dims = read_dims(path)
    _check_dims(dims, {READ, PHS1, COIL, SLICE}, "the k-space", path)
    k = _as_slices(read_cfl(path))
    fraction = float((np.abs(np.array(k[k.shape[0] // 2])) > 0).any(axis=0).mean())
    return {
        "dims": " ".join(str(d) for d in _short(dims)),
        "slices": dims[SLICE],
        "coils": dims[COIL],
        "matrix": [dims[READ], dims[PHS1]],
        "sampled fraction (middle slice)": round(fraction, 3),
        "mask": "none (fully sampled)" if fraction == 1 else "non-zero pattern (undersampled)",
        "maps": "ESPIRiT, estimated per slice (or --maps)",
        "split": split_from_path(path) or "unknown (pass --split)",
    }
