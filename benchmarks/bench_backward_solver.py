"""Which solver should the implicit backward use? Anderson vs GMRES on the shipped DEQs (not a test)

One attack step's backward on the built-in test slices: the gradient of
``ℓ = ‖x*(b + γ) − x*(b)‖²`` at a random ``γ`` of relative size ε (what PGD differentiates after
its random start), through the model's implicit backward ``(I − J_fᴴ) g = ∂ℓ/∂x*``. For each
backward solver it prints the VJPs used (iterations + 1), the verified residual
``‖J_fᴴ g + ∂ℓ/∂x* − g‖ / ‖J_fᴴ g + ∂ℓ/∂x*‖``, whether it met ``backward_tol``, the gradient's
relative distance to a tight reference (GMRES to 1e-7, ≤ 150 VJPs) and the backward's wall time.

Usage: python benchmarks/bench_backward_solver.py [--models mnmmol-4x mol-4x] [--samples 2] [--eps 0.05]
"""

from __future__ import annotations

import argparse
import time

import torch

VARIANTS = [  # label, backward_method, backward_max_iter, backward_tol
    ("anderson ≤30", "anderson", 30, 2e-4),
    ("anderson ≤100", "anderson", 100, 2e-4),
    ("gmres ≤30", "gmres", 30, 2e-4),
    ("gmres ≤60", "gmres", 60, 2e-4),
    ("reference: gmres 1e-7 ≤150", "gmres", 150, 1e-7),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mnmmol-4x", "mol-4x"])
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--eps", type=float, default=0.05)
    args = parser.parse_args()

    import pandas as pd

    from robustkit.batch import operator_of
    from robustkit.studies import make_config
    from robustkit.studies.common import batches, load_models, study_dataset

    device = torch.device("cpu")
    config = make_config("attack", {"models": args.models, "samples": args.samples, "eps": [args.eps],
                                    "kinds": ["adversarial"], "steps": 1, "examples": 0})
    dataset = study_dataset(config)
    rows = []
    for lm in load_models(config.models, dataset, config.accel, device):
        lm.set_backward("implicit")
        batch = next(iter(batches(dataset, args.samples, device)))
        op, b = operator_of(batch), batch["kspace"]
        with torch.no_grad():
            x_clean, clean_stats = lm.solve(b, op)
        gen = torch.Generator().manual_seed(0)
        noise = torch.randn(b.shape, dtype=b.dtype, generator=gen) * op.mask
        gamma = args.eps * noise * (torch.linalg.vector_norm(b) / torch.linalg.vector_norm(noise))
        grads = {}
        for label, method, cap, tol in VARIANTS:
            for key, value in (("backward_method", method), ("backward_max_iter", cap), ("backward_tol", tol)):
                setattr(lm.model.config, key, value)
            kspace = (b + gamma).detach().requires_grad_(True)
            x = lm(kspace, op, x_clean)
            loss = (x - x_clean).abs().pow(2).sum()
            t0 = time.perf_counter()
            (grads[label],) = torch.autograd.grad(loss, kspace)
            seconds = time.perf_counter() - t0
            back = lm.last_stats.backward
            for j in range(b.shape[0]):
                rows.append({"model": lm.name, "sample": j, "backward": label, "vjps": int(back.iterations[j]) + 1,
                             "residual": float(back.residual[j]), "converged": bool(back.converged[j]),
                             "grad_error": None, "backward_s": seconds,
                             "forward_converged": bool(lm.last_stats.converged[j])})
        ref = grads[VARIANTS[-1][0]]
        for row in rows:
            if row["model"] == lm.name:
                g, r = grads[row["backward"]][row["sample"]], ref[row["sample"]]
                row["grad_error"] = float(torch.linalg.vector_norm(g - r) / torch.linalg.vector_norm(r))
        print(f"{lm.name}: clean solve converged {clean_stats.converged.tolist()}", flush=True)
    table = pd.DataFrame(rows)
    print(f"one attack step's implicit backward, ε = {args.eps}, {args.samples} built-in test slices, 1 batch "
          "(backward_s: the whole batch)")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3g}"))


if __name__ == "__main__":
    main()
