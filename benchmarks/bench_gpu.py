"""GPU benchmark: training-step time and memory, the quick suite's wall-clock, CUDA against CPU.

Prints three tables, all measured in this one run:

1. **Training step** at ``--size`` (default 320×320) with ``--coils`` (default 15) coils, one slice,
   4× random Cartesian mask: MoDL (K = 10, CG-5 data consistency, autograd through the unroll) and
   MnM-MOL (Anderson forward to the model's tolerance, implicit backward, plus the constraint term of
   ``robustkit train``), both with the shipped weights (``modl-4x``, ``mnmmol-4x``; the CNN is
   convolutional, so it runs at any size). Median step time over ``--steps`` steps (the first step
   is a warm-up and not timed), ``torch.cuda.max_memory_allocated`` on CUDA, and the ratio
   MnM-MOL / MoDL. The image is a built-in test slice interpolated to the size; the coil maps are
   simulated ring coils (:func:`robustkit.physics.coils.birdcage_maps`).
2. **Quick suite**: the wall-clock of ``robustkit run quick`` (``--suite``) on the device, into a
   temporary reports folder.
3. **CUDA against CPU**: ``modl-4x``, ``mol-4x``, ``mnmmol-4x`` on ``--slices`` test slices, evaluated
   on the CPU and on CUDA; the largest |ΔPSNR| per model (bar: ≤ 0.01 dB) and whether the DEQ solves
   converged on both devices.

Usage (on a CUDA machine)::

    python benchmarks/bench_gpu.py                 # all three tables
    python benchmarks/bench_gpu.py --skip-suite    # tables 1 and 3
    python benchmarks/bench_gpu.py --skip-suite --skip-steps --tol 1e-7   # table 3, DEQ solves to 1e-7

``--tiny`` runs a small version (32×32, 4 coils, 1 step, a one-cell suite, 1 slice) that finishes
in seconds on a CPU, so that a test covers the code (tests/test_bench_gpu.py); without CUDA, table 3
then compares the CPU with itself and says so.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

#: shipped models of table 3
MODELS = ("modl-4x", "mol-4x", "mnmmol-4x")
#: the suite of --tiny: one attack cell on one slice
TINY_SUITE = """[defaults]
samples = 1
batch_size = 1

[attack]
models = ["modl"]
eps = [0.05]
kinds = ["gaussian"]
draws = 1
"""


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def synthetic_batch(size: tuple[int, int], coils: int, device: torch.device, seed: int = 0):
    """One slice ``(batch, op)`` at ``size``: a built-in test slice interpolated (real and imaginary
    parts, bilinear) to ``size``, ``coils`` normalised ring-coil maps, a 4× random Cartesian mask and
    its k-space ``b = M F S x``."""
    import numpy as np

    from robustkit.batch import operator_of
    from robustkit.data.builtin import ensure_builtin
    from robustkit.data.prepared import PreparedDataset
    from robustkit.physics.coils import birdcage_maps, normalise_maps
    from robustkit.physics.masks import cartesian_mask

    target = PreparedDataset(ensure_builtin(), split="test")[0]["target"]
    parts = torch.stack([target.real, target.imag])[None]
    parts = torch.nn.functional.interpolate(parts, size=size, mode="bilinear", align_corners=False)[0]
    x = torch.complex(parts[0], parts[1])
    x = x / x.abs().max()
    maps = torch.from_numpy(normalise_maps(birdcage_maps((coils, *size))).astype(np.complex64))
    mask = torch.from_numpy(cartesian_mask(size, 4.0, np.random.default_rng(seed)).astype(np.float32))
    batch = {"maps": maps[None].to(device), "mask": mask[None, None].to(device), "target": x[None].to(device)}
    op = operator_of(batch)
    batch["kspace"] = op.forward(batch["target"])
    return batch, op


def gradients(net, model, batch, op, config):
    """One training step's gradients, as ``robustkit train`` takes them: the loss through ``net``
    (``model`` itself, or ``model`` wrapped in DistributedDataParallel) and its backward, then the
    constraint term's backward (MoDL has none). Returns ``(loss, term)``; the caller steps."""
    from robustkit.training import constraint_term

    x = net(batch["kspace"], op)
    loss = (x - batch["target"]).abs().pow(2).mean()
    loss.backward()
    term, _ = constraint_term(model, x.detach(), batch["kspace"], op, config)
    if term.requires_grad:
        term.backward()
    return loss, term


def train_step_table(size: tuple[int, int], coils: int, steps: int, device: torch.device):
    """Table 1: one training step per model (median seconds, CUDA peak memory)."""
    import pandas as pd

    from robustkit.models.zoo import load_model
    from robustkit.training import TrainConfig

    batch, op = synthetic_batch(size, coils, device)
    rows = []
    for name in ("modl-4x", "mnmmol-4x"):
        model, card = load_model(name)
        model = model.to(device).train()
        config = TrainConfig(**card["training"])
        optimiser = torch.optim.Adam(model.parameters(), lr=1e-5)
        times, iterations = [], []
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        for i in range(steps + 1):  # step 0 warms up (kernels, allocator) and is not timed
            _sync(device)
            t0 = time.perf_counter()
            optimiser.zero_grad(set_to_none=True)
            gradients(model, model, batch, op, config)
            optimiser.step()
            _sync(device)
            if i > 0:
                times.append(time.perf_counter() - t0)
            stats = getattr(model, "last_stats", None)
            if stats is not None:
                iterations.append(float(stats.iterations.float().mean()))
        rows.append({
            "model": name,
            "step_s": statistics.median(times),
            "cuda_max_GB": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan"),
            "forward_iterations": statistics.mean(iterations) if iterations else float("nan"),
        })
    table = pd.DataFrame(rows).set_index("model")
    table["step / MoDL"] = table["step_s"] / table.loc["modl-4x", "step_s"]
    table["memory / MoDL"] = table["cuda_max_GB"] / table.loc["modl-4x", "cuda_max_GB"]
    return table


def suite_wall_clock(suite: str, device: torch.device) -> float:
    """Table 2: seconds of ``robustkit run SUITE`` on ``device`` (reports in a temporary folder)."""
    from robustkit.studies.suite import run_suite

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        run_suite(suite, {"device": str(device), "seed": 0}, reports_dir=Path(tmp) / "reports", progress=False)
        return time.perf_counter() - t0


def _shipped(name: str, tol: float | None):
    """The shipped model ``name`` in eval mode; with ``tol``, a DEQ model solves to that tolerance
    (cap 4000 iterations) instead of its own ``eval_tol``."""
    from robustkit.models.adapter import as_model
    from robustkit.models.zoo import load_model

    if tol is None:
        return as_model(name)
    model, _ = load_model(name)
    config = getattr(model, "config", None)
    if hasattr(config, "eval_tol"):
        config.eval_tol, config.eval_max_iter = tol, max(config.eval_max_iter, 4000)
    return as_model(model)


def device_agreement(slices: int, devices: tuple[torch.device, torch.device], tol: float | None = None):
    """Table 3: PSNR of the shipped models on ``slices`` test slices on two devices.

    Two converged solves agree only to within their tolerance: a relative residual r leaves
    ‖x − x*‖ ≤ r‖x‖ / (1 − L), so at r = 1e-5 and L ≈ 0.99 a DEQ model's PSNR may differ by about
    0.01 dB between devices that compute the same map. ``tol`` (``--tol``) tightens the DEQ solves
    to compare the maps themselves."""
    import pandas as pd

    from robustkit.data.evaluation import eval_dataset
    from robustkit.evaluate import evaluate

    dataset, _ = eval_dataset("builtin", "test", 4.0, samples=slices)
    rows = []
    for name in MODELS:
        runs = []
        for device in devices:
            model = _shipped(name, tol).to(device)
            runs.append(pd.DataFrame(evaluate(model, dataset, device=device, batch_size=slices)))
        a, b = runs
        row = {"model": name, f"psnr_1_{devices[0].type}": a["psnr"].mean(), f"psnr_2_{devices[1].type}": b["psnr"].mean(),
               "max_abs_dpsnr_dB": float((a["psnr"] - b["psnr"]).abs().max())}
        if "converged" in a:
            row["converged"] = f"{int(a['converged'].sum())}/{len(a)} and {int(b['converged'].sum())}/{len(b)}"
        else:
            row["converged"] = "—"
        row["within_0.01dB"] = row["max_abs_dpsnr_dB"] <= 0.01
        rows.append(row)
    return pd.DataFrame(rows).set_index("model")


def main(argv: list[str] | None = None) -> None:
    import pandas as pd

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="a small version for a CPU (seconds): 32×32, 4 coils, "
                                                              "1 step, a one-cell suite, 1 slice")
    parser.add_argument("--size", type=int, nargs=2, default=None, metavar=("H", "W"), help="[default: 320 320]")
    parser.add_argument("--coils", type=int, default=None, help="[default: 15]")
    parser.add_argument("--steps", type=int, default=None, help="timed training steps [default: 5]")
    parser.add_argument("--slices", type=int, default=None, help="slices of the CUDA-vs-CPU table [default: 4]")
    parser.add_argument("--suite", default=None, help="suite of table 2 [default: quick]")
    parser.add_argument("--skip-suite", action="store_true", help="leave out table 2")
    parser.add_argument("--skip-steps", action="store_true", help="leave out table 1")
    parser.add_argument("--tol", type=float, default=None, help="table 3: solve the DEQ models to this relative residual "
                                                                 "[default: each model's eval_tol, 1e-5]")
    args = parser.parse_args(argv)
    tiny = args.tiny
    size = tuple(args.size or ((32, 32) if tiny else (320, 320)))
    coils = args.coils or (4 if tiny else 15)
    steps = args.steps or (1 if tiny else 5)
    slices = args.slices or (1 if tiny else 4)
    from robustkit.device import resolve_device

    cuda = torch.cuda.is_available()
    device = resolve_device("auto")  # on CUDA also full fp32, as every robustkit command
    pd.set_option("display.width", 200)
    name = torch.cuda.get_device_name(device) if cuda else "CPU (no CUDA: a code check, not a GPU measurement)"
    print(f"# device: {name}; torch {torch.__version__}")

    if not args.skip_steps:
        print(f"\n## 1. one training step, {size[0]}×{size[1]}, {coils} coils, 1 slice (median of {steps})")
        print(train_step_table(size, coils, steps, device).round(4).to_string())

    if not args.skip_suite:
        with tempfile.TemporaryDirectory() as tmp:
            suite = args.suite
            if suite is None and tiny:
                suite = str(Path(tmp) / "tiny.toml")
                Path(suite).write_text(TINY_SUITE)
            suite = suite or "quick"
            seconds = suite_wall_clock(suite, device)
        print(f"\n## 2. suite {Path(suite).stem if tiny else suite} on {device.type}: {seconds:.1f} s ({seconds / 60:.2f} min)")

    devices = (torch.device("cpu"), device)
    solves = "each model's eval_tol" if args.tol is None else f"tol {args.tol:g}"
    print(f"\n## 3. {devices[0].type} against {devices[1].type}, {slices} test slice(s), DEQ solves to {solves}"
          + ("" if cuda else " — no CUDA here: the CPU against itself (code check only)"))
    print(device_agreement(slices, devices, args.tol).round(4).to_string())


if __name__ == "__main__":
    main()
