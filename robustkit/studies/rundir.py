"""A study run's folder ``reports/<study>-<timestamp>/`` and what it holds.

Layout (read by :mod:`robustkit.report`):

- ``config.json``  the study's config (every key, defaults filled in) and ``"study"``.
- ``meta.json``    package versions, git revision, seed, device, command, start/finish times,
  ``status`` (``"running"``, ``"complete"`` or ``"interrupted"``), the models used with their
  weights' sha256.
- ``results.csv``  the tidy frame (one row per sample × condition; schema in each study module).
- ``cells.json``   the keys of the completed cells (what ``--resume`` skips).
- ``traces.csv``   optional long-format traces (solver residuals, ascent estimates, attack losses).
- ``examples/``    optional ``.npz`` example images (attack study).

A run never overwrites an earlier one: a new folder gets a fresh name; ``resume`` reopens an
existing folder whose stored config equals the new one.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from robustkit.errors import RobustkitError

PACKAGES = ("robustkit", "torch", "numpy", "pandas", "scipy", "torchattacks", "h5py", "seaborn")


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_json(path: Path, data: Any) -> None:
    _atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


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
    """One study run's folder. ``RunDir.create(root, study, config)`` or ``RunDir.resume(path, study, config)``."""

    def __init__(self, path: Path, study: str):
        self.path, self.study = Path(path), study

    # ------------------------------------------------------------------ opening
    @classmethod
    def create(cls, root: str | os.PathLike, study: str, config: dict[str, Any], meta: dict[str, Any]) -> "RunDir":
        root = Path(root)
        if root.exists() and not root.is_dir():
            raise RobustkitError(f"{root} is a file, not a folder; pass another --reports-dir")
        root.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for n in range(1, 1000):
            path = root / (f"{study}-{stamp}" if n == 1 else f"{study}-{stamp}-{n}")
            try:
                path.mkdir()
                break
            except FileExistsError:
                continue
        else:  # pragma: no cover - a thousand runs in one second
            raise RobustkitError(f"could not find a free run folder name in {root}")
        run = cls(path, study)
        _write_json(path / "config.json", {"study": study, **config})
        _write_json(path / "cells.json", [])
        run.write_meta({**meta, "status": "running", "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        return run

    @classmethod
    def resume(cls, path: str | os.PathLike, study: str, config: dict[str, Any]) -> "RunDir":
        path = Path(path)
        if not (path / "config.json").exists():
            raise RobustkitError(f"{path} is not a robustkit run folder (no config.json); check the --resume path")
        stored = json.loads((path / "config.json").read_text())
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
        run.write_meta({**run.meta(), "status": "running"})
        return run

    # ------------------------------------------------------------------ contents
    def meta(self) -> dict[str, Any]:
        p = self.path / "meta.json"
        return json.loads(p.read_text()) if p.exists() else {}

    def write_meta(self, meta: dict[str, Any]) -> None:
        _write_json(self.path / "meta.json", meta)

    def finish(self, status: str) -> None:
        self.write_meta({**self.meta(), "status": status, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")})

    def completed(self) -> set[str]:
        return set(json.loads((self.path / "cells.json").read_text()))

    def results(self) -> pd.DataFrame:
        p = self.path / "results.csv"
        return pd.read_csv(p) if p.exists() else pd.DataFrame()

    def add_cell(self, key: str, rows: pd.DataFrame, traces: pd.DataFrame | None = None) -> None:
        """Append one completed cell's rows (and traces), then record the cell as done."""
        self._append("results.csv", rows)
        if traces is not None and len(traces):
            self._append("traces.csv", traces)
        done = sorted(self.completed() | {key})
        _write_json(self.path / "cells.json", done)

    def _append(self, name: str, frame: pd.DataFrame) -> None:
        path = self.path / name
        old = pd.read_csv(path) if path.exists() else None
        new = frame if old is None else pd.concat([old, frame], ignore_index=True)
        _atomic_write_text(path, new.to_csv(index=False))

    def examples_dir(self) -> Path:
        p = self.path / "examples"
        p.mkdir(exist_ok=True)
        return p


def base_meta(seed: int, device: str, models: Iterable[dict[str, Any]] = ()) -> dict[str, Any]:
    return {
        "versions": versions(),
        "git_revision": git_revision(),
        "seed": seed,
        "device": device,
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "platform": platform.platform(),
        "models": list(models),
    }
