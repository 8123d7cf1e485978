"""What every study shares: its config base, the data and models it runs on, and the cell runner
that writes a :class:`~robustkit.studies.rundir.RunDir` and survives Ctrl-C."""

from __future__ import annotations

import dataclasses
import datetime
import math
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable

import pandas as pd
import torch

from robustkit.errors import RobustkitError, StudyInterrupted

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

    :meth:`from_mapping` (study files, CLI options) converts each value strictly by the field's
    annotation: ``int`` takes integers only (not ``1.5``, ``"2"`` or ``true``), ``float`` takes
    integers and floats, ``bool`` only ``true``/``false``, ``list[T]`` a list of T or a single T.
    """

    #: a study that may run without models (it searches the zoo) sets this to False.
    models_required: ClassVar[bool] = True

    models: list[str] = field(default_factory=lambda: list(DEFAULT_MODELS))
    data: str = "builtin"
    split: str = "test"
    accel: float = 4.0
    samples: int | None = None
    batch_size: int = 2
    seed: int = 0

    def validate(self) -> None:
        if self.models_required and not self.models:
            raise RobustkitError("no models given; name at least one, e.g. --model mnmmol")
        if self.samples is not None and self.samples < 1:
            raise RobustkitError(f"samples must be >= 1, got {self.samples}")
        if self.batch_size < 1:
            raise RobustkitError(f"batch_size must be >= 1, got {self.batch_size}")
        if not (isinstance(self.accel, (int, float)) and math.isfinite(self.accel) and self.accel >= 1):
            raise RobustkitError(f"accel must be a finite number >= 1, got {self.accel!r}")
        if self.seed < 0:
            raise RobustkitError(f"seed must be >= 0, got {self.seed}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_mapping(cls, mapping: dict[str, Any], where: str = "config") -> "StudyConfig":
        """Build from a mapping (a TOML table or CLI options), each value checked against its
        field's type; an unknown key or a wrong type is an error naming ``where``, the key, the
        expected type and the value."""
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(mapping) - set(known))
        if unknown:
            raise RobustkitError(
                f"unknown key {unknown[0]!r} in {where}; known keys: {', '.join(sorted(known))}"
            )
        hints = typing.get_type_hints(cls)
        values = {key: convert(value, hints[key], key, where, objects=key in _OBJECT_FIELDS)
                  for key, value in mapping.items()}
        config = cls(**values)
        config.validate()
        return config


#: list fields whose items may also be Python objects (models built in Python, not zoo names).
_OBJECT_FIELDS = ("models",)
#: what a study file or the command line can hold that is not a Python object.
_PLAIN = (bool, int, float, str, list, tuple, dict, type(None), datetime.date, datetime.time)
_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    kind = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
            dict: "a table"}.get(type(value), type(value).__name__)
    return f"{value!r} ({kind})"


def convert(value: Any, annotation: Any, key: str, where: str, objects: bool = False) -> Any:
    """``value`` as the type ``annotation`` (``int``, ``float``, ``str``, ``bool``, ``T | None``,
    ``list[T]``), strictly: no bool for a number, no float for an int, no string for a number.
    ``objects``: list items may also be non-plain Python objects (kept as they are)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        if value is None and len(inner) < len(args):
            return None
        for option in inner:  # the first type that takes the value
            try:
                return convert(value, option, key, where, objects)
            except RobustkitError:
                continue
        expected = " or ".join(_expected(a) for a in inner) + (" or left out" if len(inner) < len(args) else "")
        raise RobustkitError(f"{where}: {key} must be {expected}, got {_describe(value)}; fix the value")
    if origin is list:
        (item,) = args
        items = list(value) if isinstance(value, (list, tuple)) else [value]
        out = []
        for v in items:
            if objects and not isinstance(v, _PLAIN):
                out.append(v)
                continue
            try:
                out.append(convert(v, item, key, where))
            except RobustkitError:
                raise RobustkitError(
                    f"{where}: {key} must be {_expected(annotation)}, got {_describe(value)}; fix the value"
                ) from None
        return out
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, str),
    }.get(annotation)
    if ok is None:  # pragma: no cover - a field type this converter does not know
        raise TypeError(f"no conversion for {key}: {annotation!r}")
    if not ok:
        raise RobustkitError(f"{where}: {key} must be {_expected(annotation)}, got {_describe(value)}; fix the value")
    return float(value) if annotation is float else value


def _expected(annotation: Any) -> str:
    if typing.get_origin(annotation) is list:
        (item,) = typing.get_args(annotation)
        return f"a list of {_NAMES[item].removeprefix('an ').removeprefix('a ')}s" if item is not bool else "a list of true/false"
    return _NAMES.get(annotation, str(annotation))


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
        """What ``meta.json`` records of the model; ``--resume`` refuses a change in either digest."""
        from robustkit.hashing import sha256_json

        return {"name": self.name, "model": self.card.get("model"), "weights_sha256": self.card.get("weights_sha256"),
                "config_sha256": sha256_json(self.card.get("config", {}))}


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
    """Run the cells not yet completed in ``run``, saving each as it finishes.

    Ctrl-C keeps the finished cells, marks the run ``interrupted`` and raises
    :class:`StudyInterrupted`; any other exception (a full disk, a bad model, a bug) keeps them,
    marks the run ``failed`` with the reason in ``meta.json`` and raises a one-line
    :class:`RobustkitError` (chained to the cause); both name the ``--resume`` path."""
    from tqdm.auto import tqdm

    done = run.completed()
    todo = [c for c in cells if c.key not in done]
    bar = tqdm(todo, desc=run.study, disable=not progress, leave=False)
    label = ""
    try:
        for cell in bar:
            label = cell.label
            bar.set_postfix_str(cell.label)
            rows, traces = cell.work()
            run.add_cell(cell.key, rows, traces)
    except KeyboardInterrupt:
        kept = _stop(run, "interrupted")
        raise StudyInterrupted(
            f"interrupted; {kept} of {len(cells)} cells are kept in {run.path}; "
            f"continue with --resume {run.path}"
        ) from None
    except Exception as exc:
        reason = str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__
        if not isinstance(exc, RobustkitError):
            reason = f"{type(exc).__name__}: {reason}"
        kept = _stop(run, "failed", f"{label}: {reason}")
        raise RobustkitError(
            f"the {run.study} run failed in cell {label!r} ({reason}); {kept} of {len(cells)} cells are kept "
            f"in {run.path}; fix the cause and continue with --resume {run.path}"
        ) from exc
    run.finish("complete")
    return run.results()


def _stop(run, status: str, error: str | None = None) -> int:
    """Record that the run stopped (best effort: the disk may be full) and count the kept cells."""
    try:
        run.finish(status, error)
        return len(run.completed())
    except (OSError, RobustkitError):
        return len(run.completed()) if (run.path / "cells.json").exists() else 0


def summary_table(frame: pd.DataFrame, by: list[str], columns: list[str]) -> pd.DataFrame:
    """Mean ± std of ``columns`` grouped by ``by`` as a printable frame of strings."""
    present = [c for c in columns if c in frame]
    grouped = frame.groupby(by, sort=False, dropna=False)[present]
    mean, std = grouped.mean(numeric_only=True), grouped.std(numeric_only=True).fillna(0.0)
    out = mean.copy().astype(object)
    for c in mean.columns:
        out[c] = [f"{m:.3f} ± {s:.3f}" if pd.notna(m) else "—" for m, s in zip(mean[c], std[c])]
    out["n"] = grouped.size()
    return out.reset_index()
