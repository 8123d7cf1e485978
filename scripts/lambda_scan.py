"""Validation scan of a zoo model's λ with its F_θ fixed: ``python scripts/lambda_scan.py MODEL SPLIT 1,1.5,2``.

For each factor s, λ ← s·λ and the model is scored on SPLIT of the built-in data: PSNR of the
tight solve for every model, and for DEQ models the convergence checks of
``robustkit models check`` (:func:`robustkit.analysis.checks.deq_checks`: residual, L_ball,
L_slow, starts in the ball). This is how the zoo's λ steps were chosen (see the cards' lineage).
Nothing is written.
"""

from __future__ import annotations

import sys

import torch

from robustkit.analysis.checks import deq_checks, summarize_checks
from robustkit.evaluate import evaluate
from robustkit.models.zoo import load_model
from robustkit.training import TrainConfig, _dataset


def main(name: str, split: str, factors: list[float]) -> None:
    model, card = load_model(name)
    dataset = _dataset(TrainConfig(model=model.name, accel=card["data"]["accel"]), split, vary=False)
    base = model.lam.detach().clone()
    for s in factors:
        with torch.no_grad():
            model.lam.copy_(base * s)
        if model.is_deq:
            summary = summarize_checks(deq_checks(model, dataset, model.config.delta), 1 - model.config.m)
        else:
            rows = evaluate(model, dataset)
            summary = {"n": len(rows), "psnr_mean": sum(r["psnr"] for r in rows) / len(rows)}
        cells = " ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in summary.items())
        print(f"λ × {s:g} = {float(model.lam.detach()):.3f}: {cells}", flush=True)


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit("usage: python scripts/lambda_scan.py MODEL SPLIT FACTORS  (e.g. mnmmol-4x val 1,1.2,1.7)")
    main(sys.argv[1], sys.argv[2], [float(v) for v in sys.argv[3].split(",")])
