"""Training under torchrun: DDP on 2 gloo ranks equals one process with the same global batch;
bad launches fail with one line, and a dead or hung rank stops the others instead of a hang.

Ranks are forked processes with torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, …), so the
tests pay no interpreter start-up; the CLI under a real ``torchrun`` is the slow test at the end.
"""

import itertools
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

from robustkit import distributed
from robustkit.errors import RobustkitError
from robustkit.training import TrainConfig, train
from tests.test_training import tiny_dataset

TINY = {"modl": {"width": 4, "depth": 2, "K": 2}, "mnmmol": {"width": 4, "depth": 2, "max_iter": 20, "eval_max_iter": 30},
        "mol": {"width": 4, "depth": 2, "max_iter": 10, "eval_max_iter": 10}}


def config(model: str, data: str, batch_size: int, **fields) -> TrainConfig:
    return TrainConfig(model=model, data=data, accel=2, epochs=1, batch_size=batch_size, lr=1e-3, gate=False, lipschitz_steps=2,
                       lipschitz_estimate="slow", model_config=TINY[model], **fields)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(target, rank: int, world: int, port: int, folder: str, env: dict, args: tuple) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), **env)
    torch.set_num_threads(1)
    code = 0
    try:
        target(rank, *args)
    except RobustkitError as exc:
        Path(folder, f"error-{rank}.txt").write_text(str(exc))
        code = 2
    except SystemExit as exc:  # robustkit.cli.main's exit status
        code = exc.code or 0
    finally:
        distributed.shutdown()
    os._exit(code)


def run_ranks(target, tmp_path, *args, world: int = 2, env: dict | None = None, limit: float = 120) -> list[int | None]:
    """Fork ``world`` ranks running ``target(rank, *args)``; their exit codes (``None``: still
    running ``limit`` s after the start, or 3 s after the rank before it ended, then killed, as torchrun does).
    A RobustkitError's message lands in ``error-<rank>.txt``."""
    ctx = mp.get_context("fork")
    port = _free_port()
    procs = [ctx.Process(target=_rank_main, args=(target, r, world, port, str(tmp_path), env or {}, args)) for r in range(world)]
    for p in procs:
        p.start()
    deadline = time.monotonic() + limit
    codes = []
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
        deadline = min(deadline, time.monotonic() + 3)
        codes.append(p.exitcode)
        if p.is_alive():
            p.kill()
            p.join()
    return codes


# --- the context itself -------------------------------------------------------------------------


def test_single_process_context_joins_nothing(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ctx = distributed.dist_context("cpu")
    assert (ctx.rank, ctx.world_size, ctx.is_main, ctx.distributed, ctx.backend) == (0, 1, True, False, None)
    assert not torch.distributed.is_initialized()
    x = torch.ones(3)
    assert distributed.all_reduce(x) is x and distributed.all_gather_object({"a": 1}) == [{"a": 1}]


def torchrun_env(monkeypatch, world: int = 2, rank: int = 0) -> None:
    for name, value in dict(RANK=rank, WORLD_SIZE=world, LOCAL_RANK=rank, LOCAL_WORLD_SIZE=world).items():
        monkeypatch.setenv(name, str(value))


def test_cuda_with_fewer_gpus_than_ranks_is_refused_before_joining(monkeypatch):
    torchrun_env(monkeypatch)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(RobustkitError, match=r"2 ranks on this node but only 1 GPU.*--nproc_per_node 1"):
        distributed.dist_context("cuda")
    assert not torch.distributed.is_initialized()


def test_cli_refuses_cuda_with_fewer_gpus_in_one_line(monkeypatch, capsys, tmp_path):
    import robustkit.recipes
    from robustkit.cli import main

    torchrun_env(monkeypatch)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(robustkit.recipes, "run", lambda *a, **k: pytest.fail("training must not start"))
    with pytest.raises(SystemExit) as exit_info:
        main(["--device", "cuda", "train", "--model", "modl", "--out", str(tmp_path / "m")])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1 and "only 1 GPU" in err
    assert not (tmp_path / "m").exists()


def test_bad_timeout_is_refused(monkeypatch):
    monkeypatch.setenv(distributed.TIMEOUT_ENV, "soon")
    with pytest.raises(RobustkitError, match="positive number of minutes"):
        distributed.timeout()
    monkeypatch.setenv(distributed.TIMEOUT_ENV, "0.5")
    assert distributed.timeout().total_seconds() == 30


# --- a dead or hung rank --------------------------------------------------------------------------


def _wait_for_a_peer(rank: int, peer_fate: str) -> None:
    distributed.dist_context("cpu")
    if rank == 1:
        if peer_fate == "dies":
            os._exit(1)  # killed: no goodbye to the process group
        time.sleep(60)  # hung
    distributed.barrier()


@pytest.mark.parametrize("peer_fate", ["dies", "hangs"])
def test_a_dead_or_hung_rank_stops_the_others_with_one_line(tmp_path, peer_fate):
    t0 = time.monotonic()
    codes = run_ranks(_wait_for_a_peer, tmp_path, peer_fate, env={distributed.TIMEOUT_ENV: "0.05"}, limit=40)
    assert codes[0] == 2, codes  # rank 0 stopped with a RobustkitError, not a hang
    assert time.monotonic() - t0 < 30
    message = (tmp_path / "error-0.txt").read_text()
    assert message.startswith("rank 0: waiting at a barrier failed") and "timeout" in message and "\n" not in message


# --- training -------------------------------------------------------------------------------------


def _train_rank(rank: int, cfg: TrainConfig, out: str, resume: bool) -> None:
    train(cfg, out, torch.device("cpu"), resume=resume, progress=False)


@pytest.fixture
def data(tmp_path):
    return str(tiny_dataset(tmp_path / "tiny.h5"))


@pytest.mark.parametrize("model", ["modl", "mol"])
def test_ddp_training_matches_one_process_with_the_same_global_batch(data, tmp_path, model):
    """2 ranks × batch 1 = 1 process × batch 2 (two steps): same weights, same log; rank 0 alone writes.
    MOL runs its penalty's synchronised pass, in which λ is unused (find_unused_parameters), at weight
    0: its ascent's random starts depend on the batch's shape (docs/distributed.md)."""
    weight = {"penalty_weight": 0.0} if model == "mol" else {}
    one = train(config(model, data, 2, **weight), tmp_path / "one", torch.device("cpu"), progress=False)
    assert run_ranks(_train_rank, tmp_path, config(model, data, 1, **weight), str(tmp_path / "two"), False) == [0, 0]
    a, b = load_file(tmp_path / "one" / "weights.safetensors"), load_file(tmp_path / "two" / "weights.safetensors")
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-4, atol=1e-5)  # float32 sums in another order
    two = json.loads((tmp_path / "two" / "card.json").read_text())
    assert two["distributed"] == {"world_size": 2, "backend": "gloo", "global_batch": 2}
    for key in ("train_mse", "val_psnr", "val_ssim"):
        assert two["history"][0][key] == pytest.approx(one["history"][0][key], rel=1e-4)
    assert len((tmp_path / "two" / "log.csv").read_text().splitlines()) == 2  # header + one epoch, written once


def test_more_ranks_than_training_slices_is_refused_and_writes_nothing(tmp_path):
    data = str(tiny_dataset(tmp_path / "small.h5", n=3))  # one training slice
    codes = run_ranks(_train_rank, tmp_path, config("modl", data, 1), str(tmp_path / "m"), False)
    assert codes == [2, 2]
    assert "2 ranks but the training set" in (tmp_path / "error-0.txt").read_text()
    assert not (tmp_path / "m").exists()


def _mnmmol_step(rank: int, data: str, world: int, folder: str) -> None:
    """One training step of a tiny MnM-MOL on this rank's share of slices 0…3; saves the gradients."""
    from robustkit.batch import to_device
    from robustkit.distributed import dist_context
    from robustkit.models.registry import build_model
    from robustkit.training import _dataset, _step, _wrap

    ctx = dist_context("cpu")
    cfg = config("mnmmol", data, 4 // world)
    torch.manual_seed(0)
    model = build_model("mnmmol", cfg.model_config)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # the gradients are what is compared
    train_set = _dataset(cfg, "train", vary=False)
    batch = to_device(next(iter(torch.utils.data.DataLoader(torch.utils.data.Subset(train_set, range(ctx.rank, 4, world)),
                                                           batch_size=4))), "cpu")
    stats = _step(model, _wrap(model, ctx), batch, cfg, opt, torch.Generator().manual_seed(0), lambda loss: None)
    assert model.last_stats.backward is not None  # the implicit backward ran (its hook on x*)
    if ctx.is_main:
        torch.save({"grads": {n: p.grad for n, p in model.named_parameters()}, "stats": stats}, Path(folder, f"grads-{world}.pt"))


def test_mnmmol_implicit_backward_and_constraint_under_ddp_give_the_single_process_gradients(data, tmp_path):
    assert run_ranks(_mnmmol_step, tmp_path, data, 2, str(tmp_path)) == [0, 0]
    assert run_ranks(_mnmmol_step, tmp_path, data, 1, str(tmp_path), world=1) == [0]
    two, one = torch.load(tmp_path / "grads-2.pt"), torch.load(tmp_path / "grads-1.pt")
    assert two["grads"].keys() == one["grads"].keys()
    for name, g in one["grads"].items():
        assert g is not None and two["grads"][name] is not None, name
        torch.testing.assert_close(two["grads"][name], g, rtol=1e-4, atol=1e-7)
    assert one["stats"]["penalty"] > 0  # the constraint contributed to the gradient
    assert two["stats"] == pytest.approx(one["stats"], rel=1e-5)


def _cli_rank(rank: int, args: list[str]) -> None:
    from robustkit.cli import main

    main(args)


def _dies_in_training(rank: int, args: list[str]) -> None:
    import robustkit.training

    if rank == 1:  # rank 1 is killed in its second step, after its first all-reduce
        calls = itertools.count()
        step = robustkit.training._step
        robustkit.training._step = lambda *a: os._exit(9) if next(calls) == 1 else step(*a)
    _cli_rank(rank, args)


def test_a_rank_killed_in_training_stops_the_cli_of_the_others_with_one_line(data, tmp_path, capfd):
    args = ["--device", "cpu", "train", "--model", "modl", "--data", data, "--accel", "2", "--epochs", "1", "--set", "width=4",
            "--set", "depth=2", "--set", "K=1", "--out", str(tmp_path / "m")]
    codes = run_ranks(_dies_in_training, tmp_path, args, env={distributed.TIMEOUT_ENV: "0.1"}, limit=60)
    assert codes == [2, 9]
    errors = [line for line in capfd.readouterr().err.splitlines() if line.startswith("robustkit: error:")]
    assert len(errors) == 1 and errors[0].startswith("robustkit: error: rank 0: training failed"), errors
    assert not (tmp_path / "m" / "card.json").exists()  # nothing written after the failure


@pytest.mark.slow
def test_default_mnmmol_recipe_under_ddp_gates_and_records_its_stages_once(data, tmp_path):
    """The staged recipe (MnM-MOL, λ scan, MnM-MOL with λ fixed) on 2 ranks: every gate passes on
    every rank, rank 0 writes the stages and the final card."""
    from tests.test_recipes import toy_mnmmol

    out = tmp_path / "m"
    args = ["--device", "cpu", "train", "--model", "mnmmol", "--data", data, "--accel", "2", "--epochs", "1", "--lr", "1e-6",
            "--init-from", toy_mnmmol(tmp_path / "toy"), "--set", "leak_to=sense", "--lipschitz-steps", "2", "--set", "width=4", "--set", "depth=2",
            "--out", str(out)]
    assert run_ranks(_cli_rank, tmp_path, args, limit=240) == [0, 0]
    card = json.loads((out / "card.json").read_text())
    assert [s["stage"] for s in card["stages"]] == ["2-mnmmol", "3-lambda", "4-mnmmol-fixed-lambda"]
    assert card["gate"]["passed"] and all(s["gate"]["passed"] for s in card["stages"])
    stage = json.loads((out / "stages" / "2-mnmmol" / "card.json").read_text())
    assert stage["distributed"]["global_batch"] == 2 and len((out / "stages" / "2-mnmmol" / "log.csv").read_text().splitlines()) == 2


def _budget_rank(rank: int, cfg: TrainConfig, out: str, resume: bool) -> None:
    import robustkit.training

    if not resume:  # rank 0's clock advances 61 s a reading: its 1-minute budget ends after step 1 of 2;
        # rank 1's clock stands still, so alone it would never stop: rank 0's clock decides for both
        clock = itertools.count(0, 61) if rank == 0 else itertools.repeat(0)
        robustkit.training._now = lambda: next(clock)
        cfg = TrainConfig(**{**cfg.__dict__, "max_minutes": 1.0})
    train(cfg, out, torch.device("cpu"), resume=resume, progress=False)


@pytest.mark.slow
def test_ddp_max_minutes_stops_all_ranks_mid_epoch_and_resume_is_exact(data, tmp_path):
    cfg = TrainConfig(model="modl", data=data, accel=2, epochs=2, batch_size=1, lr=3e-3, model_config={"width": 4, "depth": 2, "K": 1})
    assert run_ranks(_train_rank, tmp_path, cfg, str(tmp_path / "whole"), False) == [0, 0]
    assert run_ranks(_budget_rank, tmp_path, cfg, str(tmp_path / "cut"), False) == [0, 0]
    stopped = json.loads((tmp_path / "cut" / "card.json").read_text())["stopped"]
    assert stopped == {"reason": "max_minutes", "epoch": 1, "step": 1, "steps": 2}
    assert run_ranks(_budget_rank, tmp_path, cfg, str(tmp_path / "cut"), True) == [0, 0]
    whole, cut = load_file(tmp_path / "whole" / "weights.safetensors"), load_file(tmp_path / "cut" / "weights.safetensors")
    assert all(torch.equal(whole[k], cut[k]) for k in whole)


@pytest.mark.slow
def test_torchrun_cli_trains_and_resumes(data, tmp_path):
    """``torchrun --nproc_per_node 2 -m robustkit train`` end to end, then ``--resume`` one more epoch:
    equal to the same two epochs trained in one go under torchrun."""
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def launch(out, epochs, *extra):
        cmd = [str(torchrun), "--nproc_per_node", "2", "--master_port", str(_free_port()), "-m", "robustkit", "--device", "cpu",
               "train", "--model", "modl", "--data", data, "--accel", "2", "--epochs", str(epochs), "--set", "width=4",
               "--set", "depth=2", "--set", "K=2", "--out", str(out), *extra]
        return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)

    done = launch(tmp_path / "a", 1)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("trained modl for 1 epochs") == 1  # rank 0 alone reports
    assert launch(tmp_path / "a", 2, "--resume").returncode == 0
    assert launch(tmp_path / "b", 2).returncode == 0
    a, b = load_file(tmp_path / "a" / "weights.safetensors"), load_file(tmp_path / "b" / "weights.safetensors")
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6)
    refused = subprocess.run([sys.executable, "-m", "robustkit", "train", "--model", "modl", "--data", data, "--accel", "2",
                              "--epochs", "3", "--out", str(tmp_path / "a"), "--resume"], capture_output=True, text=True, env=env)
    assert refused.returncode == 2 and "trained by 2 process(es)" in refused.stderr


def _gate_rank(rank: int, data: str, folder: str) -> None:
    from robustkit.analysis.gate import GateConfig, convergence_gate
    from robustkit.recipes import _dataset
    from tests.test_recipes import toy_model

    distributed.dist_context("cpu")
    val = _dataset(TrainConfig(model="mol", data=data, accel=2), "val", vary=False)
    # L[F_θ] = ½: rank 0's bound 0.9 passes it, rank 1's 0.4 would fail it
    result = convergence_gate(toy_model("mol", 0.5), val, config=GateConfig(threshold=0.9 if rank == 0 else 0.4))
    Path(folder, f"gate-{rank}.json").write_text(json.dumps(result.to_dict()))


def test_every_rank_takes_rank_0s_gate_verdict(data, tmp_path):
    """A gate that would pass on rank 0 and fail on rank 1 (on GPUs: other convolution algorithms
    at a threshold) gives both ranks rank 0's result, so they stop or go on together."""
    assert run_ranks(_gate_rank, tmp_path, data, str(tmp_path)) == [0, 0]
    verdicts = [json.loads((tmp_path / f"gate-{r}.json").read_text()) for r in range(2)]
    assert verdicts[0] == verdicts[1] and verdicts[0]["passed"]


@pytest.mark.parametrize("argv0, expected", [("/venv/bin/robustkit", "robustkit"),
                                             ("/site-packages/robustkit/__main__.py", "robustkit")])
def test_the_recorded_command_is_one_a_user_can_rerun(argv0, expected, monkeypatch):
    from robustkit.distributed import command_line

    monkeypatch.setattr("sys.argv", [argv0, "attack", "--model", "my nets.py:make"])
    assert command_line() == f"{expected} attack --model 'my nets.py:make'"
