"""BART ``.cfl``/``.hdr`` pairs (github.com/mrirecon/bart).

``name.hdr`` is text, ``# Dimensions`` then the sizes of up to 16 dimensions; ``name.cfl`` holds
complex64 values in column-major (Fortran) order. BART's dimension order is READ, PHS1, PHS2,
COIL, MAPS, TE, COEFF, COEFF2, ITER, CSHIFT, TIME, TIME2, LEVEL, SLICE, AVG, BATCH.

Which dimensions hold the image (``H``, ``W``), the coils and the slices (:class:`Axes`): by default
``H = READ``, ``W = PHS1``, ``C = COIL`` and slices from ``SLICE`` (dimension 13), or, when READ is 1
and PHS1 and PHS2 are not (a 2-D slice stored in PHS1 × PHS2, dims ``[1, H, W, C]``), ``H = PHS1``,
``W = PHS2``. ``--bart-axes H,W,COIL[,SLICE]`` (names or numbers, e.g. ``PHS1,PHS2,COIL`` or
``0,1,3,13``) says it when the guess is wrong. Every other dimension must be 1 (3-D k-space must
first be inverse-transformed along its third axis, e.g. ``bart fft -u -i 4``). BART's FFT is
centred, like robustkit's F up to a global factor, which the per-slice scaling removes.

Maps (``--maps``, e.g. from ``bart ecalib``): the same image and coil dimensions, plus MAPS (the
first set is used when there are several), one set for all slices or one per slice. Without maps,
ESPIRiT. K-space with locations that are exactly zero in every coil is undersampled
(``bart pattern``): its mask is that pattern and the target is None (``--ignore-mask`` treats it
as fully sampled).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterator, NamedTuple

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
NAMES = ("READ", "PHS1", "PHS2", "COIL", "MAPS", "TE", "COEFF", "COEFF2", "ITER", "CSHIFT", "TIME", "TIME2",
         "LEVEL", "SLICE", "AVG", "BATCH")


class Axes(NamedTuple):
    """The BART dimensions read as image rows ``h``, image columns ``w``, coils and slices."""

    h: int = READ
    w: int = PHS1
    coil: int = COIL
    slice: int = SLICE

    def text(self) -> str:
        return ",".join(NAMES[d] for d in self)


def parse_axes(text: str) -> Axes:
    """``"PHS1,PHS2,COIL"`` or ``"1,2,3,13"`` → :class:`Axes` (H, W, COIL[, SLICE]; names or numbers)."""
    parts = [p.strip().upper() for p in text.split(",")]
    try:
        dims = [int(p) if p.isdigit() else NAMES.index(p) for p in parts]
    except ValueError:
        dims = []
    if len(dims) not in (3, 4) or len(set(dims)) != len(dims) or not all(0 <= d < N_DIMS for d in dims):
        raise RobustkitError(
            f"cannot read --bart-axes {text!r}; give the dimensions of H, W and the coils (and optionally the slices), "
            f"as BART names or numbers 0-15, e.g. --bart-axes PHS1,PHS2,COIL or 0,1,3,13"
        )
    return Axes(*dims)


def guess_axes(dims: list[int]) -> Axes:
    """READ × PHS1 (the default), or PHS1 × PHS2 when READ is 1 and both PHS1 and PHS2 are not."""
    if dims[READ] == 1 and dims[PHS1] > 1 and dims[PHS2] > 1:
        return Axes(PHS1, PHS2)
    return Axes()


def _describe(dims: list[int]) -> str:
    """``[1, 230, 180, 8] (PHS1 230, PHS2 180, COIL 8)``: the dims and the named ones above 1."""
    named = ", ".join(f"{NAMES[i]} {d}" for i, d in enumerate(dims) if d > 1)
    return f"{_short(dims)} ({named or 'all 1'})"


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


def _check_dims(dims: list[int], axes: Axes, what: str, path: Path, extra: tuple[int, ...] = ()) -> None:
    """Every dimension outside ``axes`` (and ``extra``) must be 1; the error names the dims found."""
    others = [i for i, d in enumerate(dims) if d > 1 and i not in (*axes, *extra)]
    if others:
        hint = (" (3-D k-space: inverse-FFT along the third axis first, e.g. `bart fft -u -i 4`)"
                if dims[READ] > 1 and dims[PHS1] > 1 and dims[PHS2] > 1 else "")
        raise RobustkitError(
            f"{path.name}: {what} has dims {_describe(dims)}; reading H, W, coils, slices from {axes.text()} leaves "
            f"{', '.join(f'{NAMES[i]} {dims[i]}' for i in others)} unread{hint}; name the axes with --bart-axes H,W,COIL[,SLICE]"
        )


def _as_slices(array: np.ndarray, axes: Axes) -> np.ndarray:
    """16-D BART array → a ``(slices, C, H, W)`` view (nothing read yet); other dims must be 1
    (``MAPS`` too: the first map set is taken)."""
    index = tuple(slice(None) if i in axes else 0 for i in range(N_DIMS))
    kept = [i for i in range(N_DIMS) if i in axes]  # the order the kept dims have after indexing
    return array[index].transpose([kept.index(d) for d in (axes.slice, axes.coil, axes.h, axes.w)])


def _load_maps(path: Path, axes: Axes, kshape: tuple[int, int, int, int]) -> tuple[np.ndarray, int]:
    """Maps ``(slices or 1, C, H, W)`` from a BART file, checked against k-space ``(slices, C, H, W)``."""
    dims = read_dims(path)
    _check_dims(dims, axes, "the coil maps", path, extra=(MAPS,) if MAPS not in axes else ())
    maps = read_cfl(path)
    sets = dims[MAPS] if MAPS not in axes else 1
    maps = _as_slices(maps, axes)
    n, c, h, w = kshape
    if maps.shape[1:] != (c, h, w) or maps.shape[0] not in (1, n):
        raise RobustkitError(
            f"{path.name}: coil maps of dims {_describe(dims)}, (slices, C, H, W) = {maps.shape} read with axes "
            f"{axes.text()}, do not match k-space {kshape}; supply maps with the same image and coil sizes "
            "(and 1 or all slices)"
        )
    return maps, sets


def iter_samples(path: Path, options: LoadOptions) -> Iterator[Sample]:
    """One :class:`Sample` per selected slice of a BART k-space array."""
    name = base(path).name
    dims = read_dims(path)
    axes = parse_axes(options.bart_axes) if options.bart_axes else guess_axes(dims)
    _check_dims(dims, axes, "the k-space", path)
    kspace = _as_slices(read_cfl(path), axes)
    maps_all, sets = (None, 0) if options.maps is None else _load_maps(options.maps, axes, kspace.shape)
    split = options.split or split_from_path(path)
    for i in progress_bar(select(kspace.shape[0], options.slices, name), name, options.progress):
        where = f"{name} slice {i}"
        k = np.array(kspace[i], dtype=np.complex128)
        check_finite(k, where)
        mask = None if options.ignore_mask else sampling_pattern(k, 1.0)
        meta: dict[str, Any] = {"source": "bart", "file": name, "slice": i, "split": split, "axes": axes.text()}
        if maps_all is None:
            maps = estimate_maps(k, mask, options, where)
            meta["maps"] = "espirit"
        else:
            maps = normalise_file_maps(np.array(maps_all[i if maps_all.shape[0] > 1 else 0]), k.shape, where)
            first = f", first of {sets} sets" if sets > 1 else ""
            meta["maps"] = f"file {base(options.maps).name} (normalised{first})"
        yield make_sample(k, maps, meta, mask=mask, reference=mask is None)


def inspect(path: Path) -> dict[str, Any]:
    """Dimensions and what would be loaded from a BART k-space array (with the guessed axes)."""
    dims = read_dims(path)
    axes = guess_axes(dims)
    _check_dims(dims, axes, "the k-space", path)
    k = _as_slices(read_cfl(path), axes)
    fraction = float((np.abs(np.array(k[k.shape[0] // 2])) > 0).any(axis=0).mean())
    return {
        "dims": _describe(dims),
        "axes (H, W, coils, slices)": f"{axes.text()} (other axes: --bart-axes)",
        "slices": dims[axes.slice],
        "coils": dims[axes.coil],
        "matrix": [dims[axes.h], dims[axes.w]],
        "sampled fraction (middle slice)": round(fraction, 3),
        "mask": "none (fully sampled)" if fraction == 1 else "non-zero pattern (undersampled)",
        "maps": "ESPIRiT, estimated per slice (or --maps)",
        "split": split_from_path(path) or "unknown (pass --split)",
    }
