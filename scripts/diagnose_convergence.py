"""Why does a DEQ stall where its local certificate looks healthy? One table per slice of facts.

For each slice of ``--data`` at ``--accel`` and a fixed-point model (default ``mnmmol-4x``):

- ``sense_dist``: ``‖x_SENSE − x_end‖/‖x_end‖``, whether the start lies outside ``B(x_end, δ‖x_end‖)``;
- the Anderson solve from SENSE (the model's settings, cap ``--cap``): iterations, residual,
  converged, PSNR; ``x_end`` is where it ends, a fixed point only if it converged;
- ``plain_res``: the relative residual of the plain iteration ``x ↦ H_θ(x) + Aᴴb`` after ``--cap``
  steps from SENSE, and ``plain_min`` its smallest value on the way (a stall, a cycle or a divergence);
- ``rate``: the observed contraction rate of the plain iteration started near ``x_end``
  (:func:`robustkit.analysis.contraction.observed_contraction_rate`);
- the four lower bounds of ``L[H_θ](x_end; δ)`` (:func:`robustkit.analysis.lower_bound.lipschitz_lower_bound`):
  ``ball`` (random starts), ``slow`` (slow-mode pair), ``top`` (top-singular pair), ``power`` (‖J_H‖₂),
  and ``ball_small``, the random-start ascent in a ball of radius ``--small-delta``;
- ``gt_dist``: where the Anderson solve started from the ground truth ends, relative to ``x_end``
  (a second fixed point?), with its convergence.

Usage::

    python scripts/diagnose_convergence.py --data builtin --accel 6 --samples 2
    python scripts/diagnose_convergence.py --data knees.h5 --samples 4   # scripts/knees_dev.py builds it

Development tool: it prints numbers for docs/convergence.md; nothing here is a test.
"""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    import pandas as pd


def _rel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm((a - b).flatten(1), dim=1) / torch.linalg.vector_norm(b.flatten(1), dim=1)


def diagnose(model_ref: str, data: str, accel: float, samples: int, cap: int, small_delta: float) -> "pd.DataFrame":
    import pandas as pd

    from robustkit.analysis.contraction import observed_contraction_rate, plain_map
    from robustkit.analysis.lower_bound import lipschitz_lower_bound
    from robustkit.analysis.lipschitz import local_lipschitz
    from robustkit.batch import operator_of
    from robustkit.data.evaluation import eval_dataset
    from robustkit.metrics import psnr
    from robustkit.models.adapter import as_model
    from robustkit.physics.sense import sense_init
    from robustkit.protocols import SolverSettings
    from robustkit.solvers import solve

    lm = as_model(model_ref).eval()
    delta = lm.delta or 0.3
    dataset, _ = eval_dataset(data, None, accel, samples=samples)
    batch = {k: torch.stack([dataset[i][k] for i in range(len(dataset))]) for k in ("kspace", "maps", "mask", "target")}
    op, b = operator_of(batch), batch["kspace"]
    base = lm.settings
    settings = SolverSettings(**{**base.to_dict(), "max_iter": cap})
    t0 = time.perf_counter()
    with torch.no_grad():
        x0 = sense_init(op, b)
        x_end, st = lm.solve(b, op, settings=settings)
        f = plain_map(lm, b, op)
        _, plain = solve(f, x0, method="damped", damping=1.0, tol=0.0, max_iter=cap)
        rate = observed_contraction_rate(f, x_end)
        x_gt, st_gt = lm.solve(b, op, x0=batch["target"], settings=settings)
    H = lm.H_map(op)
    bound = lipschitz_lower_bound(H, x_end.detach(), delta, f=lm.fixed_point_map(b, op))
    small = local_lipschitz(H, x_end.detach(), small_delta, steps=20, restarts=2)
    per = bound.by_estimator()
    rows = []
    for j in range(b.shape[0]):
        rows.append({
            "slice": j,
            "psnr": float(psnr(x_end, batch["target"])[j]),
            "iters": int(st.iterations[j]),
            "residual": float(st.residual[j]),
            "converged": bool(st.converged[j]),
            "sense_dist": float(_rel(x0, x_end)[j]),
            "plain_res": float(plain.trace[-1, j]),
            "plain_min": float(plain.trace[:, j].min()),
            "rate": float(rate.rate[j]),
            **{name: float(v[j]) for name, v in per.items()},
            f"ball_{small_delta:g}": float(small.estimate[j]),
            "gt_dist": float(_rel(x_gt, x_end)[j]),
            "gt_converged": bool(st_gt.converged[j]),
        })
    frame = pd.DataFrame(rows)
    frame.attrs["seconds"] = time.perf_counter() - t0
    frame.attrs["T"] = 1 - (lm.m if lm.m is not None else 0.02)
    return frame


def main() -> None:
    import pandas as pd

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="mnmmol-4x")
    parser.add_argument("--data", default="builtin")
    parser.add_argument("--accel", type=float, default=4.0)
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--cap", type=int, default=400)
    parser.add_argument("--small-delta", type=float, default=0.05)
    args = parser.parse_args()
    torch.manual_seed(0)
    frame = diagnose(args.model, args.data, args.accel, args.samples, args.cap, args.small_delta)
    pd.set_option("display.width", 250)
    print(f"# {args.model} on {args.data} at {args.accel:g}x, {args.samples} slice(s), cap {args.cap}, "
          f"T = 1 - m = {frame.attrs['T']:.4f}; {frame.attrs['seconds']:.0f} s")
    print(frame.to_string(index=False, float_format=lambda v: f"{v:.4g}"))


if __name__ == "__main__":
    main()
