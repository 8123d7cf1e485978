"""Does the gradient used to attack a DEQ model limit the attack? (not a test)

The adversarial attack differentiates MnM-MOL (or MOL) through its fixed point. The implicit
backward solves ``g = J_fᴴ g + ∂ℓ/∂x*`` with a capped number of VJPs; a truncated or approximate
gradient (``jfb``, ``phantom``) could make the model look more robust than it is. This runs the same
PGD attack (same seed, steps, ε) with each gradient and prints the PSNR each one takes off, side by
side, with the time per attack.

Usage: python benchmarks/bench_attack_gradient.py [--model mnmmol] [--samples 4] [--steps 5] [--eps 0.05]
"""

from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mnmmol")
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--eps", type=float, default=0.05)
    args = parser.parse_args()

    import pandas as pd

    from robustkit.studies import make_config
    from robustkit.studies.attack import CleanCache, attack_cell
    from robustkit.studies.common import load_models, study_dataset

    variants = [("jfb", {"backward": "jfb"}), ("phantom k=5", {"backward": "phantom", "phantom_steps": 5}),
                ("implicit ≤30 VJPs", {"backward": "implicit", "backward_max_iter": 30}),
                ("implicit ≤100 VJPs", {"backward": "implicit", "backward_max_iter": 100, "backward_tol": 1e-5})]
    device = torch.device("cpu")
    rows = []
    for label, settings in variants:
        config = make_config("attack", {"models": [args.model], "samples": args.samples, "eps": [args.eps],
                                        "kinds": ["adversarial"], "steps": args.steps, "examples": 0,
                                        "deq_backward": settings["backward"]})
        dataset = study_dataset(config)
        (lm,) = load_models(config.models, dataset, config.accel, device)
        for key, value in settings.items():
            setattr(lm.model.config, key, value)
        t0 = time.perf_counter()
        frame, _ = attack_cell(lm, "adversarial", args.eps, config, dataset, device, CleanCache(), None)
        rows.append({"gradient": label, "psnr_drop_mean": frame["psnr_drop"].mean(), "psnr_drop_min": frame["psnr_drop"].min(),
                     "amplification": frame["amplification"].mean(), "attack_loss": frame["attack_loss"].mean(),
                     "seconds": time.perf_counter() - t0})
    table = pd.DataFrame(rows)
    table["loss_vs_implicit100"] = table["attack_loss"] / table["attack_loss"].iloc[-1]
    print(f"{lm.name}: PGD-ℓ2, ε = {args.eps}, {args.steps} steps, {len(dataset)} test slices")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))


if __name__ == "__main__":
    main()
