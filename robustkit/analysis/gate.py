"""The convergence gate a trained deep-equilibrium model must pass before training calls it done.

Three checks on the validation slices (docs/training.md), each passed when at least
``fraction`` (default 95 %) of the slices pass it:

- ``converged``: from the SENSE start, the fixed-point residual ``‖f(x) − x‖ / ‖f(x)‖`` reaches
  the model's evaluation tolerance ``eval_tol`` within ``eval_max_iter`` iterations;
- ``lipschitz``: the largest lower bound found of the constrained constant is ``≤ T = 1 − m``:
  ``L[H_θ](x*; δ)`` for MnM-MOL (the larger of the ball and slow-mode ascents),
  ``L[F_θ](x*; 0.3)`` for MOL and MOL-SN (:func:`lipschitz_bound`, the one call to swap for a
  stronger estimator);
- ``ball_starts``: a start ``x* + ½ δ‖x*‖ r`` inside the ball reaches the SENSE-started fixed point
  (relative distance ``≤ same_point``, both solves converged).

The per-slice measurements are those of ``robustkit models check``
(:func:`robustkit.analysis.checks.deq_checks`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from robustkit.analysis.checks import deq_checks
from robustkit.analysis.lipschitz import local_lipschitz
from robustkit.batch import operator_of, to_device

#: ball radius of the MOL constraint's estimate of L[F_θ] (the training estimate's, docs/training.md).
MOL_RADIUS = 0.3

#: what to try when a check fails, per check.
ADVICE: dict[str, str] = {
    "converged": "an MnM-MOL leak if the model has none (--set leak=0.04), train more epochs, tighten the constraint "
                 "(lower --penalty-threshold or higher --penalty-weight) or allow more iterations (--set eval_max_iter=…)",
    "lipschitz": "raise --penalty-weight, lower --penalty-threshold, more --lipschitz-steps (training's estimate is "
                 "weaker than the gate's) or train more epochs",
    "ball_starts": "tighten the constraint (lower --penalty-threshold) or train with a smaller ball (--delta)",
}


@dataclass
class GateConfig:
    """Thresholds of the gate; ``threshold=None`` is the model's ``1 − m``."""

    fraction: float = 0.95
    threshold: float | None = None
    same_point: float = 1e-3
    limit: int | None = 8
    seed: int = 0


@dataclass
class GateResult:
    """The outcome: one entry per check with ``value`` (fraction of slices passing), ``required``,
    ``passed`` and details; ``passed`` is all of them."""

    checks: list[dict[str, Any]] = field(default_factory=list)
    n: int = 0
    psnr: float = float("nan")  # mean PSNR of the SENSE-started solves (dB)

    @property
    def passed(self) -> bool:
        return all(c["passed"] for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "n": self.n, "psnr": self.psnr, "checks": [dict(c) for c in self.checks]}

    @property
    def failed_check(self) -> str | None:
        """Name of the first failed check, ``None`` when the gate passed."""
        return next((c["name"] for c in self.checks if not c["passed"]), None)

    def failure(self, where: str) -> str:
        """One line: the first failed check, its measured value and what to try."""
        c = next(c for c in self.checks if not c["passed"])
        return (f"convergence gate '{c['name']}' failed {where}: {c['text']} on {c['value']:.0%} of {self.n} validation "
                f"slices (needs ≥ {c['required']:.0%}); try: {ADVICE[c['name']]}")


def lipschitz_bound(model, x_star: torch.Tensor, row: dict[str, Any], generator: torch.Generator) -> float:
    """The largest lower bound robustkit finds of the model's constrained Lipschitz constant at
    ``x*`` ``(1, H, W)``: ``L_max``, the largest of the ball, slow-mode, top-singular and power
    estimates of ``L[H_θ](x*; δ)`` from the ``models check`` row, for MnM-MOL (docs/certificates.md);
    ``L[F_θ](x*; 0.3)`` by the two-point ascent (20 steps, 2 restarts) for MOL."""
    if model.name == "mnmmol":
        return row["L_max"]
    with torch.no_grad():
        res = local_lipschitz(model.cnn, x_star, MOL_RADIUS, steps=20, restarts=2, generator=generator)
    return float(res.estimate[0])


def convergence_gate(model, dataset, device: torch.device | str = "cpu", config: GateConfig | None = None) -> GateResult:
    """Run the three checks on up to ``config.limit`` slices of ``dataset`` (model left in eval mode)."""
    config = config or GateConfig()
    c = model.config
    delta = getattr(c, "delta", MOL_RADIUS)
    T = 1 - c.m if config.threshold is None else config.threshold
    rows = deq_checks(model, dataset, delta, device, seed=config.seed, limit=config.limit)
    g = torch.Generator(device="cpu").manual_seed(config.seed)
    L = []
    for i, row in enumerate(rows):  # deq_checks scores dataset[0], dataset[1], … in order
        x_star = None
        if model.name != "mnmmol":
            batch = to_device({k: v[None] for k, v in dataset[i].items()}, device)
            with torch.no_grad():
                x_star = model(batch["kspace"], operator_of(batch))
        L.append(lipschitz_bound(model, x_star, row, g))
    n = len(rows)
    conv = [r["residual"] <= c.eval_tol for r in rows]
    same = [r["ball_start_converged"] and r["ball_start_distance"] <= config.same_point for r in rows]
    name = "L[H_θ](x*; δ)" if model.name == "mnmmol" else "L[F_θ](x*; 0.3)"
    checks = [
        {"name": "converged", "value": sum(conv) / n, "text": f"the residual from SENSE reached eval_tol {c.eval_tol:g} "
         f"(max residual {max(r['residual'] for r in rows):.2e})"},
        {"name": "lipschitz", "value": sum(v <= T for v in L) / n, "text": f"{name} ≤ {T:g} (largest estimate {max(L):.4f})",
         "L_max": max(L), "threshold": T},
        {"name": "ball_starts", "value": sum(same) / n, "text": f"a start at ½δ‖x*‖ inside the ball reached the same fixed point "
         f"(≤ {config.same_point:g}; largest distance {max(r['ball_start_distance'] for r in rows):.2e})"},
    ]
    for check in checks:
        check.update(required=config.fraction, passed=check["value"] >= config.fraction)
    result = GateResult(checks=checks, n=n, psnr=sum(r["psnr"] for r in rows) / n)
    # Under torchrun every rank evaluates the gate; all take rank 0's verdict. On GPUs the ranks may
    # run other convolution algorithms, and a slice at a threshold could pass on one rank and fail
    # on another: that rank would stop while the others wait for it at the next collective.
    from robustkit.distributed import all_gather_object

    return all_gather_object(result)[0]

