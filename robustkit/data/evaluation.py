"""The slices a model is evaluated on: a split of the built-in data or of a prepared file, at the
file's own image size, with masks fixed per slice (no noise).

Shared by every study (``--data``/``--split``), ``robustkit models evaluate`` and ``models check``
so that all of them read data, default the split and word their errors the same way (docs/data.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from robustkit.errors import RobustkitError

BUILTIN = "builtin"


@dataclass(frozen=True)
class EvalData:
    """What an evaluation read.

    name: ``builtin`` or the file as given; path: the HDF5 file; split: the split read (``all`` when
    every sample); accel: acceleration of the masks; shape: ``(H, W)`` of the first slice; n: slices.
    """

    name: str
    path: Path
    split: str
    accel: float
    shape: tuple[int, int]
    n: int

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "path": str(self.path), "split": self.split, "accel": self.accel,
                "shape": list(self.shape), "slices": self.n}


def data_path(data: str) -> Path:
    """The HDF5 file behind ``data``: the cached built-in dataset for ``builtin``, else the path."""
    from robustkit.data.builtin import ensure_builtin

    if data == BUILTIN:
        return ensure_builtin()
    path = Path(data)
    if path.is_dir():
        raise RobustkitError(f"--data {path} is a folder, not a prepared HDF5 file; pass 'builtin' or a file from "
                             f"`robustkit data prepare` (which turns raw files into one: robustkit data prepare {path / '*.h5'} --out data.h5)")
    if not path.is_file():
        raise RobustkitError(f"data file {path} does not exist; pass 'builtin' or a file from `robustkit data prepare`")
    return path


def eval_dataset(data: str, split: str | None, accel: float, seed: int = 0,
                 samples: int | None = None) -> tuple[torch.utils.data.Dataset, EvalData]:
    """``(dataset, info)``: split ``split`` of ``data`` (None: ``test`` when the file has splits, every
    sample when it has none), the first ``samples`` slices (None: all), 1-D random masks at
    ``accel`` drawn from ``seed + i`` for slice ``i``. Each item is a
    :class:`~robustkit.data.prepared.PreparedDataset` dict (``kspace``, ``maps``, ``mask``, ``target``,
    ``index``) at the file's own size."""
    from robustkit.data.prepared import PreparedDataset, resolve_split
    from robustkit.physics.masks import MaskSpec

    path = data_path(data)
    chosen = resolve_split(path, split)
    ds = PreparedDataset(path, split=chosen, mask=MaskSpec(accel=accel), seed=seed, vary=False)
    if samples is not None and samples < len(ds):
        ds = torch.utils.data.Subset(ds, range(samples))
    elif samples is not None and samples > len(ds):
        from robustkit.errors import warn

        warn(f"{samples} slices asked for, but the {chosen} split of {data} has {len(ds)}: all {len(ds)} are used")
    h, w = ds[0]["target"].shape[-2:]
    own = file_acceleration(ds)
    if own is not None and abs(own - accel) > 0.05 * accel:
        from robustkit.errors import warn

        warn(f"{data} carries its own acquisition masks (acceleration {own:.3g}× on average): --accel {accel:g} is "
             "not used there; the numbers are at the file's masks")
    return ds, EvalData(data, path, chosen, float(accel if own is None else own), (int(h), int(w)), len(ds))


def file_acceleration(dataset) -> float | None:
    """The mean acceleration ``H·W / Σ mask`` of the file's own acquisition masks over the slices of
    ``dataset`` (a :class:`~robustkit.data.prepared.PreparedDataset` or a ``Subset`` of one), when
    every slice carries one; ``None`` when the masks are drawn at ``--accel``."""
    from robustkit.data.prepared import samples_of

    masks = [s.mask for s in samples_of(dataset) or [None]]
    if any(m is None for m in masks):
        return None
    return float(sum(m.size / max(float(m.sum()), 1.0) for m in masks) / len(masks))
