"""Studies sharded across ranks (robustkit/studies/shards.py, docs/distributed.md "Studies").

In-process: the round-robin assignment, the per-cell seed, the merge (byte for byte what one process
writes, whatever the split) and the single-process resume of a half-done sharded run. Out of
process: 2 gloo ranks under torchrun (``robustkit run`` on a study file) give the same
results.csv/traces.csv as one process; a rank
whose cell fails, and a rank that is killed, leave the other ranks' cells, and a single-process
``--resume`` finishes the run with the same files.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from robustkit.cli import main
from robustkit.distributed import DistContext
from robustkit.studies.common import Cell, cell_seed, run_cells, work
from robustkit.studies.rundir import RunDir
from robustkit.studies.shards import Shard, assign, merge

REPO = Path(__file__).resolve().parents[1]
NETS = REPO / "tests" / "user_nets.py"

# ----------------------------------------------------------------------------- in process


@pytest.mark.parametrize("world", [1, 2, 3, 7])
def test_assignment_splits_every_cell_once_and_is_deterministic(world):
    keys = [f"cell{i}" for i in range(7)]
    shares = [assign(keys, world, r) for r in range(world)]
    assert sorted(k for share in shares for k in share) == sorted(keys)
    assert all(share == assign(keys, world, r) for r, share in enumerate(shares))
    assert max(map(len, shares)) - min(map(len, shares)) <= 1  # balanced to one cell


def test_cell_seed_depends_on_the_seed_and_the_key_only():
    assert cell_seed(0, "a|clean|0") == cell_seed(0, "a|clean|0")
    assert len({cell_seed(0, "a"), cell_seed(0, "b"), cell_seed(1, "a")}) == 3
    assert 0 <= cell_seed(2**32 - 1, "x") < 2**63


def _frames(key: str) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """A cell's rows drawn from the global generator (so they depend on the cell's seed), with the
    column kinds studies write: ints, floats (64 and 32 bit), NaN, booleans mixed with NaN, strings, a column only
    some cells have, and no traces or no rows for some cells."""
    n = 3
    x = torch.randn(n, dtype=torch.float64).tolist()
    rows = pd.DataFrame({"key": key, "sample": list(range(n)), "value": x,
                         "converged": [np.nan] * n if key.endswith("b") else [v > 0 for v in x],
                         "single": np.asarray(x, dtype=np.float32), "count": [int(10 * abs(v)) for v in x]})
    if key.endswith("c"):
        rows["only_c"] = "text"
        rows = rows.iloc[:0] if key == "cell-c" else rows
    traces = pd.DataFrame({"key": key, "step": [0, 1], "loss": torch.rand(2, dtype=torch.float64).tolist()})
    return rows, (None if key.endswith("a") else traces)


KEYS = ["cell-a", "cell-b", "cell-c", "other-a", "other-b", "other-c"]


def _cells() -> list[Cell]:
    return [Cell(k, k, lambda k=k: _frames(k)) for k in KEYS]


def _one_process(tmp_path: Path) -> Path:
    run = RunDir.create(tmp_path / "one", "toy", {"seed": 0}, {})
    run_cells(run, _cells(), progress=False, seed=0)
    return run.path


def _same_files(a: Path, b: Path) -> None:
    for name in ("results.csv", "traces.csv", "cells.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


@pytest.mark.parametrize("world", [2, 3])
def test_the_merge_writes_what_one_process_writes(world, tmp_path):
    one = _one_process(tmp_path)
    run = RunDir.create(tmp_path / "sharded", "toy", {"seed": 0}, {})
    for rank in reversed(range(world)):  # the ranks' own order of work does not matter
        mine = set(assign(KEYS, world, rank))
        work(Shard.open(run, f"rank-{rank}"), [c for c in _cells() if c.key in mine][::-1], "toy", progress=False, seed=0)
    merge(run, KEYS)
    _same_files(one, run.path)
    assert pd.read_csv(run.path / "results.csv")["key"].drop_duplicates().tolist() == [k for k in KEYS if k != "cell-c"]


def test_a_single_process_finishes_a_half_done_sharded_run(tmp_path):
    one = _one_process(tmp_path)
    run = RunDir.create(tmp_path / "sharded", "toy", {"seed": 0}, {})
    cells = {c.key: c for c in _cells()}
    work(Shard.open(run, "rank-0"), [cells[k] for k in assign(KEYS, 2, 0)], "toy", progress=False, seed=0)
    work(Shard.open(run, "rank-1"), [cells["cell-b"]], "toy", progress=False, seed=0)  # rank 1 stopped after one cell
    torch.manual_seed(123)  # what ran before must not matter
    frame = run_cells(run, _cells(), progress=False, seed=0)
    _same_files(one, run.path)
    assert len(frame) == len(pd.read_csv(one / "results.csv"))
    assert not (run.path / "shards").exists()
    assert json.loads((run.path / "meta.json").read_text())["status"] == "complete"


def test_more_ranks_than_cells_is_one_line_and_writes_nothing(toy_data, tmp_path, capsys, monkeypatch):
    import robustkit.distributed

    monkeypatch.setattr(robustkit.distributed, "dist_context",
                        lambda device="auto": DistContext(0, 5, 0, torch.device("cpu"), True))
    reports = tmp_path / "reports"
    with pytest.raises(SystemExit) as exc:
        main(["--device", "cpu", "attack", "--model", "tests.user_nets:tiny_net", "--kind", "gaussian", "--eps", "0.05",
              "--draws", "1", "--data", toy_data, "--reports-dir", str(reports), "--no-report"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(lines) == 1, lines
    assert "5 processes but the attack study has only 2 cell(s)" in lines[0] and "--nproc_per_node 2" in lines[0]
    assert not reports.exists()


# ----------------------------------------------------------------------------- 2 gloo processes

FLAKY = '''
import os
from tests.user_nets import TinyNet


class Flaky(TinyNet):
    """TinyNet, except on rank 1 when $FLAKY says so: it raises, or the process dies."""

    def forward(self, kspace, op):
        if os.environ.get("RANK") == "1" and os.environ.get("FLAKY") == "raise":
            raise RuntimeError("flaky model fails on rank 1")
        if os.environ.get("RANK") == "1" and os.environ.get("FLAKY") == "exit":
            os._exit(9)
        return super().forward(kspace, op)


def flaky():
    return Flaky()
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "FLAKY")}
    return {**env, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **extra}


def _study_args(toy_data: str, reports: Path, flaky: Path) -> list[str]:
    """An attack on two tiny plug-ins: 4 cells (2 models × clean, adversarial); rank 1 of 2 gets
    ``TinyNet adversarial`` and then ``Flaky adversarial``."""
    return ["--device", "cpu", "attack", "--model", f"{NETS}:tiny_net", "--model", f"{flaky}:flaky",
            "--kind", "adversarial", "--eps", "0.05", "--steps", "2", "--data", toy_data,
            "--reports-dir", str(reports), "--no-report"]


def _torchrun(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), "-m", "robustkit", *args]
    return subprocess.run(cmd, cwd=cwd, env=_env(**env), capture_output=True, text=True, timeout=300)


@pytest.fixture
def flaky(tmp_path) -> Path:
    path = tmp_path / "flaky.py"
    path.write_text(FLAKY)
    return path


@pytest.fixture
def one_process(toy_data, tmp_path, flaky) -> Path:
    """The reference: the study run by one process, in this one."""
    main(_study_args(toy_data, tmp_path / "one", flaky))
    (run_dir,) = (tmp_path / "one").iterdir()
    return run_dir


@pytest.mark.slow  # ≈ 1 min: two torchrun processes start torch (run by .ci/run)
def test_two_gloo_ranks_write_what_one_process_writes(toy_data, tmp_path, flaky):
    """A study file (``robustkit run``) with the 4-cell attack, a 2-cell init-test (random
    noise starts: each rank draws them for its own model) and a 1-cell audit (rank 1 has no cell
    of it: it waits for the merge instead of refusing, as a lone study command does)."""
    study_file = tmp_path / "two-studies.toml"
    study_file.write_text(f'''[defaults]
data = "{toy_data}"
[attack]
models = ["{NETS}:tiny_net", "{flaky}:flaky"]
kinds = ["adversarial"]
eps = [0.05]
steps = 2
[init-test]
models = ["tests.user_nets:tiny_deq", "{NETS}:tiny_deq"]
starts = ["zeros", "noise"]
[audit]
models = ["tests.user_nets:tiny_deq"]
steps = 2
restarts = 1
power_iters = 5
probe_steps = 1
''')
    args = ["--device", "cpu", "run", str(study_file), "--no-report", "--reports-dir"]
    main([*args, str(tmp_path / "one")])
    done = _torchrun([*args, str(tmp_path / "two")], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    for study in ("attack", "init-test", "audit"):
        (one,), (two,) = (list((tmp_path / where).glob(f"{study}-*")) for where in ("one", "two"))
        _same_files(one, two)
        assert not (two / "shards").exists()
        meta = json.loads((two / "meta.json").read_text())
        assert meta["status"] == "complete" and meta["world_size"] == 2
    assert done.stdout.count("suite: ") == 1 and done.stdout.count("results: ") == 3  # rank 0 alone prints


def _resume_alone(run_dir: Path, toy_data: str, flaky: Path, one_process: Path) -> None:
    main([*_study_args(toy_data, run_dir.parent, flaky), "--resume", str(run_dir)])
    _same_files(one_process, run_dir)
    assert json.loads((run_dir / "meta.json").read_text())["status"] == "complete"


@pytest.mark.slow
def test_a_failing_rank_keeps_every_finished_cell_and_resume_finishes(toy_data, tmp_path, flaky, one_process):
    done = _torchrun(_study_args(toy_data, tmp_path / "two", flaky), tmp_path, FLAKY="raise")
    assert done.returncode != 0
    (run_dir,) = (tmp_path / "two").iterdir()
    errors = [line for line in done.stderr.splitlines() if line.startswith("robustkit: error: ")]
    assert len(errors) == 2 and all("failed in cell 'Flaky adversarial ε=0.05' on rank 1" in e for e in errors), errors
    assert "3 of 4 cells are kept" in errors[0] and f"--resume {run_dir}" in errors[0]
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["status"] == "failed" and "flaky model fails on rank 1" in meta["error"]
    _resume_alone(run_dir, toy_data, flaky, one_process)


@pytest.mark.slow
def test_a_killed_rank_stops_the_others_after_the_timeout_and_resume_finishes(toy_data, tmp_path, flaky, one_process):
    """Started without torchrun's agent (which would kill rank 0 at once): rank 0 must notice by itself."""
    port, reports = _free_port(), tmp_path / "two"
    procs = [subprocess.Popen([sys.executable, "-m", "robustkit", *_study_args(toy_data, reports, flaky)], cwd=tmp_path,
                              env=_env(RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE="2", LOCAL_WORLD_SIZE="2",
                                       MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), FLAKY="exit",
                                       ROBUSTKIT_DIST_TIMEOUT="0.2"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert procs[1].returncode == 9
    assert procs[0].returncode == 2, outputs[0][1][-2000:]
    (run_dir,) = reports.iterdir()
    (line,) = [x for x in outputs[0][1].splitlines() if x.startswith("robustkit: error: ")]
    assert "rank 1 stopped without finishing its cells" in line and "12 s" in line and f"--resume {run_dir}" in line
    assert json.loads((run_dir / "meta.json").read_text())["status"] == "failed"
    _resume_alone(run_dir, toy_data, flaky, one_process)
