"""Real-format loaders: fastMRI, Calgary-Campinas, MoDL and BART files → canonical :class:`Sample` s.

``load(path)`` detects the format (by extension and content), reads every selected slice and
returns samples on robustkit's conventions (docs/maths.md §1):

* k-space ``k`` complex64 ``(C, H, W)`` on the centred orthonormal grid, ``Fᴴ k_c`` is coil
  image ``c`` (files in an uncentred layout are converted, see each format's module);
* coil maps ``S`` from the file, normalised to ``Σ_c |S_c|² = 1`` where non-zero, or estimated
  by ESPIRiT (:mod:`robustkit.physics.espirit`) from the fully sampled centre;
* target ``Σ_c conj(S_c) Fᴴ k_c`` when the k-space is fully sampled, else None; the file's
  acquisition mask, when it has one, as ``Sample.mask`` (k-space zero where it is 0);
* per slice, k-space and target multiplied by ``s = 1 / max|x_ref|`` (``meta["scale"]``), with
  ``x_ref`` the target, or the zero-filled combination ``Σ_c conj(S_c) Fᴴ(M ⊙ k_c)`` when there is
  no target (``meta["scale_reference"]`` says which).

``FORMATS`` maps each name to its :class:`Format` (the format modules are imported lazily).
"""

from __future__ import annotations

import importlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from robustkit.data.sample import Sample
from robustkit.errors import RobustkitError

_SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class LoadOptions:
    """What to load and how, shared by every format.

    Attributes:
        slices: which slices (``slice`` over the file's slice axis; per split for MoDL files).
        maps: a BART ``.cfl`` of coil maps (BART only; other formats carry or estimate maps).
        split: ``train``/``val``/``test`` for every sample; None infers it (MoDL prefix, path names).
        ignore_mask: treat the k-space as fully sampled and drop the file's mask (MoDL: keep the
            fully sampled k-space so robustkit draws its own masks).
        calib, kernel, crop: ESPIRiT calibration size, kernel width and eigenvalue crop.
        bart_axes: BART only, the dimensions holding H, W, the coils (and the slices), e.g.
            ``"PHS1,PHS2,COIL"``; None guesses (:func:`robustkit.data.loaders.bart.guess_axes`).
        progress: show a tqdm bar over slices (only on a terminal).
    """

    slices: slice = field(default_factory=lambda: slice(None))
    maps: Path | None = None
    split: str | None = None
    ignore_mask: bool = False
    calib: int = 24
    kernel: int = 6
    crop: float = 0.95
    bart_axes: str | None = None
    progress: bool = False

    def espirit_settings(self) -> dict[str, Any]:
        return {"calib": self.calib, "kernel": self.kernel, "crop": self.crop, "thresh": 0.02}


@dataclass(frozen=True)
class Format:
    """One real format: how to recognise it, read it and describe it.

    Attributes:
        name: the ``--format`` value.
        description: one line for ``robustkit data info`` and errors.
        module: the module defining ``detect(path) -> bool``, ``iter_samples(path, options)`` and
            ``inspect(path) -> dict``; imported on first use.
    """

    name: str
    description: str
    module: str

    def _mod(self) -> Any:
        return importlib.import_module(self.module)

    def detect(self, path: Path) -> bool:
        return bool(self._mod().detect(path))

    def iter_samples(self, path: Path, options: LoadOptions) -> Iterator[Sample]:
        return self._mod().iter_samples(path, options)

    def inspect(self, path: Path) -> dict[str, Any]:
        return self._mod().inspect(path)


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format("fastmri", "fastMRI multi-coil HDF5 (kspace: slices x coils x H x W)", "robustkit.data.loaders.fastmri"),
        Format(
            "calgary",
            "Calgary-Campinas multi-channel HDF5 (kspace: slices x H x W x 2C, real/imag interleaved)",
            "robustkit.data.loaders.calgary",
        ),
        Format(
            "modl", "MoDL dataset.hdf5 (trnOrg/trnCsm/trnMask, tstOrg/tstCsm/tstMask)", "robustkit.data.loaders.modl"
        ),
        Format(
            "bart", "BART .cfl/.hdr pair (dims READ x PHS1 x PHS2 x COIL x MAPS ...)", "robustkit.data.loaders.bart"
        ),
    )
}


# ---------------------------------------------------------------------------------------------
# detection and the public entry points


def _check_exists(path: Path) -> None:
    if path.is_dir():
        raise RobustkitError(f"{path} is a folder; pass the raw files in it, e.g. {path / '*.h5'}")
    if path.exists():
        return
    if path.with_name(path.name + ".hdr").exists() or path.with_name(path.stem + ".hdr").exists():
        return  # a BART base name, or a .cfl whose .hdr exists
    raise RobustkitError(f"{path} does not exist; check the path")


def detect_format(path: str | os.PathLike) -> str:
    """The format name of ``path`` from its extension and content; raises if none matches."""
    path = Path(path)
    _check_exists(path)
    for fmt in FORMATS.values():
        if fmt.detect(path):
            return fmt.name
    if is_hdf5(path):
        if is_prepared(path):
            raise RobustkitError(
                f"{path} is already a robustkit prepared dataset; use it directly (see `robustkit data info`)"
            )
        keys = hdf5_keys(path)
        if keys is None:
            raise RobustkitError(f"{path} is a truncated or corrupt HDF5 file; download or write it again")
        from robustkit.data.loaders.fastmri import real_kspace_problem

        problem = real_kspace_problem(path)
        if problem:
            raise RobustkitError(problem)
        raise RobustkitError(
            f"{path} is HDF5 but matches no known format (datasets: {', '.join(keys) or 'none'}); "
            "expected fastMRI 'kspace', Calgary-Campinas 'kspace' or MoDL 'trnOrg'/'tstOrg', or pass --format"
        )
    raise RobustkitError(
        f"cannot tell the format of {path} (neither HDF5 nor a BART .cfl/.hdr pair); "
        f"pass --format {'|'.join(FORMATS)}"
    )


def resolve_format(path: str | os.PathLike, fmt: str | None) -> Format:
    """The :class:`Format` for ``fmt`` (``None`` or ``"auto"``: detected from ``path``)."""
    if fmt is None or fmt == "auto":
        return FORMATS[detect_format(path)]
    if fmt not in FORMATS:
        raise RobustkitError(f"unknown format {fmt!r}; choose one of auto, {', '.join(FORMATS)}")
    _check_exists(Path(path))
    return FORMATS[fmt]


def iter_samples(
    path: str | os.PathLike, fmt: str | None = None, options: LoadOptions | None = None
) -> Iterator[Sample]:
    """Samples of ``path`` one slice at a time (what ``robustkit data prepare`` streams to disk)."""
    options = options or LoadOptions()
    path = Path(path)
    chosen = resolve_format(path, fmt)
    if options.maps is not None and chosen.name != "bart":
        raise RobustkitError(f"--maps applies to BART files only, not {chosen.name}; drop --maps")
    if options.bart_axes is not None and chosen.name != "bart":
        raise RobustkitError(f"--bart-axes applies to BART files only, not {chosen.name}; drop --bart-axes")
    if options.split is not None and options.split not in _SPLITS:
        raise RobustkitError(f"unknown split {options.split!r}; choose one of {', '.join(_SPLITS)}")
    return chosen.iter_samples(path, options)


def load(
    path: str | os.PathLike,
    fmt: str | None = None,
    *,
    slices: slice | str | None = None,
    maps: str | os.PathLike | None = None,
    split: str | None = None,
    ignore_mask: bool = False,
    calib: int = 24,
    kernel: int = 6,
    crop: float = 0.95,
    bart_axes: str | None = None,
    progress: bool = False,
) -> list[Sample]:
    """All selected samples of ``path`` (format ``fmt``: ``auto``/None, ``fastmri``, ``calgary``,
    ``modl`` or ``bart``); see :class:`LoadOptions` for the keywords (``slices`` may be ``"a:b"``)."""
    options = LoadOptions(
        slices=parse_slices(slices) if isinstance(slices, str) or slices is None else slices,
        maps=Path(maps) if maps is not None else None,
        split=split,
        ignore_mask=ignore_mask,
        calib=calib,
        kernel=kernel,
        crop=crop,
        bart_axes=bart_axes,
        progress=progress,
    )
    return list(iter_samples(path, fmt, options))


def inspect(path: str | os.PathLike, fmt: str | None = None) -> dict[str, Any]:
    """What :func:`load` would read from ``path``, without reading the k-space: format, slices, coils, …"""
    chosen = resolve_format(path, fmt)
    return {"format": chosen.name, "description": chosen.description, **chosen.inspect(Path(path))}


def parse_slices(text: str | None) -> slice:
    """``"a:b"``, ``"a:"``, ``":b"``, ``"a:b:c"`` or a single index ``"a"`` → ``slice``; None → all."""
    if text is None or text.strip() in ("", ":"):
        return slice(None)
    if not re.fullmatch(r"\s*-?\d*\s*(:\s*-?\d*\s*){0,2}", text):
        raise RobustkitError(f"cannot read --slices {text!r}; use START:STOP (e.g. 10:30), START: or a single index")
    parts = [int(p) if p.strip() else None for p in text.split(":")]
    if len(parts) == 1:
        index = parts[0]
        return slice(index, None if index == -1 else index + 1)
    if len(parts) == 3 and parts[2] == 0:
        raise RobustkitError("--slices step must not be 0; use e.g. 0:40:2")
    return slice(*parts)


# ---------------------------------------------------------------------------------------------
# helpers shared by the format modules


def is_hdf5(path: Path) -> bool:
    """True if ``path`` is a file that starts like HDF5 (truncated files included)."""
    if not path.is_file():
        return False
    with open(path, "rb") as f:
        head = f.read(8)
    if head == b"\x89HDF\r\n\x1a\n":
        return True
    import h5py

    try:
        return bool(h5py.is_hdf5(path))
    except OSError:
        return False


def is_prepared(path: Path) -> bool:
    """True if ``path`` is a readable robustkit prepared file (``robustkit.data.prepared``)."""
    import h5py

    from robustkit.data.prepared import FORMAT

    if not is_hdf5(path):
        return False
    try:
        with h5py.File(path, "r") as f:
            return f.attrs.get("format") == FORMAT
    except OSError:
        return False


def hdf5_keys(path: Path) -> list[str] | None:
    """Top-level dataset names of an HDF5 file, or None when it cannot be opened (truncated, corrupt)."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return sorted(f.keys())
    except OSError:
        return None


def open_hdf5(path: Path, fmt: str):
    """``h5py.File(path, "r")`` with a one-line :class:`RobustkitError` for unreadable files."""
    import h5py

    if not path.is_file():
        raise RobustkitError(f"{path} does not exist or is not a file; check the path")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        reason = str(exc).splitlines()[0]
        raise RobustkitError(
            f"{path} is not a readable {fmt} HDF5 file ({reason}); it may be truncated or corrupt: "
            "download or write it again"
        ) from None


def check_extent(name: str, slices: int, coils: int, h: int, w: int) -> None:
    """Refuse a k-space array with an empty axis, naming it (before any slice is read)."""
    for what, size in (("slices", slices), ("coils", coils), ("rows (H)", h), ("columns (W)", w)):
        if size < 1:
            raise RobustkitError(f"{name}: the k-space has 0 {what} (slices {slices}, coils {coils}, {h}x{w}); "
                                 "write the file again with data in it")


def dataset(f, key: str, fmt: str = ""):
    """The HDF5 dataset ``f[key]``, with one-line errors for a missing key or a group of that name."""
    import h5py

    if key not in f:
        read_dataset(f, key, fmt=fmt)  # raises the missing-key error
    ds = f[key]
    if not isinstance(ds, h5py.Dataset):
        raise RobustkitError(f"{f.filename}: {key!r} is an HDF5 group, not an array; is it a {fmt or 'supported'} "
                             "file? write the k-space as one dataset, or check --format")
    return ds


def read_dataset(f, key: str, index: Any = (), fmt: str = "") -> np.ndarray:
    """``f[key][index]``, with one-line errors for a missing key or unreadable (truncated) data."""
    if key not in f:
        raise RobustkitError(
            f"{f.filename} has no dataset {key!r} (found: {', '.join(sorted(f.keys())) or 'none'}); "
            f"is it a {fmt or 'supported'} file? check --format"
        )
    try:
        return np.asarray(f[key][index])
    except (OSError, ValueError) as exc:
        raise RobustkitError(
            f"{f.filename}: cannot read {key!r} ({str(exc).splitlines()[0]}); the file may be truncated: "
            "download or write it again"
        ) from None


def as_complex(array: np.ndarray, what: str, name: str) -> np.ndarray:
    """Complex view of ``array``: native complex, or a compound with ``real``/``imag`` (or ``r``/``i``) fields."""
    if np.iscomplexobj(array):
        return array
    if array.dtype.names:
        for re_name, im_name in (("real", "imag"), ("r", "i")):
            if re_name in array.dtype.names and im_name in array.dtype.names:
                return array[re_name] + 1j * array[im_name]
    raise RobustkitError(f"{name}: {what} must be complex, got dtype {array.dtype}; store it as complex64")


def select(n: int, slices: slice, name: str) -> list[int]:
    """The indices ``range(n)[slices]``; raises when the selection is empty."""
    chosen = list(range(n))[slices]
    if not chosen:
        raise RobustkitError(
            f"{name}: --slices {slices.start}:{slices.stop} selects none of its {n} slices; choose a range within 0:{n}"
        )
    return chosen


def split_from_path(path: Path) -> str | None:
    """``train``/``val``/``test`` from the file's name or its folder's (fastMRI ``multicoil_val/``,
    Calgary-Campinas ``Train/``), else None."""
    words = re.split(r"[^a-z]+", f"{path.parent.name} {path.name}".lower())
    for split, names in (("train", {"train", "training"}), ("val", {"val", "valid", "validation"}),
                         ("test", {"test", "testing", "challenge"})):
        if names & set(words):
            return split
    return None


def check_finite(kspace: np.ndarray, name: str) -> None:
    if not np.isfinite(kspace).all():
        raise RobustkitError(
            f"{name}: k-space contains NaN or Inf values; clean the data or leave this slice out with --slices"
        )


def check_mask(mask: np.ndarray, shape: tuple[int, int], name: str) -> np.ndarray:
    """``mask`` as float32 0/1 ``(H, W)``; 1-D masks over W are broadcast along H."""
    mask = np.asarray(mask)
    if mask.ndim == 1:
        if mask.shape[0] != shape[1]:
            raise RobustkitError(
                f"{name}: 1-D mask of length {mask.shape[0]} does not match k-space width {shape[1]}; "
                "use the mask that belongs to this k-space"
            )
        mask = np.broadcast_to(mask[None, :], shape)
    if mask.shape != shape:
        raise RobustkitError(
            f"{name}: mask of shape {mask.shape} does not match k-space of size {shape} (H, W); "
            "use the mask that belongs to this k-space"
        )
    if not np.isfinite(mask.astype(np.float64)).all() or not (mask != 0).any():
        raise RobustkitError(f"{name}: the mask samples no k-space location; use the acquisition's mask")
    return (mask != 0).astype(np.float32)


def normalise_file_maps(maps: np.ndarray, shape: tuple[int, ...], name: str) -> np.ndarray:
    """Coil maps from a file: shape check against k-space ``(C, H, W)``, then ``Σ_c |S_c|² = 1`` where non-zero."""
    from robustkit.physics.coils import normalise_maps

    if maps.shape != shape:
        raise RobustkitError(
            f"{name}: coil maps of shape {maps.shape} do not match k-space of shape {shape} (coils, H, W); "
            "supply maps for the same coils and matrix size"
        )
    if not np.isfinite(maps).all():
        raise RobustkitError(f"{name}: coil maps contain NaN or Inf values; re-estimate them")
    if not (np.abs(maps) > 0).any():
        raise RobustkitError(f"{name}: coil maps are all zero; re-estimate them")
    return normalise_maps(maps.astype(np.complex128)).astype(np.complex64)


def estimate_maps(kspace: np.ndarray, mask: np.ndarray | None, options: LoadOptions, name: str) -> np.ndarray:
    """ESPIRiT maps ``(C, H, W)`` of ``kspace``; a single coil gets ``S = 1``."""
    from robustkit.physics.espirit import espirit

    if kspace.shape[0] == 1:
        return np.ones_like(kspace, dtype=np.complex64)
    try:
        return espirit(kspace, mask=mask, **options.espirit_settings()).maps
    except RobustkitError as exc:
        raise RobustkitError(f"{name}: {exc}") from None


def sampling_pattern(kspace: np.ndarray, min_fraction: float) -> np.ndarray | None:
    """The non-zero pattern ``Σ_c |k_c| > 0`` as a float32 mask ``(H, W)`` when it covers less than
    ``min_fraction`` of k-space (the k-space is undersampled), else None (fully sampled)."""
    pattern = (np.abs(kspace) > 0).any(axis=0)
    return pattern.astype(np.float32) if pattern.mean() < min_fraction else None


def make_sample(
    kspace: np.ndarray,
    maps: np.ndarray,
    meta: dict[str, Any],
    mask: np.ndarray | None = None,
    reference: bool = True,
) -> Sample:
    """The canonical sample of one slice from k-space ``(C, H, W)`` and maps ``(C, H, W)``.

    ``reference``: ``kspace`` is fully sampled, so the target ``Σ_c conj(S_c) Fᴴ k_c`` exists; the
    stored k-space is ``M ⊙ k`` when a ``mask`` is given (a file's own mask). Without a reference
    the k-space is the measured data and the scale comes from the zero-filled combination.
    """
    import torch

    from robustkit.physics.fft import ifft2c

    name = f"{meta.get('file', 'sample')} slice {meta.get('slice', '?')}"
    k = torch.from_numpy(np.ascontiguousarray(kspace, dtype=np.complex128))
    if mask is not None and not reference:
        k = k * torch.from_numpy(mask.astype(np.float64))
    combined = (torch.from_numpy(maps.astype(np.complex128)).conj() * ifft2c(k)).sum(dim=0).numpy()
    peak = float(np.abs(combined).max())
    if not peak > 0:
        raise RobustkitError(
            f"{name}: the coil-combined image is zero (empty k-space or maps); leave the slice out with --slices"
        )
    scale = 1.0 / peak
    measured = k.numpy() if mask is None else k.numpy() * mask
    return Sample(
        kspace=(measured * scale).astype(np.complex64),
        maps=np.ascontiguousarray(maps, dtype=np.complex64),
        target=(combined * scale).astype(np.complex64) if reference else None,
        mask=None if mask is None else mask.astype(np.float32),
        meta={**meta, "scale": scale, "scale_reference": "target" if reference else "zero-filled"},
    )


def progress_bar(items: list, desc: str, enabled: bool) -> Any:
    """``tqdm`` over ``items`` on stderr when ``enabled`` and stderr is a terminal, else ``items``."""
    import sys

    if not enabled or not sys.stderr.isatty():
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="slice", file=sys.stderr)


__all__ = [
    "FORMATS",
    "Format",
    "LoadOptions",
    "detect_format",
    "inspect",
    "iter_samples",
    "load",
    "parse_slices",
]
