"""An MnM-MOL model evaluated with other leaks κ than its own: convergence and ‖J_H(x*)‖₂.

For each slice of ``--data`` at ``--accel`` and each κ in ``--leaks``, the model's solve from SENSE
(its evaluation settings) with ``config.leak = κ`` (docs/maths.md §4): PSNR, iterations, residual,
converged, and the Lanczos lower bound of ``‖J_H(x*)‖₂`` (``--steps`` steps; a lower bound, with
its own convergence flag). For κ = 0 it also says where the top right singular vector ``v`` lives:
the fraction of ``‖v‖²`` inside the coil support (``Σ_c |S_c|² > 0``) and the fraction of its
k-space energy on the sampled phase-encode lines, so ``sampled ≈ 0`` means ``v`` lies in the null
space of ``A``.

The weights are those of the model, trained with its own κ: another κ changes the model's
equation, so the PSNR is that of a model that was not trained for it. What the table shows is how
the Jacobian's neutral directions respond to the leak.

``--power p`` (an experiment, not a model option) weights the leak by phase-encode frequency:
``H(x) = (I − κ W)(x − AᴴA x) − F_θ(x)/λ`` with ``W = F⁻¹ diag(|k_pe|/k_max)^p F``, so the pull
towards 0 acts mostly on the high frequencies; ``p = 0`` is the model's own flat leak. The script
replaces the instance's ``H`` for this (docs/convergence.md, "A leak weighted by frequency").

Usage::

    python scripts/leak_check.py --model mnmmol-4x --data builtin --accel 4 --samples 2 --leaks 0 0.04
    python scripts/leak_check.py --model mnmmol-4x --data knees120.h5 --samples 4 --leaks 0.04
    python scripts/leak_check.py --model mnmmol-4x --samples 2 --leaks 0.08 --power 1

Development tool: it prints numbers for docs/convergence.md; nothing here is a test.
"""

from __future__ import annotations

import argparse
import types
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    import pandas as pd


def weighted_leak(model, power: float) -> None:
    """Give ``model`` (an MnM-MOL) the leak ``κ W`` with ``W = F⁻¹ diag(|k_pe|/k_max)^power F``
    (module docstring); ``power = 0`` keeps its own ``H``. Built on the model's own ``H`` with its
    flat leak ``κ``: ``H_W(x) = H(x) + κ (I − W)(x − AᴴA x)``, which holds for the leak on
    ``(I − AᴴA) x`` towards 0 only; other leaks are refused."""
    if power == 0:
        return
    if (model.config.leak_on, model.config.leak_to) != ("unmeasured", "zero"):
        raise SystemExit(f"--power {power:g} weights the leak on (I − AᴴA) x towards 0; this model leaks on "
                         f"{model.config.leak_on!r} towards {model.config.leak_to!r}: use --power 0")
    from robustkit.physics.fft import fft2c, ifft2c

    own = model.H

    def H(self, x, op):  # noqa: N802 - the paper's name
        y = x - op.normal(x)
        w = 1 - torch.linspace(-1, 1, x.shape[-1], dtype=x.real.dtype, device=x.device).abs() ** power
        return own(x, op) + self.config.leak * ifft2c(fft2c(y) * w)

    model.H = types.MethodType(H, model)


def check(model_ref: str, data: str, accel: float, samples: int, leaks: list[float], steps: int,
          power: float = 0.0) -> "pd.DataFrame":
    import pandas as pd

    from robustkit.analysis.lipschitz import jacobian_spectral_norm
    from robustkit.batch import operator_of
    from robustkit.data.prepared import PreparedDataset
    from robustkit.metrics import psnr
    from robustkit.models.zoo import load_model
    from robustkit.physics.fft import fft2c
    from robustkit.physics.masks import MaskSpec
    from robustkit.training import TrainConfig, _dataset

    model, _ = load_model(model_ref)
    model.eval()
    weighted_leak(model, power)
    if data == "builtin":
        dataset = _dataset(TrainConfig(model="mnmmol", accel=accel), "test", vary=False)
    else:
        dataset = PreparedDataset(data, split="all", mask=MaskSpec(accel=accel))
    rows = []
    for i in range(min(samples, len(dataset))):
        batch = {k: v[None] for k, v in dataset[i].items()}
        op = operator_of(batch)
        for leak in leaks:
            model.config.leak = leak
            with torch.no_grad():
                x = model(batch["kspace"], op)
            stats = model.last_stats
            norm = jacobian_spectral_norm(model.H_map(op), x, iters=steps)
            row = {"slice": i, "leak": leak, "power": power, "psnr": float(psnr(x, batch["target"])), "iterations": int(stats.iterations[0]),
                   "residual": float(stats.residual[0]), "converged": bool(stats.converged[0]),
                   "norm_JH_lower": float(norm.estimate[0]), "norm_converged": bool(norm.converged[0])}
            if leak == 0:
                v = norm.vector[0]
                support = (op.maps[0].abs() ** 2).sum(0) > 0
                energy = v.abs() ** 2
                k = fft2c(v).abs() ** 2  # centred, like op.mask
                sampled = op.mask.reshape(-1, *op.mask.shape[-2:])[0].to(k.dtype)
                row["v_in_support"] = float((energy * support).sum() / energy.sum())
                row["v_on_sampled_lines"] = float((k * sampled).sum() / k.sum())
            rows.append(row)
            print(pd.DataFrame([row]).to_string(index=False, float_format=lambda v: f"{v:.4g}"), flush=True)
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mnmmol-4x")
    parser.add_argument("--data", default="builtin")
    parser.add_argument("--accel", type=float, default=4.0)
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--leaks", type=float, nargs="+", default=[0.0, 0.04])
    parser.add_argument("--steps", type=int, default=40, help="Lanczos steps of ‖J_H(x*)‖₂")
    parser.add_argument("--power", type=float, default=0.0,
                        help="weight the leak by (|k_pe|/k_max)^power along the phase-encode axis (0: flat)")
    args = parser.parse_args()
    frame = check(args.model, args.data, args.accel, args.samples, args.leaks, args.steps, args.power)
    print()
    print(frame.to_string(index=False, float_format=lambda v: f"{v:.4g}"))


if __name__ == "__main__":
    main()
