"""What every study shares: its config base, the data and models it runs on, and the cell runner
that writes a :class:`~robustkit.studies.rundir.RunDir` and survives Ctrl-C."""

from __future__ import annotations

import dataclasses
import datetime
import math
import types
import typing
from dataclasses import dataclass, field, fields
from typing import Any, Callable, ClassVar, Iterable

import pandas as pd
import torch

from robustkit.errors import RobustkitError, StudyInterrupted, check_finite_fields, exception_line
from robustkit.models.adapter import ModelAdapter
from robustkit.studies.flags import as_bool

#: default zoo references of the models a study runs on (registry names resolve to default entries).
DEFAULT_MODELS = ["modl", "mol", "mnmmol"]
DEFAULT_DEQ_MODELS = ["mol", "mnmmol"]


@dataclass
class StudyConfig:
    """Settings every study has.

    models: zoo references (a registry name such as ``mnmmol`` means its default zoo entry),
    plug-in specs (``FILE.py:FACTORY``, ``package.module:FACTORY``) or ``nn.Module`` objects
    (docs/api.md).
    data: ``builtin`` or a prepared HDF5 file, read at its own image size; split: its split
    (``None``: ``test`` when the file has splits, else every sample; ``all``: every sample; the run
    records the split it read); accel: acceleration of the masks
    (fixed per slice by ``seed``); samples: the first N slices of the split (``None`` = all);
    batch_size: slices per batch; seed: every random draw of the study.

    :meth:`from_mapping` (study files, CLI options) converts each value strictly by the field's
    annotation: ``int`` takes integers only (not ``1.5``, ``"2"`` or ``true``), ``float`` takes
    integers and floats, ``bool`` only ``true``/``false``, ``list[T]`` a list of T or a single T.
    """

    #: a study that may run without models (it searches the zoo) sets this to False.
    models_required: ClassVar[bool] = True

    # list[str] in study files and on the command line; Python callers may also pass nn.Module objects
    models: list[str] = field(default_factory=lambda: list(DEFAULT_MODELS))
    data: str = "builtin"
    split: str | None = None
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
        check_finite_fields(self)  # after the checks above, whose messages also give the range

    def to_dict(self) -> dict[str, Any]:
        """Every key, JSON-ready: a network object in ``models`` becomes ``name@sha256:…``."""
        from robustkit.models.adapter import object_label

        out = dataclasses.asdict(dataclasses.replace(self, models=[]))
        out["models"] = [object_label(m) for m in self.models]
        return out

    @classmethod
    def from_mapping(cls, mapping: dict[str, Any], where: str = "config") -> "StudyConfig":
        """Build from a mapping (a TOML table or CLI options), each value checked against its
        field's type; an unknown key or a wrong type is an error naming ``where``, the key, the
        expected type and the value."""
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(mapping) - set(known))
        if unknown:
            import difflib

            close = difflib.get_close_matches(unknown[0].replace("-", "_"), list(known), n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise RobustkitError(
                f"unknown key {unknown[0]!r} in {where}; {hint}known keys: {', '.join(sorted(known))}"
            )
        hints = typing.get_type_hints(cls)
        values = {key: convert(value, hints[key], key, where, objects=key in _OBJECT_FIELDS)
                  for key, value in mapping.items()}
        config = cls(**values)
        try:
            config.validate()
        except RobustkitError as exc:
            if where.startswith("[") and where not in str(exc):  # a study file: name its table and file
                raise RobustkitError(f"{exc} (in {where})") from None
            raise
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


@dataclass
class EstimatorConfig(StudyConfig):
    """The settings of the lower bounds of ``L[H_θ](x*; δ)`` (docs/maths.md §6), shared by the studies
    that estimate it (audit, bound, sweep-delta): steps, restarts of the random-start ascent;
    slow_steps of each seeded ascent; power_iters, power_tol of the Jacobian-norm estimator (Lanczos
    steps cap, plateau tolerance). The ball's δ is :class:`BallConfig`'s."""

    steps: int = 20
    restarts: int = 2
    slow_steps: int = 10
    power_iters: int = 100
    power_tol: float = 1e-4

    def validate(self) -> None:
        super().validate()
        if min(self.steps, self.restarts, self.slow_steps, self.power_iters) < 1:
            raise RobustkitError("steps, restarts, slow_steps and power_iters must be >= 1")
        if not self.power_tol > 0:
            raise RobustkitError(f"power_tol must be > 0, got {self.power_tol}")


@dataclass
class BallConfig(EstimatorConfig):
    """:class:`EstimatorConfig` at one ball radius for every model (audit, bound): delta (``None`` =
    each model's own δ, 0.3 without one)."""

    delta: float | None = None

    def validate(self) -> None:
        super().validate()
        if self.delta is not None and not self.delta > 0:
            raise RobustkitError(f"delta must be > 0, got {self.delta}")


def check_eps(values: Iterable[Any], positive: str | None = None, name: str = "eps") -> list[float]:
    """A grid of relative sizes (ε, noise σ): numbers ≥ 0, at least one; with ``positive`` (why 0
    means nothing here) numbers > 0. The one check for the CLI and the study files alike."""
    out = []
    bound = "> 0" if positive else ">= 0"
    hint = f"; e.g. --{name} 0.05 is 5 % of ‖b‖" if name == "eps" else ""
    for v in values:
        try:
            e = float(v)
        except (TypeError, ValueError):
            raise RobustkitError(f"{name} must be a number {bound}, got {v!r}{hint}") from None
        if not math.isfinite(e) or e < 0 or (positive and e == 0):
            why = f" ({positive})" if e == 0 else ""
            raise RobustkitError(f"{name} must be a finite number {bound}, got {v!r}{why}{hint}")
        out.append(e)
    if not out:
        raise RobustkitError(f"the {name} grid is empty; give at least one value{hint.replace('; e.g.', ', e.g.')}")
    return out


# ----------------------------------------------------------------------------- data and models


def study_data(config: StudyConfig):
    """``(dataset, info)``: the evaluation slices (masks fixed per slice, drawn from ``seed``, no
    noise) at the data's own size, and the :class:`~robustkit.data.evaluation.EvalData` read; sets
    ``config.split`` to the split read (e.g. ``all`` for a file without splits)."""
    from robustkit.data.evaluation import eval_dataset

    ds, info = eval_dataset(config.data, config.split, config.accel, config.seed, config.samples)
    config.split = info.split
    return ds, info


def study_dataset(config: StudyConfig):
    """The evaluation slices of :func:`study_data`."""
    return study_data(config)[0]


#: the studies' model record (every model is a ModelAdapter, docs/api.md); the old name is kept.
LoadedModel = ModelAdapter


def load_models(refs: Iterable[Any], dataset, accel: float, device: torch.device,
                data: str = "builtin") -> list[ModelAdapter]:
    """The study's models as :class:`~robustkit.models.adapter.ModelAdapter`: baselines (``sense``,
    ``l1-wavelet``), zoo references, plug-in specs (``FILE.py:FACTORY``, ``package.module:FACTORY``) and ``nn.Module`` objects. Names
    are made unique (``-2``, ``-3``, … appended). A zoo model trained at another size, acceleration
    or on other data than ``data`` still runs (F_θ is fully convolutional, the operator comes from
    the data): the difference is kept in ``mismatch`` and issued as a one-line warning."""
    from robustkit.models.adapter import as_model
    from robustkit.errors import warn
    from robustkit.models.mismatch import anchor_text, failed_gate, gate_text, has_modl_anchor, warn_mismatch
    from robustkit.models.zoo import load_model, zoo_references

    shape = list(dataset[0]["target"].shape[-2:])
    refs = list(refs)
    zoo = zoo_references(refs)  # one model per folder: `modl` and `modl-4x` may be one
    out: list[ModelAdapter] = []
    for i, ref in enumerate(refs):
        if i not in zoo:
            adapter = as_model(ref, map_location=str(device))
            check = getattr(adapter.model, "check_shape", None)  # a baseline that cannot take this size says so now
            if callable(check):
                check(tuple(shape))
            out.append(adapter)
            continue
        if zoo[i] is None:
            continue
        folder, name = zoo[i]
        model, card = load_model(str(folder), map_location=str(device))
        adapter = ModelAdapter(name, model, card)
        adapter.mismatch = warn_mismatch(name, card, data, shape, accel)
        failed = failed_gate(card)
        if failed:
            warn(gate_text(name, failed))
        if has_modl_anchor(card):
            warn(anchor_text(name))
        out.append(adapter)
    return unique_names(out)


def unique_names(models: list[ModelAdapter]) -> list[ModelAdapter]:
    """Rename repeated names ``name-2``, ``name-3``, … (results are keyed by model name)."""
    taken: set[str] = set()
    for m in models:
        base, n = m.name, 1
        while m.name in taken:
            n += 1
            m.name = f"{base}-{n}"
        taken.add(m.name)
    return models


def probe_models(models: list[ModelAdapter], dataset, device: torch.device) -> None:
    """Reconstruct the first slice once (no gradient) with each user model (a plug-in or a Python
    object), so that a model that raises, returns the wrong shape or NaN is refused in one line
    (:meth:`ModelAdapter.solve`) before a run folder exists. robustkit's own models and the
    baselines are not probed."""
    user = [m for m in models if m.user_code]
    if not user:
        return
    from robustkit.batch import operator_of

    batch = next(batches(torch.utils.data.Subset(dataset, [0]), 1, device))
    op = operator_of(batch)
    for m in user:
        with torch.no_grad():
            m.solve(batch["kspace"], op)


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


class CellFailed(Exception):
    """A cell's work raised: ``label`` names the cell, ``__cause__`` is what it raised."""

    def __init__(self, label: str):
        super().__init__(label)
        self.label = label


def cell_seed(seed: int, key: str) -> int:
    """The seed of the global torch generator while cell ``key`` runs: a hash of the study's
    ``seed`` and the key, so a cell draws the same numbers whichever process runs it and whatever
    ran before it (docs/distributed.md)."""
    import hashlib

    return int.from_bytes(hashlib.sha256(f"{seed}|{key}".encode()).digest()[:8], "little") % 2**63


def work(target, todo: list[Cell], desc: str, progress: bool = True, seed: int | None = None) -> None:
    """Run ``todo`` in order, committing each cell to ``target`` (a RunDir) as it finishes; with
    ``seed`` the global torch generator is seeded by :func:`cell_seed` before each cell. A cell that
    raises is re-raised as :class:`CellFailed` (Ctrl-C passes through)."""
    from tqdm.auto import tqdm

    bar = tqdm(todo, desc=desc, disable=not progress, leave=False)
    for cell in bar:
        bar.set_postfix_str(cell.label)
        if seed is not None:
            torch.manual_seed(cell_seed(seed, cell.key))
        try:
            rows, traces = cell.work()
            target.add_cell(cell.key, rows, traces)
        except Exception as exc:
            raise CellFailed(cell.label) from exc


def reason(exc: BaseException) -> str:
    """One line saying why ``exc`` happened (its type too unless it is a RobustkitError)."""
    if not isinstance(exc, RobustkitError):
        return exception_line(exc)
    return str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__


def run_cells(run, cells: list[Cell], progress: bool = True, ctx=None, seed: int | None = None) -> pd.DataFrame:
    """Run the cells not yet completed in ``run``, saving each as it finishes.

    Ctrl-C keeps the finished cells, marks the run ``interrupted`` and raises
    :class:`StudyInterrupted`; any other exception (a full disk, a bad model, a bug) keeps them,
    marks the run ``failed`` with the reason in ``meta.json`` and raises a one-line
    :class:`RobustkitError` (chained to the cause); both name the ``--resume`` path.

    ``ctx`` (a :class:`~robustkit.distributed.DistContext`): under several ranks, or in a run
    folder that holds shards, the cells are split across the ranks and merged by
    :func:`robustkit.studies.shards.run_sharded`. ``seed``: see :func:`work`."""
    from robustkit.studies import shards

    if (ctx is not None and ctx.distributed) or shards.is_sharded(run):
        return shards.run_sharded(run, cells, ctx, progress, seed)
    done = run.completed()
    todo = [c for c in cells if c.key not in done]
    try:
        work(run, todo, run.study, progress, seed)
    except KeyboardInterrupt:
        kept = _stop(run, "interrupted")
        raise StudyInterrupted(
            f"interrupted; {kept} of {len(cells)} cells are kept in {run.path}; "
            f"continue with --resume {run.path}"
        ) from None
    except CellFailed as failed:
        exc = failed.__cause__
        why = reason(exc)
        kept = _stop(run, "failed", f"{failed.label}: {why}")
        raise RobustkitError(
            f"the {run.study} run failed in cell {failed.label!r} ({why}); {kept} of {len(cells)} cells are kept "
            f"in {run.path}; {resume_hint(run.path)}"
        ) from exc
    run.finish("complete")
    return run.results()


def resume_hint(path) -> str:
    """What to do after a failed cell: a resume keeps the run's settings, so it helps only when the
    cause lies outside them."""
    return (f"if the cause lies outside the run's settings (memory, disk, a file), fix it and continue with --resume {path}; "
            "a resume keeps the settings, so for a different setting start a new run")


#: flag columns of study frames, summarised as ``k/n`` (slices where the flag holds / slices with a value).
FLAG_COLUMNS = ("converged", "passes", "within", "same_fixed_point", "sense_in_ball", "rate_exceeds_L",
                "jacobian_converged", "probe_converged", "adv_converged")
#: residual columns, summarised by their largest value.
RESIDUAL_COLUMNS = ("residual", "backward_residual", "probe_residual", "adv_residual")
#: the solve-convergence flags a summary warns about, with the words for the solve.
CONVERGENCE_FLAGS = {"converged": "solve", "probe_converged": "probe's perturbed solve",
                     "adv_converged": "attacked solve"}
#: residual columns whose solves have a per-row converged fraction (the attack's implicit backward:
#: the share of PGD steps whose backward solve converged); a group below 1 gets a ``!`` and a warning.
RESIDUAL_FLAGS = {"backward_residual": "backward_converged"}


def _stop(run, status: str, error: str | None = None) -> int:
    """Record that the run stopped (best effort: the disk may be full) and count the kept cells."""
    try:
        run.finish(status, error)
        return len(run.completed())
    except (OSError, RobustkitError):
        return len(run.completed()) if (run.path / "cells.json").exists() else 0


def _number(v: float) -> str:
    """Three decimals, or three significant digits below 0.01 (a distance of 5e-4 is not 0.001)."""
    return f"{v:.3f}" if v == 0 or abs(v) >= 0.01 else f"{v:.2e}"


def summary_table(frame: pd.DataFrame, by: list[str], columns: list[str]) -> pd.DataFrame:
    """A printable frame of strings grouped by ``by``: mean ± std of ``columns``, except flags
    (:data:`FLAG_COLUMNS`, shown ``k/n``; an unconverged solve gets a ``!``), residuals
    (:data:`RESIDUAL_COLUMNS`, the largest, ``max 1.2e-03``, with a ``!`` when a solve behind it did
    not converge, :data:`RESIDUAL_FLAGS`) and text columns (the count of each value, ``holds 3,
    violated 1``)."""
    present = [c for c in columns if c in frame]
    frame = frame.copy()
    for c in present:
        if c in FLAG_COLUMNS:
            frame[c] = as_bool(frame[c])
    groups = frame.groupby(by, sort=False, dropna=False)
    grouped = groups[present]
    mean, std = grouped.mean(numeric_only=True), grouped.std(numeric_only=True)  # NaN for one slice: no spread known
    count, total, largest = grouped.sum(numeric_only=True), grouped.count(), grouped.max(numeric_only=True)
    out = mean.copy().astype(object)
    for c in mean.columns:
        if c in FLAG_COLUMNS:
            mark = "!" if c in CONVERGENCE_FLAGS else ""
            out[c] = [f"{int(k)}/{int(n)}" + (mark if k < n else "") if n > 0 else "—" for k, n in zip(count[c], total[c])]
        elif c in RESIDUAL_COLUMNS:
            flag = RESIDUAL_FLAGS.get(c)
            least = (groups[flag].min() if flag in frame else pd.Series(float("nan"), index=largest.index)).reindex(largest.index)
            out[c] = [f"max {v:.1e}" + (" !" if pd.notna(f) and f < 1 else "") if pd.notna(v) else "—"
                      for v, f in zip(largest[c], least)]
        else:
            out[c] = [("—" if pd.isna(m) else _number(m) if pd.isna(s) else f"{_number(m)} ± {_number(s)}")
                      for m, s in zip(mean[c], std[c])]
    for c in present:
        if c not in mean.columns and c not in FLAG_COLUMNS:  # text: how often each value occurs
            out[c] = [", ".join(f"{v} {n}" for v, n in values.value_counts().items()) or "—" for _, values in groups[c]]
    out = out[[c for c in present if c in out.columns]]
    out["n"] = grouped.size()
    out = out.reset_index()
    for c in by:  # a group without that setting (init-test's radius of a non-ball start): a dash, not NaN
        if out[c].isna().any():
            out[c] = out[c].astype(object).where(out[c].notna(), "—")
    return out


def _group_label(by: list[str], key: Any) -> str:
    """``mnmmol-4x, adversarial, ε = 0.05`` for the group ``key`` of ``by``."""
    keys = key if isinstance(key, tuple) else (key,)
    return ", ".join(f"{'ε' if b == 'eps' else b} = {k:g}" if isinstance(k, float) else str(k) for b, k in zip(by, keys))


def convergence_warnings(frame: pd.DataFrame, by: list[str]) -> list[str]:
    """One line per group of ``by`` in which a DEQ solve did not converge, e.g.
    ``mnmmol-4x, adversarial, ε = 0.05: solve converged on 0 of 2 slices; these numbers are not of a fixed point``,
    and one per group whose attack's implicit backward did not converge at every step."""
    lines = []
    for column, what in CONVERGENCE_FLAGS.items():
        if column not in frame:
            continue
        flags = as_bool(frame[column])
        for key, rows in flags.groupby([frame[b] for b in by], sort=False, dropna=False):
            rows = rows.dropna()
            if len(rows) and rows.sum() < len(rows):
                n = len(rows)
                lines.append(f"{_group_label(by, key)}: {what} converged on {int(rows.sum())} of {n} "
                             f"slice{'s' if n != 1 else ''}; these numbers are not of a fixed point")
    for residual, column in RESIDUAL_FLAGS.items():
        if column not in frame:
            continue
        shares = pd.to_numeric(frame[column], errors="coerce")
        for key, rows in shares.groupby([frame[b] for b in by], sort=False, dropna=False):
            rows = rows.dropna()
            if len(rows) and rows.min() < 1:
                worst = pd.to_numeric(frame.loc[rows.index, residual], errors="coerce").max()
                lines.append(f"{_group_label(by, key)}: the implicit backward behind the attack's gradients converged "
                             f"on {100 * rows.mean():.0f} % of steps (largest residual {worst:.1e}); the attack followed "
                             "an approximate gradient, so its damage is a lower estimate")
    return lines
