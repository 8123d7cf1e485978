"""What every study shares: its config base, the data and models it runs on, and the cell runner
that writes a :class:`~robustkit.studies.rundir.RunDir` and survives Ctrl-C."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterable

import pandas as pd
import torch

from robustkit.errors import RobustkitError, StudyInterrupted
from robustkit.studies.flags import as_bool

#: default zoo references of the models a study runs on (registry names resolve to default entries).
DEFAULT_MODELS = ["modl", "mol", "mnmmol"]
DEFAULT_DEQ_MODELS = ["mol", "mnmmol"]


@dataclass
class StudyConfig:
    """Settings every study has.

    models: zoo references (a registry name such as ``mnmmol`` means its default zoo entry).
    data: ``builtin`` or a prepared HDF5 file; split: its split; accel: acceleration of the masks
    (fixed per slice by ``seed``); samples: the first N slices of the split (``None`` = all);
    batch_size: slices per batch; seed: every random draw of the study.
    """

    models: list[str] = field(default_factory=lambda: list(DEFAULT_MODELS))
    data: str = "builtin"
    split: str = "test"
    accel: float = 4.0
    samples: int | None = None
    batch_size: int = 2
    seed: int = 0

    def validate(self) -> None:
        if not self.models:
            raise RobustkitError("no models given; name at least one, e.g. --model mnmmol")
        if self.samples is not None and self.samples < 1:
            raise RobustkitError(f"samples must be >= 1, got {self.samples}")
        if self.batch_size < 1:
            raise RobustkitError(f"batch_size must be >= 1, got {self.batch_size}")
        if not (isinstance(self.accel, (int, float)) and self.accel >= 1):
            raise RobustkitError(f"accel must be a number >= 1, got {self.accel!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_mapping(cls, mapping: dict[str, Any], where: str = "config") -> "StudyConfig":
        """Build from a mapping (a TOML table or CLI options); unknown keys are an error naming them."""
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(mapping) - set(known))
        if unknown:
            raise RobustkitError(
                f"unknown key {unknown[0]!r} in {where}; known keys: {', '.join(sorted(known))}"
            )
        values = {}
        for key, value in mapping.items():
            default = known[key].default_factory() if known[key].default_factory is not dataclasses.MISSING else known[key].default  # type: ignore[misc]
            if isinstance(default, list) and not isinstance(value, list):
                value = [value]
            if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            values[key] = value
        config = cls(**values)
        config.validate()
        return config


def check_eps(values: Iterable[Any]) -> list[float]:
    """ε grid: numbers ≥ 0, at least one."""
    out = []
    for v in values:
        try:
            e = float(v)
        except (TypeError, ValueError):
            raise RobustkitError(f"eps must be a number >= 0, got {v!r}") from None
        if not math.isfinite(e) or e < 0:
            raise RobustkitError(f"eps must be a finite number >= 0, got {v!r}")
        out.append(e)
    if not out:
        raise RobustkitError("the eps grid is empty; give at least one value, e.g. --eps 0.05")
    return out


# ----------------------------------------------------------------------------- data and models


def study_dataset(config: StudyConfig):
    """The evaluation slices: masks fixed per slice (drawn from ``seed``), no noise."""
    from robustkit.data.builtin import ensure_builtin
    from robustkit.data.prepared import PreparedDataset
    from robustkit.physics.masks import MaskSpec

    path = ensure_builtin() if config.data == "builtin" else Path(config.data)
    if not path.exists():
        raise RobustkitError(f"data file {path} does not exist; pass 'builtin' or a file from `robustkit data prepare`")
    ds = PreparedDataset(path, split=config.split, mask=MaskSpec(accel=config.accel), seed=config.seed, vary=False)
    if len(ds) == 0:
        raise RobustkitError(f"split {config.split!r} of {path} has no slices; choose another split")
    if config.samples is not None and config.samples < len(ds):
        ds = torch.utils.data.Subset(ds, range(config.samples))
    return ds


@dataclass
class LoadedModel:
    name: str  # the zoo folder name, e.g. "mnmmol-4x"
    model: torch.nn.Module
    card: dict[str, Any]

    @property
    def is_deq(self) -> bool:
        return bool(getattr(self.model, "is_deq", False))

    def meta(self) -> dict[str, Any]:
        return {"name": self.name, "model": self.card.get("model"), "weights_sha256": self.card.get("weights_sha256")}


def load_models(refs: Iterable[str], dataset, accel: float, device: torch.device) -> list[LoadedModel]:
    """Load zoo models and check that each was trained at ``accel`` on images of the data's size."""
    from robustkit.models.zoo import load_model, resolve

    shape = list(dataset[0]["target"].shape[-2:])
    out: list[LoadedModel] = []
    seen = set()
    for ref in refs:
        name = resolve(ref).name
        if name in seen:
            continue
        seen.add(name)
        model, card = load_model(ref, map_location=str(device))
        data = card.get("data", {})
        trained_accel = data.get("accel")
        if trained_accel is not None and abs(float(trained_accel) - float(accel)) > 1e-9:
            raise RobustkitError(
                f"zoo model {name!r} was trained at {trained_accel:g}x but the data is {accel:g}x; "
                f"pass --accel {trained_accel:g} or choose a {accel:g}x model"
            )
        trained_shape = data.get("shape")
        if trained_shape is not None and list(trained_shape) != shape:
            raise RobustkitError(
                f"zoo model {name!r} was trained on {trained_shape[0]}x{trained_shape[1]} images but the data is "
                f"{shape[0]}x{shape[1]}; use data of the model's size or a model trained on this data"
            )
        out.append(LoadedModel(name, model, card))
    return out


def batches(dataset, batch_size: int, device: torch.device):
    """The dataset in order, as device batches."""
    from robustkit.batch import to_device

    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    for batch in loader:
        yield to_device(batch, device)


# ----------------------------------------------------------------------------- the cell runner


@dataclass
class Cell:
    """One unit of work (e.g. one model × ε × kind) whose rows are saved together."""

    key: str
    label: str
    work: Callable[[], tuple[pd.DataFrame, pd.DataFrame | None]]


def run_cells(run, cells: list[Cell], progress: bool = True) -> pd.DataFrame:
    """Run the cells not yet completed in ``run``, saving each as it finishes. Ctrl-C keeps the
    finished cells and raises :class:`StudyInterrupted` naming the ``--resume`` path."""
    from tqdm.auto import tqdm

    done = run.completed()
    todo = [c for c in cells if c.key not in done]
    bar = tqdm(todo, desc=run.study, disable=not progress, leave=False)
    try:
        for cell in bar:
            bar.set_postfix_str(cell.label)
            rows, traces = cell.work()
            run.add_cell(cell.key, rows, traces)
    except KeyboardInterrupt:
        run.finish("interrupted")
        kept = len(run.completed())
        raise StudyInterrupted(
            f"interrupted; {kept} of {len(cells)} cells are kept in {run.path}; "
            f"continue with --resume {run.path}"
        ) from None
    run.finish("complete")
    return run.results()


#: flag columns of study frames, summarised as ``k/n`` (slices where the flag holds / slices with a value).
FLAG_COLUMNS = ("converged", "passes", "within", "same_fixed_point", "sense_in_ball", "rate_exceeds_L",
                "jacobian_converged", "probe_converged", "adv_converged")
#: residual columns, summarised by their largest value.
RESIDUAL_COLUMNS = ("residual", "backward_residual", "probe_residual", "adv_residual")
#: the solve-convergence flags a summary warns about, with the words for the solve.
CONVERGENCE_FLAGS = {"converged": "solve", "probe_converged": "probe's perturbed solve",
                     "adv_converged": "attacked solve"}


def summary_table(frame: pd.DataFrame, by: list[str], columns: list[str]) -> pd.DataFrame:
    """A printable frame of strings grouped by ``by``: mean ± std of ``columns``, except flags
    (:data:`FLAG_COLUMNS`, shown ``k/n``; an unconverged solve gets a ``!``) and residuals
    (:data:`RESIDUAL_COLUMNS`, the largest, ``max 1.2e-03``)."""
    present = [c for c in columns if c in frame]
    frame = frame.copy()
    for c in present:
        if c in FLAG_COLUMNS:
            frame[c] = as_bool(frame[c])
    grouped = frame.groupby(by, sort=False, dropna=False)[present]
    mean, std = grouped.mean(numeric_only=True), grouped.std(numeric_only=True).fillna(0.0)
    count, total, largest = grouped.sum(numeric_only=True), grouped.count(), grouped.max(numeric_only=True)
    out = mean.copy().astype(object)
    for c in mean.columns:
        if c in FLAG_COLUMNS:
            mark = "!" if c in CONVERGENCE_FLAGS else ""
            out[c] = [f"{int(k)}/{int(n)}" + (mark if k < n else "") if n > 0 else "—" for k, n in zip(count[c], total[c])]
        elif c in RESIDUAL_COLUMNS:
            out[c] = [f"max {v:.1e}" if pd.notna(v) else "—" for v in largest[c]]
        else:
            out[c] = [f"{m:.3f} ± {s:.3f}" if pd.notna(m) else "—" for m, s in zip(mean[c], std[c])]
    out["n"] = grouped.size()
    return out.reset_index()


def convergence_warnings(frame: pd.DataFrame, by: list[str]) -> list[str]:
    """One line per group of ``by`` in which a DEQ solve did not converge, e.g.
    ``mnmmol-4x, adversarial, 0.05: solve converged on 0 of 2 slices; these numbers are not of a fixed point``."""
    lines = []
    for column, what in CONVERGENCE_FLAGS.items():
        if column not in frame:
            continue
        flags = as_bool(frame[column])
        for key, rows in flags.groupby([frame[b] for b in by], sort=False, dropna=False):
            rows = rows.dropna()
            if len(rows) and rows.sum() < len(rows):
                label = ", ".join(f"{k:g}" if isinstance(k, float) else str(k) for k in (key if isinstance(key, tuple) else (key,)))
                lines.append(f"{label}: {what} converged on {int(rows.sum())} of {len(rows)} slices; "
                             "these numbers are not of a fixed point")
    return lines
