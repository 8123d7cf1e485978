"""A study run's folder ``reports/<study>-<timestamp>/`` and what it holds.

Layout (read by :mod:`robustkit.report`):

- ``config.json``  the study's config (every key, defaults filled in) and ``"study"``.
- ``meta.json``    package versions, git revision, seed, device, command, start/finish times,
  ``status`` (``"running"``, ``"complete"``, ``"interrupted"`` or ``"failed"`` with ``"error"``),
  the models used with their weights' sha256 and their card config's sha256.
- ``results.csv``  the tidy frame (one row per sample × condition; schema in each study module).
- ``cells.json``   the commit record: one entry per completed cell, in order,
  ``{"key": ..., "results_rows": N, "traces_rows": M}`` with N, M the row counts of
  ``results.csv`` and ``traces.csv`` once that cell was added (what ``--resume`` skips).
- ``traces.csv``   optional long-format traces (solver residuals, ascent estimates, attack losses).
- ``examples/``    optional ``.npz`` example images (attack study).

A run never overwrites an earlier one: a new folder gets a fresh name; ``resume`` reopens an
existing folder whose stored config and models (weights and card config digests) equal the new
ones.

A cell is committed by its ``cells.json`` entry, written last: rows beyond the committed counts
(a kill between the writes of a cell) are ignored and overwritten by the next cell, so a kill at
any instant never duplicates or loses a cell. Every file is replaced atomically
(:mod:`robustkit.io`).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from robustkit.errors import RobustkitError
from robustkit.io import os_error, read_json, write_json, write_text

PACKAGES = ("robustkit", "torch", "numpy", "pandas", "scipy", "torchattacks", "h5py", "seaborn")


def git_revision() -> str | None:
    """The checkout's commit (with ``+dirty`` when the tree has changes), or ``None`` outside git."""
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10)
        return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    out["python"] = platform.python_version()
    return out


class RunDir:
    """One study run's folder. ``RunDir.create(root, study, config, meta)`` or
    ``RunDir.resume(path, study, config, models)``."""

    def __init__(self, path: Path, study: str):
        self.path, self.study = Path(path), study

    # ------------------------------------------------------------------ opening
    @classmethod
    def create(cls, root: str | os.PathLike, study: str, config: dict[str, Any], meta: dict[str, Any]) -> "RunDir":
        root = Path(root)
        if root.exists() and not root.is_dir():
            raise RobustkitError(f"{root} is a file, not a folder; pass another --reports-dir")
        stamp = time.strftime("%Y%m%d-%H%M%S")
        try:
            root.mkdir(parents=True, exist_ok=True)
            for n in range(1, 1000):
                path = root / (f"{study}-{stamp}" if n == 1 else f"{study}-{stamp}-{n}")
                try:
                    path.mkdir()
                    break
                except FileExistsError:
                    continue
            else:  # pragma: no cover - a thousand runs in one second
                raise RobustkitError(f"could not find a free run folder name in {root}")
        except OSError as exc:
            raise os_error(exc, root, "create a run folder in") from None
        run = cls(path, study)
        try:
            write_json(path / "config.json", {"study": study, **config})
            write_json(path / "cells.json", [])
            run.write_meta({**meta, "status": "running", "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        except RobustkitError:
            for name in ("meta.json", "cells.json", "config.json"):
                (path / name).unlink(missing_ok=True)
            path.rmdir()
            raise
        return run

    @classmethod
    def resume(cls, path: str | os.PathLike, study: str, config: dict[str, Any],
               models: Iterable[dict[str, Any]] = ()) -> "RunDir":
        """Reopen ``path`` after checking that its study, settings and models are the same; only
        then is its status set back to running (a refused resume changes nothing)."""
        path = Path(path)
        if not (path / "config.json").exists():
            raise RobustkitError(f"{path} is not a robustkit run folder (no config.json); check the --resume path")
        damaged = "the run folder is damaged: start a new run without --resume"
        stored = read_json(path / "config.json", "the run's config", damaged)
        if not isinstance(stored, dict):
            raise RobustkitError(f"the run's config {path / 'config.json'} is not a JSON object; {damaged}")
        if stored.get("study") != study:
            raise RobustkitError(f"{path} holds a {stored.get('study')!r} run, not {study!r}; resume it with its own command")
        wanted = json.loads(json.dumps({"study": study, **config}, default=str))
        if stored != wanted:
            changed = sorted(k for k in set(stored) | set(wanted) if stored.get(k) != wanted.get(k))
            raise RobustkitError(
                f"the settings differ from the run being resumed in {path} (keys: {', '.join(changed)}); "
                "use the same settings or start a new run without --resume"
            )
        run = cls(path, study)
        run._commits()  # a damaged cells.json is refused here, before anything is written
        meta = run.meta()
        _check_same_models(path, meta.get("models", []), list(models))
        run.write_meta({**meta, "status": "running"})
        return run

    # ------------------------------------------------------------------ contents
    def meta(self) -> dict[str, Any]:
        p = self.path / "meta.json"
        if not p.exists():
            return {}
        meta = read_json(p, "the run's meta", "the run folder is damaged: start a new run without --resume")
        if not isinstance(meta, dict):
            raise RobustkitError(f"the run's meta {p} is not a JSON object; start a new run without --resume")
        return meta

    def write_meta(self, meta: dict[str, Any]) -> None:
        write_json(self.path / "meta.json", meta)

    def finish(self, status: str, error: str | None = None) -> None:
        extra = {"error": error} if error else {}
        self.write_meta({**self.meta(), "status": status, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **extra})

    def _commits(self) -> list[dict[str, Any]]:
        """The commit record (``cells.json``); the old form, a list of keys, is read as well."""
        p = self.path / "cells.json"
        record = read_json(p, "the run's cell record", "the run folder is damaged: start a new run without --resume")
        ok = isinstance(record, list) and all(
            isinstance(e, str) or (isinstance(e, dict) and isinstance(e.get("key"), str)) for e in record)
        if not ok:
            raise RobustkitError(f"the run's cell record {p} is not a list of cells; start a new run without --resume")
        return [e if isinstance(e, dict) else {"key": e} for e in record]

    def completed(self) -> set[str]:
        return {e["key"] for e in self._commits()}

    def _committed_rows(self, name: str) -> int | None:
        """Rows of ``name`` that belong to committed cells (``None``: not recorded, trust the file)."""
        commits = self._commits()
        if not commits:
            return 0
        return commits[-1].get(f"{Path(name).stem}_rows")

    def _read(self, name: str) -> pd.DataFrame:
        """The committed rows of ``results.csv`` or ``traces.csv`` (empty when there are none)."""
        p = self.path / name
        n = self._committed_rows(name)
        if not p.exists() or n == 0:
            return pd.DataFrame()
        frame = pd.read_csv(p)
        return frame if n is None else frame.iloc[:n]

    def results(self) -> pd.DataFrame:
        return self._read("results.csv")

    def add_cell(self, key: str, rows: pd.DataFrame, traces: pd.DataFrame | None = None) -> None:
        """Add one completed cell: its rows (and traces) after the committed ones, then the commit
        record. Until the record is written the cell does not count, and its rows are ignored."""
        commit: dict[str, Any] = {"key": key}
        for name, frame in (("results.csv", rows), ("traces.csv", traces)):
            old = self._read(name)
            if frame is not None and len(frame):
                new = frame if old.empty else pd.concat([old, frame], ignore_index=True)
                write_text(self.path / name, new.to_csv(index=False))
                commit[f"{Path(name).stem}_rows"] = len(new)
            else:
                commit[f"{Path(name).stem}_rows"] = len(old)
        write_json(self.path / "cells.json", [e for e in self._commits() if e["key"] != key] + [commit])

    def examples_dir(self) -> Path:
        p = self.path / "examples"
        p.mkdir(exist_ok=True)
        return p


def _check_same_models(path: Path, stored: list[Any], current: list[dict[str, Any]]) -> None:
    """Refuse to resume when a model's weights or card config changed since the run started."""
    before = {m.get("name"): m for m in stored if isinstance(m, dict)}
    for m in current:
        old = before.get(m.get("name"))
        if old is None:
            continue  # a config change (the model list) is caught by the settings check
        for key, what in (("weights_sha256", "weights"), ("config_sha256", "card config")):
            if key in old and old.get(key) != m.get(key):
                raise RobustkitError(
                    f"zoo model {m.get('name')!r} changed since the run in {path} started (its {what} sha256 "
                    f"{str(old.get(key))[:12]}… is now {str(m.get(key))[:12]}…); results of two models would mix: "
                    "start a new run without --resume"
                )


def base_meta(seed: int, device: str, models: Iterable[dict[str, Any]] = ()) -> dict[str, Any]:
    from robustkit.distributed import command_line  # imports torch: only when a run is made

    return {
        "versions": versions(),
        "git_revision": git_revision(),
        "seed": seed,
        "device": device,
        "command": command_line(),
        "platform": platform.platform(),
        "models": list(models),
    }
