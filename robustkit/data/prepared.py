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
import tempfile
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
        raise RobustkitError(f"{path} already exists; choose another output path or pass --overwrite")
    import h5py

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = FORMAT
            f.attrs["version"] = VERSION
            f.attrs["provenance"] = json.dumps(provenance, sort_keys=True)
            group = f.create_group("samples")
            n = 0
            for i, s in enumerate(samples):
                s.validate()
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
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _open(path: str | os.PathLike):
    import h5py

    path = Path(path)
    if not path.exists():
        raise RobustkitError(f"{path} does not exist; check the path or build it with `robustkit data build`")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise RobustkitError(f"{path} is not a readable HDF5 file ({exc}); re-create it") from None
    if f.attrs.get("format") != FORMAT:
        f.close()
        raise RobustkitError(
            f"{path} is not a robustkit prepared dataset; convert it with `robustkit data prepare`"
        )
    return f


def read_provenance(path: str | os.PathLike) -> dict[str, Any]:
    with _open(path) as f:
        return json.loads(f.attrs["provenance"])


def read_samples(path: str | os.PathLike, split: str | None = None) -> list[Sample]:
    """All samples of ``path`` (optionally only those whose ``meta["split"] == split``)."""
    out = []
    with _open(path) as f:
        for key in sorted(f["samples"]):
            g = f["samples"][key]
            meta = json.loads(g.attrs["meta"])
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


class PreparedDataset(torch.utils.data.Dataset):
    """A split of a prepared file as torch tensors, with masks and noise drawn deterministically.

    Each item is a dict: ``kspace`` measured ``b = M ⊙ (k + n)`` complex64 ``(C, H, W)``, ``maps``
    ``(C, H, W)``, ``mask`` float32 ``(1, H, W)``, ``target`` complex64 ``(H, W)``, ``index``.

    Args:
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
        self.samples = read_samples(path, split)
        if not self.samples:
            raise RobustkitError(f"{path} has no samples in split {split!r}; choose train, val or test")
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
        provenance = json.loads(f.attrs["provenance"])
        groups = [f["samples"][key] for key in sorted(f["samples"])]
        metas = [json.loads(g.attrs["meta"]) for g in groups]
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
