"""Memory and time of one training step, and CNN evaluations of the DEQ forward (issue: benchmarks).

Prints two tables:

1. per model: bytes of tensors saved for backward (autograd saved-tensor hooks, deterministic;
   for ``+penalty``, the full MnM-MOL training step of ``robustkit train``, the larger of the
   fixed point's and the constraint term's, which are backpropagated one after the other),
   peak process memory growth during the step (ru_maxrss, measured in a fresh subprocess per
   model), CUDA max_memory_allocated when on a GPU, and the median time of a training step;
   ratios against MoDL K = 10 in the same run. The ``zoo:`` rows are the training step of the
   recipe each shipped model was trained with (its last stage): its own weights, its card's model
   config (solver tolerance and cap, backward) and training settings (constraint term included).
2. CNN evaluations for the MnM-MOL forward to reach relative residual 1e-3 from the SENSE start:
   the reference damped iteration (γ = 0.1), γ = 0.5, γ = 1, and Anderson (γ = 1).

Usage: python benchmarks/bench_training.py [--model-ref ZOO_NAME] [--steps 3]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import statistics
import subprocess
import sys
import time
import weakref

import torch

VARIANTS = {
    "modl-K1": ("modl", {"K": 1}),
    "modl-K5": ("modl", {"K": 5}),
    "modl-K10": ("modl", {"K": 10}),
    "modl-K20": ("modl", {"K": 20}),
    "mol": ("mol", {}),
    "mnmmol-implicit": ("mnmmol", {"backward": "implicit"}),
    "mnmmol-jfb": ("mnmmol", {"backward": "jfb"}),
    "mnmmol-phantom5": ("mnmmol", {"backward": "phantom", "phantom_steps": 5}),
    "mnmmol-implicit+penalty": ("mnmmol", {"backward": "implicit"}),
    "mnmmol-implicit-iters20": ("mnmmol", {"backward": "implicit", "tol": 0.0, "max_iter": 20}),
    "mnmmol-implicit-iters80": ("mnmmol", {"backward": "implicit", "tol": 0.0, "max_iter": 80}),
}
#: shipped models whose card recipe is measured as a ``zoo:NAME`` row
ZOO_RECIPES = ("modl-4x", "mol-4x", "mnmmol-4x")


def _batch(device):
    from robustkit.batch import operator_of, to_device
    from robustkit.data.builtin import ensure_builtin
    from robustkit.data.prepared import PreparedDataset

    ds = PreparedDataset(ensure_builtin(), split="test")
    batch = to_device({k: v[None] for k, v in ds[0].items()}, device)
    return batch, operator_of(batch)


def _model(name, config, ref, device):
    from robustkit.models import build_model
    from robustkit.models.zoo import load_model

    model = build_model(name, config)
    if ref:  # a trained CNN makes the DEQ solves realistic (a random CNN converges trivially)
        source, _ = load_model(ref)
        model.cnn.load_state_dict(source.cnn.state_dict())
        with torch.no_grad():
            model.lam.copy_(source.lam)
    return model.to(device).train()


def _recipe(variant: str, ref: str | None, device):
    """The model of one variant in training mode, and the TrainConfig of its constraint term
    (None: the step backpropagates the fixed point's loss alone)."""
    from robustkit.training import TrainConfig

    if variant.startswith("zoo:"):
        from robustkit.models.zoo import load_model

        model, card = load_model(variant[len("zoo:"):])
        return model.to(device).train(), TrainConfig(**card["training"])
    name, config = VARIANTS[variant]
    return _model(name, config, ref, device), TrainConfig(model=name) if variant.endswith("+penalty") else None


def one(variant: str, ref: str | None, steps: int) -> dict:
    """Measure one variant in this (fresh) process."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    batch, op = _batch(device)
    model, train_config = _recipe(variant, ref, device)
    saved: dict[int, int] = {}

    def pack(t):
        saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    with_penalty = train_config is not None
    if with_penalty:
        from robustkit.training import constraint_term

    # The constraint's ascent builds and frees a graph per step; what the step holds at its backward
    # is the saved tensors still alive then (weak references tell which).
    penalty_refs: list = []
    penalty_saved: dict[int, int] = {}

    def pack_penalty(t):
        penalty_refs.append((weakref.ref(t), t.untyped_storage().data_ptr(), t.untyped_storage().nbytes()))
        return t

    for i in range(steps):
        t0 = time.perf_counter()
        first = i == 0  # memory is measured on the first step; every step is timed
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t) if first else contextlib.nullcontext():
            x = model(batch["kspace"], op)
        loss = (x - batch["target"]).abs().pow(2).mean()
        loss.backward()
        if with_penalty:
            with torch.autograd.graph.saved_tensors_hooks(pack_penalty, lambda t: t) if first else contextlib.nullcontext():
                term, _ = constraint_term(model, x.detach(), batch["kspace"], op, train_config)
            if first:
                penalty_saved.update({ptr: n for ref, ptr, n in penalty_refs if ref() is not None})
            if term.requires_grad:  # MoDL has no constraint term
                term.backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        model.zero_grad(set_to_none=True)
    out = {
        "variant": variant,
        "saved_MB": max(sum(saved.values()), sum(penalty_saved.values())) / 2**20,
        "peak_rss_growth_MB": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024,
        "step_s": statistics.median(times),
    }
    if device.type == "cuda":
        out["cuda_max_MB"] = torch.cuda.max_memory_allocated() / 2**20
    stats = getattr(model, "last_stats", None)
    if stats is not None:
        out["fwd_iters"] = float(stats.iterations.float().mean())
    return out


def cnn_evals(ref: str | None) -> list[dict]:
    from robustkit.physics.sense import sense_init
    from robustkit.solvers import solve

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    batch, op = _batch(device)
    rows = []
    for label, gamma, method in [("damped γ=0.1 (reference)", 0.1, "damped"), ("damped γ=0.5", 0.5, "damped"),
                                 ("damped γ=1", 1.0, "damped"), ("Anderson γ=1", 1.0, "anderson")]:
        # The model's own map is the γ = 1 map x ↦ H_θ(x) + Aᴴb; the solver damps it by γ. The residual
        # is always that of the γ = 1 map, so a small damped step cannot pass for convergence (docs/maths.md §5).
        model = _model("mnmmol", {"gamma": 1.0}, ref, device).eval()
        with torch.no_grad():
            x0 = sense_init(op, batch["kspace"])
            x, stats = solve(lambda v: model.iteration(v, batch["kspace"], op), x0, method=method, tol=1e-3,
                             max_iter=2000, damping=gamma)
        rows.append({"solver": label, "cnn_evals": int(stats.f_evals), "converged": bool(stats.converged.all()),
                     "residual": float(stats.residual.max())})
    ref_evals = rows[0]["cnn_evals"]
    for r in rows:
        r["speed-up vs reference"] = ref_evals / r["cnn_evals"]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-ref", default="mnmmol", help="zoo model whose F_θ and λ are used (default: mnmmol); 'none' for random")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--solvers-only", action="store_true", help="print only the CNN-evaluations table")
    args = parser.parse_args()
    ref = None if args.model_ref == "none" else args.model_ref
    if args.solvers_only:
        import pandas as pd

        print(pd.DataFrame(cnn_evals(ref)).round(4).to_string(index=False))
        return
    if args.one:
        print(json.dumps(one(args.one, ref, args.steps)))
        return
    import pandas as pd

    rows = []
    for variant in [*VARIANTS, *(f"zoo:{name}" for name in ZOO_RECIPES)]:
        proc = subprocess.run([sys.executable, __file__, "--one", variant, "--model-ref", args.model_ref, "--steps", str(args.steps)],
                              capture_output=True, text=True, check=True)
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    table = pd.DataFrame(rows).set_index("variant")
    base = table.loc["modl-K10"]
    table["saved / MoDL K10"] = table["saved_MB"] / base["saved_MB"]
    table["step / MoDL K10"] = table["step_s"] / base["step_s"]
    pd.set_option("display.width", 200)
    print(f"# one training step, one 120×104 slice, 12 coils, device {'cuda' if torch.cuda.is_available() else 'cpu'}")
    print(table.round(3).to_string())
    print("\n# CNN evaluations of the MnM-MOL forward to relative residual 1e-3 from SENSE")
    print(pd.DataFrame(cnn_evals(ref)).round(3).to_string(index=False))


if __name__ == "__main__":
    main()
