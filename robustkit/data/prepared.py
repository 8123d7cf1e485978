"""The prepared-dataset format: canonical samples with provenance in one HDF5 file.

Layout (format ``robustkit-prepared``, version 1)::

    /                   attrs: format, version, provenance (JSON)
    /samples/000000     group, attrs: meta (JSON)
        kspace          complex64 (C, H, W)
        maps            complex64 (C, H, W)
        target          complex64 (H, W)      optional
        mask            float32 (H, W)        optional (absent = fully sampled)

Training and studies read only this format; every loader and the built-in dataset write it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from robustkit.data.sample import Sample
from robustkit.errors import RobustkitError
from robustkit.physics.masks import MaskSpec

FORMAT = "robustkit-prepared"
VERSION = 1


def write_prepared(
    path: str | os.PathLike,
    samples: Iterable[Sample],
    provenance: dict[str, Any],
    overwrite: bool = False,
) -> Path:
    """Write ``samples`` to ``path`` atomically (temp file + rename); refuse to overwrite by default."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise RobustkitError(f"{path} already exists; choose another output path or pass --overwrite (overwrite=True in Python)")
    import h5py

    from robustkit.io import atomic_path, os_error

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise os_error(exc, path.parent, "create the folder") from None
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = FORMAT
            f.attrs["version"] = VERSION
            f.attrs["provenance"] = json.dumps(provenance, sort_keys=True)
            group = f.create_group("samples")
            n, size = 0, None
            for i, s in enumerate(samples):
                s.validate()
                size = size or s.kspace.shape[-2:]
                if s.kspace.shape[-2:] != size:  # every command reads a file at one image size
                    (h0, w0), (h, w) = size, s.kspace.shape[-2:]
                    raise RobustkitError(f"sample {i} is {h}×{w} but the first is {h0}×{w0}: a prepared file holds one "
                                         f"image size; add --crop {min(h, h0)}x{min(w, w0)} or prepare each size into "
                                         "its own file")
                check_free_space(path, s)
                g = group.create_group(f"{i:06d}")
                g.attrs["meta"] = json.dumps(s.meta, sort_keys=True)
                g.create_dataset("kspace", data=s.kspace.astype(np.complex64))
                g.create_dataset("maps", data=s.maps.astype(np.complex64))
                if s.target is not None:
                    g.create_dataset("target", data=s.target.astype(np.complex64))
                if s.mask is not None:
                    g.create_dataset("mask", data=s.mask.astype(np.float32))
                n += 1
            if n == 0:
                raise RobustkitError(f"no samples to write to {path}; check the input file and slice selection")
    return path


#: free space kept in reserve beyond a sample's own bytes (HDF5 metadata, other writers).
SPACE_MARGIN = 16 << 20


def sample_bytes(sample: Sample) -> int:
    """Bytes ``sample`` takes in a prepared file: complex64 k-space and maps, target, float32 mask."""
    n = 8 * (sample.kspace.size + sample.maps.size)
    n += 8 * sample.target.size if sample.target is not None else 0
    return n + (4 * sample.mask.size if sample.mask is not None else 0)


def check_free_space(path: Path, sample: Sample) -> None:
    """Refuse to write ``sample`` next to ``path`` when the disk lacks room for it (a full disk
    would otherwise fail inside HDF5, which can crash the process)."""
    import shutil

    need = sample_bytes(sample) + SPACE_MARGIN
    free = shutil.disk_usage(path.parent).free
    if free < need:
        raise RobustkitError(
            f"not enough free space in {path.parent} to write {path.name} ({free / 2**20:.0f} MiB free, the next "
            f"sample needs {need / 2**20:.0f} MiB); free some space or choose another --out"
        )


def _open(path: str | os.PathLike):
    import h5py

    path = Path(path)
    if not path.exists():
        raise RobustkitError(f"{path} does not exist; check the path, prepare a file with `robustkit data prepare`, "
                             "or use the built-in data (--data builtin)")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise RobustkitError(f"{path} is not a readable HDF5 file ({exc}); pass a file written by "
                             "`robustkit data prepare` (or --data builtin)") from None
    if f.attrs.get("format") != FORMAT:
        f.close()
        raise RobustkitError(
            f"{path} is not a robustkit prepared dataset; convert it with `robustkit data prepare`"
        )
    return f


_REDO = "re-create it with `robustkit data prepare` or `robustkit data build`"


def _json_attr(obj, name: str, path: str | os.PathLike, where: str) -> Any:
    """The JSON attribute ``name`` of an HDF5 object; missing or invalid JSON is a one-line error."""
    if name not in obj.attrs:
        raise RobustkitError(f"{path}: {where} has no {name!r} attribute; the file is damaged, {_REDO}")
    raw = obj.attrs[name]
    try:
        value = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else str(raw))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RobustkitError(
            f"{path}: the {name} of {where} is not valid JSON ({str(exc).splitlines()[0]}); the file is damaged, {_REDO}"
        ) from None
    if not isinstance(value, dict):
        raise RobustkitError(f"{path}: the {name} of {where} is not a JSON object; the file is damaged, {_REDO}")
    return value


def _sample_groups(f, path: str | os.PathLike) -> list[tuple[str, Any]]:
    """``(key, group)`` of every sample, each checked to hold ``kspace`` and ``maps``."""
    import h5py

    group = f.get("samples")
    if not isinstance(group, h5py.Group):
        raise RobustkitError(f"{path} has no 'samples' group; the file is damaged, {_REDO}")
    out = []
    for key in sorted(group):
        g = group[key]
        missing = [n for n in ("kspace", "maps") if not isinstance(g, h5py.Group) or n not in g]
        if missing:
            raise RobustkitError(f"{path}: sample {key} lacks {missing[0]!r}; the file is damaged, {_REDO}")
        out.append((key, g))
    return out


def read_provenance(path: str | os.PathLike) -> dict[str, Any]:
    with _open(path) as f:
        return _json_attr(f, "provenance", path, "the file")


def read_samples(path: str | os.PathLike, split: str | None = None) -> list[Sample]:
    """All samples of ``path`` (optionally only those whose ``meta["split"] == split``)."""
    out = []
    with _open(path) as f:
        for key, g in _sample_groups(f, path):
            meta = _json_attr(g, "meta", path, f"sample {key}")
            if split is not None and meta.get("split") != split:
                continue
            try:
                out.append(
                    Sample(
                        kspace=g["kspace"][()],
                        maps=g["maps"][()],
                        target=g["target"][()] if "target" in g else None,
                        mask=g["mask"][()] if "mask" in g else None,
                        meta=meta,
                    )
                )
            except KeyError as exc:
                raise RobustkitError(f"{path}: sample {key} lacks {exc}; re-create the file") from None
    return out


#: the ``split`` value that reads every sample of a file, whatever its split.
ALL = "all"
_NO_SPLIT = "no split"


def samples_of(dataset) -> list[Sample] | None:
    """The stored samples behind a :class:`PreparedDataset` or a ``Subset`` of one, in its order;
    ``None`` for any other dataset."""
    base = getattr(dataset, "dataset", dataset)
    samples = getattr(base, "samples", None)
    if samples is None:
        return None
    return [samples[i] for i in getattr(dataset, "indices", range(len(base)))]


def missing_targets(dataset) -> int:
    """How many slices of a :class:`PreparedDataset` (or a ``Subset`` of one) have no target: the
    samples prepared from undersampled k-space, which no PSNR, SSIM or NMSE can score."""
    return sum(s.target is None for s in samples_of(dataset) or [])


def no_target_error(data: str, missing: int, total: int, what: str,
                    fix: str = "prepare a file from fully sampled k-space") -> RobustkitError:
    """The one-line refusal for ``what`` on slices without a target."""
    return RobustkitError(f"{missing} of the {total} slices of {data} have no target (prepared from undersampled "
                          f"k-space), so {what}; {fix}")


def split_counts(path: str | os.PathLike) -> dict[str, int]:
    """Samples per split of a prepared file, ``{"train": 30, "val": 4, "no split": 2}`` (file order
    train, val, test, others, samples without a split last); reads only the metadata."""
    from collections import Counter

    with _open(path) as f:
        counts = Counter(json.loads(f["samples"][key].attrs["meta"]).get("split") or _NO_SPLIT for key in f["samples"])
    order = ["train", "val", "test", *sorted(set(counts) - {"train", "val", "test", _NO_SPLIT}), _NO_SPLIT]
    return {name: counts[name] for name in order if name in counts}


def describe_splits(path: str | os.PathLike, counts: dict[str, int] | None = None) -> str:
    """``file X has splits train (30), val (4)`` or ``file X has 6 samples without a split``."""
    counts = split_counts(path) if counts is None else counts
    named = [f"{name} ({n})" for name, n in counts.items() if name != _NO_SPLIT]
    loose = counts.get(_NO_SPLIT, 0)
    if not named:
        return f"file {path} has {loose} samples without a split"
    return f"file {path} has splits {', '.join(named)}" + (f" and {loose} samples without a split" if loose else "")


def resolve_split(path: str | os.PathLike, split: str | None) -> str:
    """The split to read from ``path``: ``split`` itself, checked against what the file holds, or for
    ``None`` the default, ``test`` when the file has splits and :data:`ALL` when it has none
    (prepared without ``--split``). A split with no samples raises, naming what the file holds."""
    counts = split_counts(path)
    has_splits = any(name != _NO_SPLIT for name in counts)
    if split is None:
        split = "test" if has_splits else ALL
    if split == ALL or counts.get(split, 0) > 0:
        return split
    if not has_splits:
        fix = ("use --split all (or no --split) to read every sample; training needs a file prepared with train "
               "and val splits (robustkit data prepare train/a.h5 val/b.h5 --out FILE; docs/data.md)")
    else:
        names = sorted(name for name in counts if name != _NO_SPLIT)
        fix = f"pass one of its splits ({', '.join(names)}) or all, e.g. --split {max((counts[n], n) for n in names)[1]}"
    raise RobustkitError(f"{describe_splits(path, counts)}; no {split!r} — {fix}")


class PreparedDataset(torch.utils.data.Dataset):
    """A split of a prepared file as torch tensors, with masks and noise drawn deterministically.

    Each item is a dict: ``kspace`` measured ``b = M ⊙ (k + n)`` complex64 ``(C, H, W)``, ``maps``
    ``(C, H, W)``, ``mask`` float32 ``(1, H, W)``, ``target`` complex64 ``(H, W)``, ``index``.

    Args:
        split: the samples whose ``meta["split"]`` is this; None or :data:`ALL` reads every sample.
        mask: how to undersample fully sampled k-space; ignored for samples that carry a mask.
        seed: base seed; sample ``i`` uses ``seed + i`` (plus ``1000003 · epoch`` when ``vary``).
        vary: draw a new mask (and noise) every epoch (training); fixed otherwise (evaluation).
        noise: complex Gaussian noise of standard deviation ``noise · ‖M k‖ / √|M|`` (relative to the
            RMS of the measured samples, docs/maths.md §1); 0 disables it.
        augment: with ``vary``, a new smooth phase and a random left-right flip per sample and epoch
            (:mod:`robustkit.data.augment`); needs targets.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        split: str | None = None,
        mask: MaskSpec | None = None,
        seed: int = 0,
        vary: bool = False,
        noise: float = 0.0,
        augment: bool = False,
    ):
        self.path = Path(path)
        self.samples = read_samples(path, None if split == ALL else split)
        if not self.samples:
            resolve_split(path, split)  # raises: the message names the splits the file holds
        self.mask_spec = mask or MaskSpec()
        if augment and any(s.target is None for s in self.samples):
            raise RobustkitError(f"{path}: augmentation re-simulates k-space from the target, but some samples have none; train without --augment")
        self.seed, self.vary, self.noise, self.augment = seed, vary, noise, augment
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        s = self.samples[i]
        seed = self.seed + i + (1_000_003 * self.epoch if self.vary else 0)
        mask = s.mask if s.mask is not None else self.mask_spec.draw(s.shape, seed)
        k, maps, target = s.kspace, s.maps, s.target
        if self.augment and self.vary:
            from robustkit.data.augment import augment_sample

            k, maps, target = augment_sample(maps, target, np.random.default_rng([seed, 104_729]))
        if self.noise > 0:
            rng = np.random.default_rng(seed + 7_919)
            n = rng.standard_normal(k.shape) + 1j * rng.standard_normal(k.shape)
            rms = np.linalg.norm(k * mask) / np.sqrt(max(1.0, mask.sum() * k.shape[0]))
            k = k + (self.noise * rms / np.sqrt(2)) * n
        b = (k * mask).astype(np.complex64)
        target = target if target is not None else np.zeros(s.shape, np.complex64)
        return {
            "kspace": torch.from_numpy(b),
            "maps": torch.from_numpy(np.ascontiguousarray(maps, dtype=np.complex64)),
            "mask": torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None],
            "target": torch.from_numpy(np.ascontiguousarray(target, dtype=np.complex64)),
            "index": torch.tensor(i),
        }


_SUMMARY_WIDTH = 160


def summarize(path: str | os.PathLike) -> str:
    """A few lines on a prepared file: samples per split, matrix sizes, coils, targets, masks, provenance."""
    from collections import Counter

    with _open(path) as f:
        provenance = _json_attr(f, "provenance", path, "the file")
        pairs = _sample_groups(f, path)
        groups = [g for _, g in pairs]
        metas = [_json_attr(g, "meta", path, f"sample {key}") for key, g in pairs]
        shapes = Counter(g["kspace"].shape for g in groups)
        targets = sum("target" in g for g in groups)
        masks = sum("mask" in g for g in groups)
    splits = Counter(m.get("split") or "no split" for m in metas)
    counts = ", ".join(f"{name} {splits[name]}" for name in ("train", "val", "test", "no split") if name in splits)
    sizes = "; ".join(
        f"{c} coils x {h} x {w} ({n})" if len(shapes) > 1 else f"{c} coils, matrix {h} x {w} (H x W)"
        for (c, h, w), n in sorted(shapes.items())
    )
    sources = Counter(m.get("source", "?") for m in metas)
    lines = [
        f"{path}",
        f"  samples: {len(metas)} ({counts})",
        f"  shape: {sizes}",
        f"  targets: {targets} of {len(metas)}; acquisition masks: {masks} of {len(metas)}"
        + ("" if masks else " (masks are drawn when the data is read)"),
        f"  sources: {', '.join(f'{name} {n}' for name, n in sorted(sources.items()))}",
    ]
    for key, value in sorted(provenance.items()):
        text = json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else str(value)
        lines.append(f"  {key}: {text if len(text) <= _SUMMARY_WIDTH else text[: _SUMMARY_WIDTH - 3] + '...'}")
    return "\n".join(lines)
