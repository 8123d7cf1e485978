"""A study's cells split across the ranks of ``torchrun`` (docs/distributed.md, "Studies").

Layout inside the run folder (a :class:`~robustkit.studies.rundir.RunDir`)::

    shards/rank-K/cells.json, results.csv, traces.csv   rank K's committed cells (RunDir format)
    shards/rank-K/heartbeat                             rewritten every few seconds while K works
    shards/rank-K/outcome.json                          how K's part of this attempt ended
    shards/main/                                        the folder's own cells, copied before a merge

1. Rank 0 opens the run folder (:func:`on_main`; the others wait and get its path), lists the
   cells not completed in the folder or any shard, in the study's order, and shares that list:
   the ``j``-th of them goes to rank ``j mod world`` (deterministic, the same on every rank).
2. Each rank runs its cells into its own shard, committed cell by cell as
   :meth:`RunDir.add_cell` does, so a rank that fails or is killed keeps what it finished.
3. Each rank writes its outcome and waits for the others' (polling, so a slow rank is no error);
   a rank that neither finishes nor beats its heartbeat within the timeout
   (``$ROBUSTKIT_DIST_TIMEOUT``) counts as dead and every rank stops with a one-line error.
4. When every cell is complete, rank 0 merges the shards into ``results.csv`` and ``traces.csv``
   in the study's cell order (the rows a single process writes, value for value), commits them
   in ``cells.json`` and removes ``shards/``. Otherwise the run is marked ``failed`` or
   ``interrupted`` and ``--resume`` (with any number of processes) finishes it.

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
from robustkit.io import read_json, write_bytes, write_json, write_text
from robustkit.studies.common import Cell, CellFailed, reason, work
from robustkit.studies.rundir import RunDir

SHARDS = "shards"
HEARTBEAT = "heartbeat"
OUTCOME = "outcome.json"
#: seconds between the polls of a rank waiting for the others.
POLL_S = 0.25

T = TypeVar("T")


# ----------------------------------------------------------------------------- layout


def is_sharded(run: RunDir) -> bool:
    """Whether the run folder holds shards (a sharded run not merged yet)."""
    return (run.path / SHARDS).is_dir()


def shard(run: RunDir, name: str) -> RunDir:
    """The shard ``shards/<name>/`` of ``run`` (``rank-K`` or ``main``), created empty if missing."""
    path = run.path / SHARDS / name
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        from robustkit.io import os_error

        raise os_error(exc, path, "create the shard") from None
    if not (path / "cells.json").exists():
        write_json(path / "cells.json", [])
    return RunDir(path, run.study)


def shards_of(run: RunDir) -> list[RunDir]:
    """The run's shards holding a commit record, by name."""
    if not is_sharded(run):
        return []
    return [RunDir(p, run.study) for p in sorted((run.path / SHARDS).iterdir())
            if p.is_dir() and (p / "cells.json").exists()]


def completed_keys(run: RunDir) -> set[str]:
    """Cells committed in the run folder or in any of its shards."""
    done = run.completed()
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
    part = shard(run, f"rank-{rank}")
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
        first = failed[0]
        if is_main:
            _stop(run, "failed", f"{first['cell']}: {first['error']}")
        raise RobustkitError(
            f"the {run.study} run failed in cell {first['cell']!r} on rank {first['rank']} ({first['error']})"
            + (f" and on {len(failed) - 1} other rank(s)" if len(failed) > 1 else "")
            + f"; {where}; fix the cause and continue with --resume {run.path} (any number of processes)")

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


def _keep_main(run: RunDir) -> None:
    """Copy the folder's own committed cells into ``shards/main`` (once) so that rewriting the
    folder's files in the merge can never lose them."""
    if not run.completed() or (run.path / SHARDS / "main" / "cells.json").exists():
        return
    dest = run.path / SHARDS / "main"
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("results.csv", "traces.csv"):
        if (run.path / name).exists():
            write_bytes(dest / name, (run.path / name).read_bytes())
    write_json(dest / "cells.json", run._commits())


def _slices(part: RunDir) -> dict[str, tuple[pd.DataFrame, pd.DataFrame]]:
    """Each committed cell of ``part`` with its rows of results.csv and traces.csv."""
    results, traces = part.results(), part._read("traces.csv")
    out, r0, t0 = {}, 0, 0
    for entry in part._commits():
        r1, t1 = entry.get("results_rows"), entry.get("traces_rows")
        if r1 is None or t1 is None:
            raise RobustkitError(f"{part.path / 'cells.json'} has no row counts (written by an older robustkit); "
                                 "resume this run with a single process, without torchrun")
        out[entry["key"]] = (results.iloc[r0:r1], traces.iloc[t0:t1])
        r0, t0 = r1, t1
    return out


def merge(run: RunDir, order: list[str]) -> None:
    """Write the shards' cells into the run folder in the study's cell ``order``: ``results.csv``
    and ``traces.csv`` as one process would have written them, then ``cells.json`` (the commit,
    last; it is emptied first so that a kill mid-merge commits nothing half written)."""
    _keep_main(run)
    slices: dict[str, tuple[pd.DataFrame, pd.DataFrame]] = {}
    for part in shards_of(run):
        for key, pair in _slices(part).items():
            slices.setdefault(key, pair)
    missing = [k for k in order if k not in slices]
    if missing:
        raise RobustkitError(f"cell {missing[0]!r} is in no shard of {run.path}; continue with --resume {run.path}")
    write_json(run.path / "cells.json", [])
    commits, counts = [], {"results": 0, "traces": 0}
    frames: dict[str, list[pd.DataFrame]] = {"results": [], "traces": []}
    for key in order:
        for name, frame in zip(("results", "traces"), slices[key]):
            if len(frame):
                frames[name].append(frame)
                counts[name] += len(frame)
        commits.append({"key": key, "results_rows": counts["results"], "traces_rows": counts["traces"]})
    for name in ("results", "traces"):
        path = run.path / f"{name}.csv"
        if frames[name]:
            write_text(path, pd.concat(frames[name], ignore_index=True).to_csv(index=False))
        else:
            path.unlink(missing_ok=True)
    write_json(run.path / "cells.json", commits)
