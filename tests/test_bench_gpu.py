"""benchmarks/bench_gpu.py runs end to end: its --tiny version on the CPU (the GPU numbers come from
running it on a CUDA machine)."""

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_gpu.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_gpu", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow  # ≈ 30 s on 2 cores (run by .ci/run)
def test_tiny_benchmark_prints_its_three_tables(capsys):
    _bench().main(["--tiny", "--size", "16", "16", "--coils", "2"])
    out = capsys.readouterr().out
    assert "## 1. one training step, 16×16, 2 coils" in out
    assert "modl-4x" in out and "mnmmol-4x" in out and "step / MoDL" in out
    assert "## 2. suite tiny on cpu:" in out
    assert "## 3. cpu against cpu, 1 test slice(s)" in out
    # the CPU against itself: the same numbers, so every model is within 0.01 dB
    table = out.split("## 3.")[1]
    assert table.count("True") == 3 and "False" not in table


def test_synthetic_batch_is_consistent():
    import torch

    batch, op = _bench().synthetic_batch((24, 20), 3, torch.device("cpu"))
    assert batch["maps"].shape == (1, 3, 24, 20) and batch["kspace"].shape == (1, 3, 24, 20)
    assert torch.allclose(batch["target"].abs().max(), torch.tensor(1.0))
    # the k-space is zero off the mask, and the coil maps are normalised (Σ|S|² = 1 where non-zero)
    assert torch.all(batch["kspace"][..., batch["mask"][0, 0] == 0] == 0)
    energy = batch["maps"].abs().pow(2).sum(1)
    assert torch.allclose(energy[energy > 0], torch.ones(()), atol=1e-4)


def test_tol_tightens_only_the_deq_solves():
    bench = _bench()
    assert bench._shipped("mnmmol-4x", 1e-7).settings.tol == 1e-7
    assert bench._shipped("mnmmol-4x", None).settings.tol == 1e-5  # the model's own eval_tol
    assert bench._shipped("modl-4x", 1e-7).settings is None  # MoDL has no fixed-point solve to tighten
