"""A study's cells split across the ranks of ``torchrun`` (docs/distributed.md, "Studies").

Layout inside the run folder (a :class:`~robustkit.studies.rundir.RunDir`)::

    shards/rank-K/cells.json            rank K's commit record: per cell its key, files and dtypes
    shards/rank-K/cell-NNNNN.*.csv      each committed cell's results and traces, on their own
    shards/rank-K/heartbeat             rewritten every few seconds while K works
    shards/rank-K/outcome.json          how K's part of this attempt ended
    shards/merged/                      the merge under way (RunDir format)

1. Rank 0 opens the run folder (:func:`on_main`; the others wait and get its path), lists the
   cells not completed in the folder or any shard, in the study's order, and shares that list:
   the ``j``-th of them goes to rank ``j mod world`` (deterministic, the same on every rank).
2. Each rank runs its cells into its own shard (:class:`Shard`), committed cell by cell, so a
   rank that fails or is killed keeps what it finished.
3. Each rank writes its outcome and waits for the others' (polling, so a slow rank is no error);
   a rank that neither finishes nor beats its heartbeat within the timeout
   (``$ROBUSTKIT_DIST_TIMEOUT``) counts as dead and every rank stops with a one-line error.
4. When every cell is complete, rank 0 merges: it adds the cells, in the study's order, to
   ``shards/merged/`` with :meth:`RunDir.add_cell` -- the very writes one process makes, so
   ``results.csv`` and ``traces.csv`` come out byte for byte as a single-process run writes them
   (each shard keeps a cell's frames on their own with their dtypes, so nothing is lost between)
   -- then copies them into the run folder (``cells.json`` last) and removes ``shards/``.
   Otherwise the run is marked ``failed`` or ``interrupted`` and ``--resume`` (with any number of
   processes) finishes it.

The shards live in the run folder, so every rank must see the same folder (one machine, or a
shared file system across machines).
"""

from __future__ import annotations

import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, TypeVar

import pandas as pd

from robustkit.errors import RobustkitError, StudyInterrupted
from robustkit.io import make_folder, read_json, write_bytes, write_json, write_text
from robustkit.studies.common import Cell, CellFailed, reason, work
from robustkit.studies.rundir import RunDir

SHARDS = "shards"
MERGED = "merged"
HEARTBEAT = "heartbeat"
OUTCOME = "outcome.json"
#: seconds between the polls of a rank waiting for the others.
POLL_S = 0.25

T = TypeVar("T")


# ----------------------------------------------------------------------------- layout


def is_sharded(run: RunDir) -> bool:
    """Whether the run folder holds shards (a sharded run not merged yet)."""
    return (run.path / SHARDS).is_dir()


class Shard:
    """One rank's committed cells: each cell's results and traces in files of their own
    (``cell-NNNNN.results.csv``, ``cell-NNNNN.traces.csv``), committed by its entry in
    ``cells.json`` -- ``{"key", "results": {"file", "dtypes"}, "traces": ...}`` -- written last,
    atomically, as :class:`RunDir` does. The dtypes bring each frame back as the cell made it."""

    def __init__(self, path: Path, study: str):
        self.path, self.study = Path(path), study

    @classmethod
    def open(cls, run: RunDir, name: str) -> "Shard":
        """``shards/<name>/`` of ``run``, created empty if missing."""
        path = make_folder(run.path / SHARDS / name, "create the shard")
        if not (path / "cells.json").exists():
            write_json(path / "cells.json", [])
        return cls(path, run.study)

    def commits(self) -> list[dict[str, Any]]:
        p = self.path / "cells.json"
        record = read_json(p, "a shard's cell record", "the run folder is damaged: start a new run without --resume")
        if not (isinstance(record, list) and all(isinstance(e, dict) and isinstance(e.get("key"), str) for e in record)):
            raise RobustkitError(f"the shard record {p} is not a list of cells; start a new run without --resume")
        return record

    def completed(self) -> set[str]:
        return {e["key"] for e in self.commits()}

    def add_cell(self, key: str, rows: pd.DataFrame, traces: pd.DataFrame | None = None) -> None:
        commits = self.commits()
        entry: dict[str, Any] = {"key": key}
        for kind, frame in (("results", rows), ("traces", traces)):
            if frame is not None and len(frame):
                name = f"cell-{len(commits):05d}.{kind}.csv"
                write_text(self.path / name, frame.to_csv(index=False))
                entry[kind] = {"file": name, "dtypes": {str(c): str(t) for c, t in frame.dtypes.items()}}
        write_json(self.path / "cells.json", commits + [entry])

    def _load(self, spec: dict[str, Any] | None) -> pd.DataFrame | None:
        if not spec:
            return None
        frame = pd.read_csv(self.path / spec["file"])
        for column, dtype in spec["dtypes"].items():
            if column in frame and str(frame[column].dtype) != dtype:
                try:
                    frame[column] = frame[column].astype(dtype)
                except (TypeError, ValueError):
                    pass  # e.g. an object column of empty strings: read as NaN, written the same
        return frame

    def frames(self) -> dict[str, tuple[pd.DataFrame | None, pd.DataFrame | None]]:
        """Each committed cell's ``(results, traces)`` as the cell returned them."""
        return {e["key"]: (self._load(e.get("results")), self._load(e.get("traces"))) for e in self.commits()}


def shards_of(run: RunDir) -> list[Shard]:
    """The ranks' shards of the run that hold a commit record, by name."""
    if not is_sharded(run):
        return []
    return [Shard(p, run.study) for p in sorted((run.path / SHARDS).iterdir())
            if p.is_dir() and p.name != MERGED and (p / "cells.json").exists()]


def _merged(run: RunDir) -> RunDir | None:
    path = run.path / SHARDS / MERGED
    return RunDir(path, run.study) if (path / "cells.json").exists() else None


def completed_keys(run: RunDir) -> set[str]:
    """Cells committed in the run folder, in a shard or in the merge under way."""
    done = run.completed()
    merged = _merged(run)
    if merged is not None:
        done |= merged.completed()
    for part in shards_of(run):
        done |= part.completed()
    return done


def assign(keys: list[str], world: int, rank: int) -> list[str]:
    """Rank ``rank``'s share of ``keys``: the ``j``-th key goes to rank ``j mod world``."""
    return keys[rank::world]


# ----------------------------------------------------------------------------- ranks talking


def on_main(ctx, fn: Callable[[], T]) -> T:
    """``fn()`` computed on rank 0 and shared with every rank (just ``fn()`` in a single process);
    an error on rank 0 is raised on every rank, so none waits for a result that never comes.
    The value must pickle."""
    from robustkit import distributed

    if ctx is None or not ctx.distributed:
        return fn()
    value, error, message = None, None, None
    if ctx.is_main:
        try:
            value = fn()
        except Exception as exc:  # shared first, then raised (also a bug: the others must not hang)
            error, message = exc, str(exc) if isinstance(exc, RobustkitError) else reason(exc)
    shared = distributed.all_gather_object((value, message))[0]
    if error is not None:
        raise error
    if shared[1] is not None:
        raise RobustkitError(f"{shared[1]} (on rank 0)")
    return shared[0]


class Heartbeat:
    """A daemon thread rewriting ``path`` every ``interval`` seconds (``attempt counter``) while
    the ``with`` block runs: the sign of life :func:`wait_for_ranks` watches."""

    def __init__(self, path: Path, attempt: str, interval: float):
        self.path, self.attempt, self.interval = path, attempt, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="robustkit-heartbeat", daemon=True)

    def _beat(self) -> None:
        count = 0
        while True:
            try:
                write_text(self.path, f"{self.attempt} {count}\n")
            except RobustkitError:
                pass  # a full disk shows in the cell writes; the others then time out on this rank
            count += 1
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        return None


def _outcome(run: RunDir, rank: int, attempt: str) -> dict[str, Any] | None:
    p = run.path / SHARDS / f"rank-{rank}" / OUTCOME
    try:
        outcome = read_json(p, "a rank's outcome", "")
    except RobustkitError:
        return None
    return outcome if isinstance(outcome, dict) and outcome.get("attempt") == attempt else None


def wait_for_ranks(run: RunDir, world: int, attempt: str, limit_s: float) -> None:
    """Return once every rank has written its outcome of ``attempt``; a rank whose heartbeat has
    not changed for ``limit_s`` seconds without an outcome is an error (it died or hangs)."""
    seen: dict[int, tuple[str | None, float]] = {r: (None, time.monotonic()) for r in range(world)}
    while True:
        missing = [r for r in range(world) if _outcome(run, r, attempt) is None]
        if not missing:
            return
        now = time.monotonic()
        for r in missing:
            beat = _read(run.path / SHARDS / f"rank-{r}" / HEARTBEAT)
            last, since = seen[r]
            if beat != last:
                seen[r] = (beat, now)
            elif now - since > limit_s:
                raise RobustkitError(
                    f"rank {r} stopped without finishing its cells of the {run.study} run (no sign of life for "
                    f"{limit_s:g} s: it died or hangs; see its message); the completed cells of every rank are kept "
                    f"in {run.path / SHARDS}; continue with --resume {run.path} (any number of processes)")
        time.sleep(POLL_S)


# ----------------------------------------------------------------------------- the sharded runner


def _plan(run: RunDir, keys: list[str]) -> dict[str, Any]:
    done = completed_keys(run)
    return {"attempt": uuid.uuid4().hex, "todo": [k for k in keys if k not in done]}


def run_sharded(run: RunDir, cells: list[Cell], ctx, progress: bool = True, seed: int | None = None) -> pd.DataFrame:
    """Run ``cells`` split across the ranks of ``ctx`` into shards of ``run`` and merge them
    (module docstring); every rank returns the merged frame or raises the same one-line error."""
    from robustkit import distributed

    world, rank = (ctx.world_size, ctx.rank) if ctx is not None else (1, 0)
    is_main = rank == 0
    keys = [c.key for c in cells]
    plan = on_main(ctx, lambda: _plan(run, keys))
    mine = set(assign(plan["todo"], world, rank))
    part = Shard.open(run, f"rank-{rank}")
    limit_s = distributed.timeout().total_seconds()
    outcome: dict[str, Any] = {"attempt": plan["attempt"], "rank": rank, "status": "complete", "cell": None, "error": None}
    with Heartbeat(part.path / HEARTBEAT, plan["attempt"], interval=min(5.0, limit_s / 5)):
        try:
            work(part, [c for c in cells if c.key in mine], f"{run.study} (rank {rank})" if world > 1 else run.study,
                 progress and is_main, seed)
        except KeyboardInterrupt:
            outcome["status"] = "interrupted"
        except CellFailed as failed:
            outcome.update(status="failed", cell=failed.label, error=reason(failed.__cause__))
        write_json(part.path / OUTCOME, outcome)
        try:
            wait_for_ranks(run, world, plan["attempt"], limit_s)
        except RobustkitError as exc:
            if is_main:
                _stop(run, "failed", str(exc))
            raise
        outcomes = distributed.all_gather_object(outcome)
    stopped = [o for o in outcomes if o["status"] != "complete"]
    if stopped:
        kept = len(completed_keys(run))
        failed = [o for o in stopped if o["status"] == "failed"]
        where = f"{kept} of {len(cells)} cells are kept in {run.path}"
        if not failed:
            if is_main:
                _stop(run, "interrupted")
            raise StudyInterrupted(f"interrupted; {where}; continue with --resume {run.path}")
        from robustkit.studies.common import resume_hint

        first = failed[0]
        if is_main:
            _stop(run, "failed", f"{first['cell']}: {first['error']}")
        raise RobustkitError(
            f"the {run.study} run failed in cell {first['cell']!r} on rank {first['rank']} ({first['error']})"
            + (f" and on {len(failed) - 1} other rank(s)" if len(failed) > 1 else "")
            + f"; {where}; {resume_hint(run.path)} (a resume may use any number of processes)")

    def finish() -> None:
        merge(run, keys)
        run.finish("complete")
        shutil.rmtree(run.path / SHARDS, ignore_errors=True)

    on_main(ctx, finish)
    return run.results()


def _stop(run: RunDir, status: str, error: str | None = None) -> None:
    try:
        run.finish(status, error)
    except RobustkitError:
        pass  # best effort (a full disk): the shards keep the cells


# ----------------------------------------------------------------------------- merging


def merge(run: RunDir, order: list[str]) -> None:
    """Write the shards' cells into the run folder in the study's cell ``order``.

    The cells are added, in order, to ``shards/merged/`` by :meth:`RunDir.add_cell` (the writes a
    single process makes), starting from the run folder's own committed cells (a prefix of
    ``order``: what a single-process run did before it stopped). A merge stopped half-way goes on
    from where it stood. Then ``results.csv`` and ``traces.csv`` are copied into the run folder
    and ``cells.json`` last (emptied first, so that a kill between the copies commits nothing)."""
    staging = run.path / SHARDS / MERGED
    if _merged(run) is None:  # start from the folder's own cells, kept here before they are rewritten
        staging.mkdir(parents=True, exist_ok=True)
        for name in ("results.csv", "traces.csv"):
            if (run.path / name).exists():
                write_bytes(staging / name, (run.path / name).read_bytes())
        write_json(staging / "cells.json", run._commits())
    merged = RunDir(staging, run.study)
    have = [e["key"] for e in merged._commits()]
    if have != order[:len(have)]:
        raise RobustkitError(f"the cells committed in {run.path} are not the first cells of the study; "
                             f"resume it with one process (without torchrun): --resume {run.path}")
    frames: dict[str, tuple[pd.DataFrame | None, pd.DataFrame | None]] = {}
    for part in shards_of(run):
        frames.update(part.frames())
    for key in order[len(have):]:
        if key not in frames:
            raise RobustkitError(f"cell {key!r} is in no shard of {run.path}; continue with --resume {run.path}")
        merged.add_cell(key, *frames[key])
    write_json(run.path / "cells.json", [])
    for name in ("results.csv", "traces.csv"):
        if (staging / name).exists():
            write_bytes(run.path / name, (staging / name).read_bytes())
        else:
            (run.path / name).unlink(missing_ok=True)
    write_json(run.path / "cells.json", merged._commits())
