"""Reading a study run folder (layout in :mod:`robustkit.studies.rundir`) for the report.

:func:`load_run` checks the folder and returns a :class:`Run`; anything that makes the folder
unusable (missing, no ``config.json``/``meta.json``, unknown study, a complete run without
``results.csv``, columns missing) is a :class:`~robustkit.errors.RobustkitError` naming the folder
and the fix. A run still ``running`` or ``interrupted`` is usable: the report shows what is there
with a warning.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from robustkit.errors import RobustkitError
from robustkit.studies.flags import as_bool  # noqa: F401 - re-exported for report modules

#: study name → columns ``results.csv`` must hold for the report (schemas in each study module).
REQUIRED: dict[str, tuple[str, ...]] = {
    "attack": ("model", "sample", "kind", "eps", "psnr", "ssim", "psnr_drop"),
    "init-test": ("model", "sample", "start", "radius", "iterations", "residual", "converged", "same_fixed_point"),
    "audit": ("model", "sample", "threshold", "L", "L_slow", "passes", "amplification"),
    "sweep-delta": ("model", "sample", "delta", "psnr", "ssim", "within", "init_success"),
    "features": ("model", "sample", "feature", "size", "contrast", "search", "contrast_recovered", "error_feature",
                 "detected", "false_negative"),
    "bound": ("model", "sample", "eps", "estimator", "L", "m_eff", "measured", "bound", "status", "converged",
              "adv_converged"),
    "shift": ("model", "sample", "axis", "condition", "nominal", "psnr", "ssim", "psnr_drop"),
}

#: registry name (card's ``"model"``) → name used in the papers.
DISPLAY = {"modl": "MoDL", "mol": "MOL", "mol-sn": "MOL-SN", "mnmmol": "MnM-MOL"}
#: models solved as a fixed point (their audits have ``passes``).
DEQ = {"mol", "mol-sn", "mnmmol"}

EXAMPLE = re.compile(r"^(?P<model>.+)__(?P<kind>[^_]+(?:_[^_]+)*)__eps(?P<eps>[0-9.eE+-]+)\.npz$")
SUITE = "suite.json"


@dataclass
class Run:
    """One run folder, read. ``results``: the tidy frame (empty for a run with no cell done yet);
    ``traces``: ``traces.csv`` or ``None``; ``examples``: ``(model, kind, ε, path)`` of the saved
    example images; ``notes``: problems that do not stop the report (shown on the page)."""

    path: Path
    study: str
    config: dict[str, Any]
    meta: dict[str, Any]
    results: pd.DataFrame
    traces: pd.DataFrame | None = None
    examples: list[tuple[str, str, float, Path]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def status(self) -> str:
        return str(self.meta.get("status", "unknown"))

    @property
    def complete(self) -> bool:
        return self.status == "complete"

    def model_names(self) -> list[str]:
        """Zoo folder names in the order the run used them (meta.json, then results.csv)."""
        names = [str(m.get("name")) for m in self.meta.get("models", []) if isinstance(m, dict) and m.get("name")]
        if "model" in self.results:
            names += [str(n) for n in self.results["model"].dropna().unique() if str(n) not in names]
        return names

    def model_kind(self, name: str) -> str | None:
        """Registry name (``modl``, ``mnmmol``, …) of zoo entry ``name`` as recorded in meta.json."""
        for m in self.meta.get("models", []):
            if isinstance(m, dict) and m.get("name") == name:
                return m.get("model")
        return None

    def label(self, name: str) -> str:
        """``MnM-MOL (mnmmol-4x)``: the paper's name and the zoo folder; a user network whose class
        name is its name is shown once (``TinyNet``)."""
        kind = self.model_kind(name)
        if not kind or (kind == name and kind not in DISPLAY):
            return str(name)
        return f"{DISPLAY.get(kind, kind)} ({name})"

    def labels(self) -> dict[str, str]:
        return {n: self.label(n) for n in self.model_names()}

    def n_samples(self) -> int:
        return int(self.results["sample"].nunique()) if "sample" in self.results else 0


def _read_json(path: Path, run: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RobustkitError(f"{path} is not valid JSON ({exc}); the run {run} is damaged, rerun the study") from None


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()


def _committed(path: Path, results_path: Path, results: pd.DataFrame, notes: list[str]) -> pd.DataFrame:
    """``results`` without rows the run never committed: a last line cut mid-row (the file was
    truncated) and the rows of a cell whose commit record is missing (a kill between the writes;
    see :mod:`robustkit.studies.rundir`). Each drop is noted on the page."""
    with open(results_path, "rb") as fh:
        fh.seek(0, 2)
        size = fh.tell()
        fh.seek(max(0, size - 1))
        cut = size > 0 and fh.read(1) != b"\n"
    if cut and len(results):
        notes.append(f"{results_path.name} ends mid-row (the file was cut); its last row is left out")
        results = results.iloc[:-1]
    try:
        commits = json.loads((path / "cells.json").read_text())
        committed = commits[-1].get("results_rows") if commits and isinstance(commits[-1], dict) else None
    except (OSError, ValueError, AttributeError, TypeError):
        committed = None
    if isinstance(committed, int) and committed < len(results):
        notes.append(f"{len(results) - committed} row(s) of {results_path.name} belong to no completed cell; left out")
        results = results.iloc[:committed]
    return results


def load_run(path: str | Path) -> Run:
    """Read and check a run folder; raises :class:`RobustkitError` naming it when unusable."""
    from robustkit.studies import STUDIES

    path = Path(path)
    if not path.exists():
        raise RobustkitError(f"run folder {path} does not exist; check the path (runs are reports/<study>-<timestamp>/)")
    if not path.is_dir():
        raise RobustkitError(f"{path} is a file, not a run folder; pass the folder reports/<study>-<timestamp>/")
    if not (path / "config.json").is_file():
        raise RobustkitError(f"{path} is not a robustkit run folder (no config.json); pass a folder a study command wrote")
    config = _read_json(path / "config.json", path)
    if not isinstance(config, dict):
        raise RobustkitError(f"{path / 'config.json'} is not a JSON object; the run {path} is damaged, rerun the study")
    study = config.get("study")
    if study not in STUDIES:
        raise RobustkitError(
            f"{path} holds an unknown study {study!r} (config.json \"study\"); the report knows {', '.join(STUDIES)}"
        )
    if not (path / "meta.json").is_file():
        raise RobustkitError(f"{path} is incomplete (no meta.json); rerun the {study} study")
    meta = _read_json(path / "meta.json", path)
    if not isinstance(meta, dict):
        raise RobustkitError(f"{path / 'meta.json'} is not a JSON object; the run {path} is damaged, rerun the study")
    results_path = path / "results.csv"
    notes: list[str] = []
    status = meta.get("status")
    if results_path.is_file():
        try:
            results = _read_csv(results_path)
        except (pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise RobustkitError(f"{results_path} cannot be read ({exc}); the run {path} is damaged, rerun the study") from None
        results = _committed(path, results_path, results, notes)
    elif status == "complete":
        raise RobustkitError(f"{path} is incomplete (status complete but no results.csv); rerun the {study} study")
    else:
        results = pd.DataFrame()
    if len(results):
        missing = [c for c in REQUIRED[study] if c not in results]
        if missing:
            raise RobustkitError(
                f"{results_path} lacks the {study} column(s) {', '.join(missing)}; "
                f"it was not written by this version's {study} study, rerun it"
            )
    if status == "failed":
        notes.append(f"the run failed ({meta.get('error', 'no reason recorded')}); continue it with --resume {path}")
    elif status not in ("complete", "running", "interrupted"):
        notes.append(f"meta.json has status {status!r}; expected complete, running, interrupted or failed")
    notes += model_notes(meta)
    traces = None
    if (path / "traces.csv").is_file():
        try:
            traces = _read_csv(path / "traces.csv")
        except (pd.errors.ParserError, UnicodeDecodeError) as exc:
            notes.append(f"traces.csv cannot be read ({exc}); trace figures are left out")
    examples = []
    if (path / "examples").is_dir():
        for p in sorted((path / "examples").glob("*.npz")):
            m = EXAMPLE.match(p.name)
            if m is None:
                notes.append(f"examples/{p.name} is not named <model>__<kind>__eps<ε>.npz; left out")
                continue
            try:
                eps = float(m["eps"])
            except ValueError:
                notes.append(f"examples/{p.name} has no number after 'eps'; left out")
                continue
            examples.append((m["model"], m["kind"], eps, p))
    return Run(path, study, config, meta, results, traces, examples, notes)


def model_notes(meta: dict[str, Any]) -> list[str]:
    """One note per model of meta.json run on data other than its training data (size,
    acceleration or dataset; :mod:`robustkit.models.mismatch`), one per model whose card records
    a failed convergence gate, and one per MnM-MOL that leaks towards a frozen MoDL."""
    from robustkit.models.mismatch import anchor_text, gate_text, mismatch_text

    models = [m for m in meta.get("models", []) if isinstance(m, dict)]
    return ([mismatch_text(str(m.get("name")), m["mismatch"]) for m in models
             if isinstance(m.get("mismatch"), dict) and m["mismatch"]]
            + [gate_text(str(m.get("name")), [str(c) for c in m["gate_failed"]]) for m in models
               if isinstance(m.get("gate_failed"), list) and m["gate_failed"]]
            + [anchor_text(str(m.get("name"))) for m in models if m.get("anchor") == "modl"])


def is_suite(path: Path) -> bool:
    return (path / SUITE).is_file()


def is_run(path: Path) -> bool:
    return (path / "config.json").is_file()


def run_folders(root: Path) -> list[Path]:
    """The run and suite folders directly inside ``root`` (unsorted); ``[]`` for a file or a missing path."""
    if not root.is_dir():
        return []
    return [p for p in root.iterdir() if p.is_dir() and (is_run(p) or is_suite(p))]
