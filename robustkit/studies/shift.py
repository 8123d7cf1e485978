"""Distribution-shift study (docs/studies.md, shift): each model evaluated under
acquisitions it was not trained for, one axis at a time.

The nominal condition is the study's own setting: masks at ``accel`` (default 4, the shipped models'
training acceleration; a model whose card says otherwise runs with the usual mismatch warning),
random 1-D masks, no added noise, every coil of the data, the study's ``data``. Each axis changes
one setting and holds the others nominal:

==========  ==========================================================================
accel       masks at each acceleration of ``accels`` (2×: more samples than trained on)
mask        mask kind: ``random``, ``equispaced``, ``variable-density-2d`` (physics/masks.py)
noise       complex Gaussian k-space noise of relative σ (each of ``noises``)
coils       ``coils`` evenly spaced coils kept, maps renormalised, k-space re-simulated
anatomy     other planes of the built-in data (``coronal``, ``sagittal``) or prepared files
==========  ==========================================================================

Every axis lists its nominal value too (added when missing), so each axis has its own
``nominal = True`` rows (the same reconstructions, computed once per model).

Schema of ``results.csv`` (one row per model × axis × condition × slice):

================  ======================================================================
study, model      ``"shift"``; the model
sample            slice index in the condition's data
axis, condition   the axis; its value as text (``2x``, ``equispaced``, ``σ=0.05``, ``4 coils``,
                  ``coronal``, a file name)
nominal           whether this is the nominal condition (bool)
psnr, ssim, nmse  of the reconstruction against the condition's ground truth
psnr_nominal      PSNR of the same slice under the nominal condition; on the ``anatomy`` axis,
                  whose slices differ, the mean nominal PSNR over the nominal slices
psnr_drop         ``psnr_nominal − psnr`` (dB, > 0 = worse than nominal)
iterations,       DEQ solve under the condition (NaN for unrolled models): updates applied,
residual,         final relative residual, whether it met the model's tolerance within its cap
converged
accel, mask       acceleration and mask kind of the condition's masks
mask_accel        the mask's measured acceleration ``H·W / Σ M`` (1 for a stored acquisition mask
                  that samples every location)
noise             relative noise σ of the condition
coils             coils of the condition (the data's own count when nominal)
data              the condition's data: ``builtin`` (axial), a plane of it, or the file
split, seed       the split read; the study seed (masks from ``seed + i``, noise ``seed + i + 7919``)
================  ======================================================================
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from robustkit.data.shift import Condition
from robustkit.errors import RobustkitError
from robustkit.studies.common import Cell, LoadedModel, StudyConfig, check_eps

#: its measure (PSNR/SSIM against the target) needs slices with a target
SCORES_TARGET = True
AXES = ("accel", "mask", "noise", "coils", "anatomy")
NOMINAL_MASK = "random"


@dataclass
class ShiftConfig(StudyConfig):
    """axes: which axes to shift (``accel``, ``mask``, ``noise``, ``coils``, ``anatomy``); accels:
    accelerations of the ``accel`` axis; masks: mask kinds; noises: relative k-space noise σ; coils:
    coil counts kept; anatomy: planes of the built-in data (``axial``, ``coronal``, ``sagittal``) or
    prepared HDF5 files. Each axis also evaluates its nominal value (module docstring)."""

    axes: list[str] = field(default_factory=lambda: list(AXES))
    accels: list[float] = field(default_factory=lambda: [2.0, 4.0, 6.0, 8.0])
    masks: list[str] = field(default_factory=lambda: ["random", "equispaced", "variable-density-2d"])
    noises: list[float] = field(default_factory=lambda: [0.01, 0.02, 0.05, 0.1])
    coils: list[int] = field(default_factory=lambda: [8, 4])
    anatomy: list[str] = field(default_factory=lambda: ["coronal", "sagittal"])

    def validate(self) -> None:
        from robustkit.data.builtin import PLANES
        from robustkit.physics.masks import MASK_KINDS

        super().validate()
        for name, values, allowed in (("axis", self.axes, AXES), ("mask", self.masks, MASK_KINDS)):
            for v in values:
                if v not in allowed:
                    raise RobustkitError(f"unknown {name} {v!r}; choose from {', '.join(allowed)}")
        if not self.axes:
            raise RobustkitError(f"no axes given; choose from {', '.join(AXES)}")
        for a in self.accels:
            if not (np.isfinite(a) and a >= 1):
                raise RobustkitError(f"accels must be finite numbers >= 1, got {a!r}")
        self.noises = check_eps(self.noises, name="noises") if self.noises else []
        for n in self.coils:
            if n < 1:
                raise RobustkitError(f"coils must be >= 1, got {n}")
        for a in self.anatomy:
            if a not in PLANES and a != "builtin" and not Path(a).is_file():
                raise RobustkitError(f"anatomy {a!r} is neither a plane ({', '.join(PLANES)}) nor an existing "
                                     "prepared file; fix the name or path")


# ----------------------------------------------------------------------------- conditions


@dataclass(frozen=True)
class Shifted:
    """One cell's condition: its axis, label, whether nominal, and the acquisition."""

    axis: str
    label: str
    nominal: bool
    condition: Condition


def data_label(data: str) -> str:
    """``axial`` for the built-in data, else the plane name or the file's name."""
    return "axial" if data == "builtin" else Path(data).name


def conditions(config: ShiftConfig, n_coils: int) -> list[Shifted]:
    """The conditions of every configured axis, each axis with its nominal value (module docstring)."""
    base = Condition(accel=config.accel, data=config.data)
    out: list[Shifted] = []
    for axis in config.axes:
        if axis == "accel":
            values = sorted({float(config.accel), *map(float, config.accels)})
            out += [Shifted(axis, f"{a:g}x", a == config.accel, Condition(accel=a, data=config.data)) for a in values]
        elif axis == "mask":
            values = [NOMINAL_MASK, *(m for m in dict.fromkeys(config.masks) if m != NOMINAL_MASK)]
            out += [Shifted(axis, m, m == NOMINAL_MASK, Condition(accel=config.accel, mask=m, data=config.data)) for m in values]
        elif axis == "noise":
            values = sorted({0.0, *map(float, config.noises)})
            out += [Shifted(axis, f"σ={s:g}", s == 0, Condition(accel=config.accel, noise=s, data=config.data)) for s in values]
        elif axis == "coils":
            values = sorted({n_coils, *config.coils}, reverse=True)
            out += [Shifted(axis, f"{n} coils", n == n_coils, Condition(accel=config.accel, coils=None if n == n_coils else n,
                                                                  data=config.data)) for n in values]
        else:
            nominal = data_label(config.data)
            values = [config.data, *(a for a in dict.fromkeys(config.anatomy) if data_label(a) != nominal)]
            out += [Shifted(axis, data_label(a), a == config.data, base if a == config.data else Condition(accel=config.accel, data=a))
                    for a in values]
    return out


def check_data(config: ShiftConfig, dataset) -> None:
    """Refuse, before anything is written, coil counts the data lacks, and accel/mask axes on data
    whose slices carry their own acquisition masks."""
    from robustkit.data.evaluation import data_path
    from robustkit.data.shift import has_acquisition_masks

    from robustkit.data.prepared import split_counts
    from robustkit.data.shift import anatomy_path

    if "anatomy" in config.axes:
        for a in config.anatomy:
            split_counts(anatomy_path(a))  # one line now, not a failed run later, if it is no prepared file
    n_coils = int(dataset[0]["maps"].shape[0])
    if "coils" in config.axes:
        more = [n for n in config.coils if n > n_coils]
        if more:
            raise RobustkitError(f"the data has {n_coils} coils, so it cannot keep {more[0]}; "
                                 f"give --coils values from 1 to {n_coils}")
    changes_masks = [a for a in ("accel", "mask") if a in config.axes]
    if changes_masks and has_acquisition_masks(data_path(config.data), config.split):
        raise RobustkitError(f"{config.data} carries its own acquisition masks, so the {' and '.join(changes_masks)} "
                             "axes cannot change them; drop them (e.g. --axis noise --axis coils)")


def _split_for(path: Path, split: str | None) -> str:
    """The study's split when ``path`` holds it, else its ``test`` split, else every sample: another
    anatomy's file need not have the study's splits (a file of train and val only is read whole)."""
    from robustkit.data.prepared import ALL, split_counts

    counts = split_counts(path)
    if split == ALL or (split is not None and counts.get(split, 0) > 0):
        return split
    return "test" if counts.get("test", 0) > 0 else ALL


# ----------------------------------------------------------------------------- cells


class NominalCache:
    """Per model, the rows under the nominal condition (computed once; recomputed after a resume)."""

    def __init__(self):
        self.rows: dict[str, pd.DataFrame] = {}

    def get(self, lm: LoadedModel, config: ShiftConfig, nominal: Shifted, device) -> pd.DataFrame:
        if lm.name not in self.rows:
            self.rows[lm.name] = evaluate_condition(lm, nominal.condition, config, device)
        return self.rows[lm.name]


def evaluate_condition(lm: LoadedModel, condition, config: ShiftConfig, device) -> pd.DataFrame:
    """Per slice: ``sample``, ``psnr``, ``ssim``, ``nmse``, ``iterations``, ``residual``,
    ``converged`` (NaN for unrolled models), ``coils``, ``mask_accel``, ``split``."""
    from robustkit.data.shift import anatomy_path, condition_dataset
    from robustkit.evaluate import evaluate

    path = anatomy_path(condition.data)
    split = _split_for(path, config.split)
    ds = condition_dataset(path, split, condition, config.seed, config.samples)
    frame = pd.DataFrame(evaluate(lm, ds, device, batch_size=config.batch_size)).rename(columns={"index": "sample"})
    for c in ("iterations", "residual", "converged"):
        if c not in frame:
            frame[c] = np.nan
    masks = [ds[i]["mask"] for i in range(len(ds))]
    frame["mask_accel"] = [float(m.numel() / m.sum().clamp_min(1)) for m in masks]
    frame["coils"] = [int(ds[i]["maps"].shape[0]) for i in range(len(ds))]
    frame["split"] = split
    return frame


def shift_cell(lm: LoadedModel, shifted: Shifted, nominal: Shifted, config: ShiftConfig, device,
               cache: NominalCache) -> tuple[pd.DataFrame, None]:
    """The rows of one model under one condition."""
    base = cache.get(lm, config, nominal, device)
    rows = base.copy() if shifted.nominal else evaluate_condition(lm, shifted.condition, config, device)
    if shifted.axis == "anatomy":
        rows["psnr_nominal"] = float(base["psnr"].mean()) if not shifted.nominal else base["psnr"].to_numpy()
    else:
        rows["psnr_nominal"] = rows["sample"].map(dict(zip(base["sample"], base["psnr"])))
    c = shifted.condition
    frame = pd.DataFrame({
        "study": "shift", "model": lm.name, "sample": rows["sample"], "axis": shifted.axis,
        "condition": shifted.label, "nominal": shifted.nominal,
        "psnr": rows["psnr"], "ssim": rows["ssim"], "nmse": rows["nmse"], "psnr_nominal": rows["psnr_nominal"],
        "psnr_drop": rows["psnr_nominal"] - rows["psnr"],
        "iterations": rows["iterations"], "residual": rows["residual"], "converged": rows["converged"],
        "accel": float(c.accel), "mask": c.mask, "mask_accel": rows["mask_accel"], "noise": float(c.noise),
        "coils": rows["coils"], "data": c.data, "split": rows["split"], "seed": config.seed,
    })
    return frame, None


def cells(config: ShiftConfig, models: list[LoadedModel], dataset, device, run) -> list[Cell]:
    """Per model, one cell per axis × condition (the nominal reconstructions are shared)."""
    cache = NominalCache()
    shifted = conditions(config, int(dataset[0]["maps"].shape[0]))
    nominal = next(s for s in shifted if s.nominal)
    out = []
    for lm in models:
        for s in shifted:
            out.append(Cell(f"{lm.name}|{s.axis}|{s.label}", f"{lm.name} {s.axis}={s.label}",
                            lambda lm=lm, s=s: shift_cell(lm, s, nominal, config, device, cache)))
    return out


#: the columns of ``results.csv`` (documented above).
COLUMNS = ("study", "model", "sample", "axis", "condition", "nominal", "psnr", "ssim", "nmse", "psnr_nominal",
           "psnr_drop", "iterations", "residual", "converged", "accel", "mask", "mask_accel", "noise", "coils",
           "data", "split", "seed")

SUMMARY_BY = ["model", "axis", "condition"]
SUMMARY_COLUMNS = ["psnr", "ssim", "psnr_drop", "iterations", "converged", "residual"]
