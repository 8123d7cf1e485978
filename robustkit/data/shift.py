"""Evaluation data under a shifted acquisition: acceleration, mask kind, k-space noise, fewer coils,
another anatomy (docs/studies.md, shift).

A :class:`Condition` names one acquisition; :func:`condition_dataset` reads the slices of a prepared
file under it. With the study's nominal condition (its ``accel``, random masks, no noise, every
coil, its data) the items equal those of :func:`robustkit.data.evaluation.eval_dataset`: the same
masks from the same seeds.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from robustkit.data.sample import Sample
from robustkit.errors import RobustkitError


@dataclass(frozen=True)
class Condition:
    """One acquisition: ``accel`` and ``mask`` kind of the masks (:class:`~robustkit.physics.masks.MaskSpec`),
    relative k-space noise ``noise`` (σ as in :class:`~robustkit.data.prepared.PreparedDataset`),
    ``coils`` kept (``None``: all, else :func:`fewer_coils`), ``data``: ``builtin``, a plane of the
    built-in data (``axial``, ``coronal``, ``sagittal``) or a prepared file."""

    accel: float = 4.0
    mask: str = "random"
    noise: float = 0.0
    coils: int | None = None
    data: str = "builtin"


def anatomy_path(data: str) -> Path:
    """The prepared file behind ``data``: a plane name is that plane of the built-in data (built
    once and cached), ``builtin`` its axial plane, anything else a file."""
    from robustkit.data.builtin import PLANES, ensure_builtin
    from robustkit.data.evaluation import data_path

    if data in PLANES:
        return ensure_builtin(plane=data)
    return data_path(data)


def coil_subset(n_coils: int, keep: int) -> np.ndarray:
    """Indices of ``keep`` of ``n_coils`` coils, evenly spaced in the file's coil order (around the
    ring for the built-in data): ``round(i · n_coils / keep)``, ``i = 0 … keep − 1``."""
    if not 1 <= keep <= n_coils:
        raise RobustkitError(f"cannot keep {keep} of {n_coils} coils; choose a coil count from 1 to {n_coils}")
    return np.round(np.arange(keep) * n_coils / keep).astype(int)


def fewer_coils(sample: Sample, keep: int) -> Sample:
    """``sample`` re-simulated with ``keep`` of its coils (docs/studies.md, shift).

    With ``S' = normalise(S[idx])`` on the old support ``Σ_c|S_c|² > 0`` (so ``Σ_{c∈idx}|S'_c|² = 1``
    wherever a kept coil sees the pixel), the k-space is re-simulated from the ground truth,
    ``k'_c = F(S'_c x)``, and the target is ``Σ_c conj(S'_c) Fᴴ k'_c`` (``= x`` on that support).
    An acquisition mask of the sample is kept. Needs a target."""
    from robustkit.physics.coils import normalise_maps
    from robustkit.physics.fft import fft2c, ifft2c

    if sample.target is None:
        raise RobustkitError(f"{sample.meta.get('file', 'a sample')} has no target; fewer coils are simulated "
                             "from the ground truth, so drop the coils axis for this data")
    idx = coil_subset(sample.maps.shape[0], keep)
    support = (np.abs(sample.maps) ** 2).sum(axis=0) > 0
    maps = normalise_maps(sample.maps[idx].astype(np.complex128), support)
    s = torch.from_numpy(maps)
    k = fft2c(s * torch.from_numpy(sample.target.astype(np.complex128)))
    target = (s.conj() * ifft2c(k)).sum(dim=0)
    return replace(sample, kspace=k.numpy().astype(np.complex64), maps=maps.astype(np.complex64),
                   target=target.numpy().astype(np.complex64), meta={**sample.meta, "coils_kept": idx.tolist()})


def condition_dataset(path: str | Path, split: str | None, condition: Condition, seed: int = 0,
                      samples: int | None = None) -> torch.utils.data.Dataset:
    """The first ``samples`` slices (None: all) of split ``split`` of ``path`` under ``condition``:
    masks drawn from ``seed + i`` for slice ``i`` (as every evaluation), noise from ``seed + i + 7919``."""
    from robustkit.data.prepared import PreparedDataset
    from robustkit.physics.masks import MaskSpec

    ds = PreparedDataset(path, split=split, mask=MaskSpec(accel=condition.accel, kind=condition.mask),
                         seed=seed, vary=False, noise=condition.noise)
    if samples is not None and samples < len(ds):
        ds.samples = ds.samples[:samples]
    if condition.coils is not None:
        ds.samples = [fewer_coils(s, condition.coils) for s in ds.samples]
    return ds


def has_acquisition_masks(path: str | Path, split: str | None) -> bool:
    """Whether any sample of the split carries its own mask (then accel and mask kind cannot change)."""
    from robustkit.data.prepared import PreparedDataset

    return any(s.mask is not None for s in PreparedDataset(path, split=split).samples)
