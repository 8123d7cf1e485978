"""How close is each DEQ backward to the exact gradient of a training loss? (issue: training recipe)

For a trained MnM-MOL and a few training slices, the gradient of the MSE at the fixed point with
respect to all parameters (θ, λ) from: an implicit backward solved tightly (the reference:
Anderson, ≤ 300 VJPs, residual 1e-6), the implicit backward as trained (≤ 30 VJPs, residual
2e-4), the phantom gradient with k = 5 and 10, and the Jacobian-free gradient. Prints, per slice
and variant, the cosine with the reference, the norm ratio, the backward's VJPs and residual, and
the time of the step.

Usage: python benchmarks/bench_backward_gradient.py [--model-ref ZOO_NAME] [--slices 0 7 20]
"""

from __future__ import annotations

import argparse
import time

import torch

VARIANTS = {
    "implicit ≤300 VJPs, 1e-6 (reference)": {"backward": "implicit", "backward_max_iter": 300, "backward_tol": 1e-6},
    "implicit ≤30 VJPs, 2e-4": {"backward": "implicit", "backward_max_iter": 30, "backward_tol": 2e-4},
    "phantom k=5": {"backward": "phantom", "phantom_steps": 5},
    "phantom k=10": {"backward": "phantom", "phantom_steps": 10},
    "jfb": {"backward": "jfb"},
}


def gradient(ref: str, overrides: dict, sample: dict) -> tuple[torch.Tensor, float, int | None, float | None]:
    from robustkit.batch import operator_of
    from robustkit.models.zoo import load_model

    model, _ = load_model(ref)
    for key, value in overrides.items():
        setattr(model.config, key, value)
    model.train()
    batch = {k: v[None] for k, v in sample.items()}
    op = operator_of(batch)
    t0 = time.perf_counter()
    x = model(batch["kspace"], op)
    (x - batch["target"]).abs().pow(2).mean().backward()
    seconds = time.perf_counter() - t0
    g = torch.cat([p.grad.flatten() for p in model.parameters()])
    back = model.last_stats.backward
    if back is None:
        return g, seconds, None, None
    return g, seconds, int(back.iterations.max()), float(back.residual.max())


def main() -> None:
    import pandas as pd

    from robustkit.data.builtin import ensure_builtin
    from robustkit.data.prepared import PreparedDataset
    from robustkit.physics.masks import MaskSpec

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-ref", default="mnmmol-4x-delta0.3")
    parser.add_argument("--slices", type=int, nargs="+", default=[0, 7, 20])
    args = parser.parse_args()
    torch.manual_seed(0)
    data = PreparedDataset(ensure_builtin(), split="train", mask=MaskSpec(accel=4.0), seed=0, vary=False)
    rows = []
    for i in args.slices:
        grads = {name: gradient(args.model_ref, cfg, data[i]) for name, cfg in VARIANTS.items()}
        reference = grads[next(iter(VARIANTS))][0]
        for name, (g, seconds, vjps, residual) in grads.items():
            rows.append({"slice": i, "backward": name, "cosine": float(g @ reference / (g.norm() * reference.norm())),
                         "norm ratio": float(g.norm() / reference.norm()), "VJPs": vjps, "residual": residual,
                         "step_s": seconds})
    pd.set_option("display.width", 200)
    print(f"# gradient of the fixed-point MSE w.r.t. θ and λ, {args.model_ref}, train slices {args.slices}, CPU")
    print(pd.DataFrame(rows).round(4).to_string(index=False))


if __name__ == "__main__":
    main()
