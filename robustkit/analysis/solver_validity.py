"""Which fixed-point solver is legitimate for a DEQ model, per slice (docs/import.md, docs/maths.md).

MnM-MOL's reference iterates the damped step ``x⁺ = (1 − γ) x + γ (H_θ(x) + Aᴴb)`` with γ = 0.1.
That iteration contracts near ``x*`` when ``L[(1 − γ) I + γ H_θ](x*; δ) < 1``; robustkit's default,
γ = 1 with Anderson, iterates ``x ↦ H_θ(x) + Aᴴb`` itself and needs ``L[H_θ](x*; δ) < 1``. The
second implies the first (``L[(1−γ)I + γH] ≤ 1 − γ + γ L[H]``), not the converse: a Jacobian of
``H_θ`` with an eigenvalue ``μ`` of modulus > 1 but ``|1 − γ + γμ| < 1`` (e.g. ``μ = −1.5``, γ = 0.1)
contracts the damped step only. Both constants are estimated by the two-point ascent from random
pairs and from a pair on the iteration's slow mode; each estimate is a LOWER bound, so an estimate
≥ 1 proves a non-contractive direction, while one < 1 only says none was found.

MOL iterates a forward–backward step, not ``H_θ``: for it only the update map's constant is
estimated (``L_H`` is NaN).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from robustkit import rng
from robustkit.analysis.lipschitz import local_lipschitz, slow_direction
from robustkit.models.base import drive_of

Operator = Callable[[torch.Tensor], torch.Tensor]

#: the damping of the MnM-MOL reference (maneeshrj/MnM-MOL solvers.py, deGrad: gamma = 0.1/λ on λ(…) + F_θ).
REFERENCE_GAMMA = 0.1

VERDICTS = {
    "H_theta": "no estimate of L[H_θ] reached 1 (lower bounds: no non-contractive direction found, not a proof "
               "of contraction): γ = 1 with Anderson is not ruled out",
    "damped-only": "only the damped step contracts: keep γ = {gamma:g} with plain iteration; "
                   "γ = 1 / Anderson is not justified (L[H_θ] ≥ 1 found)",
    "neither": "no contraction: L ≥ 1 found for the damped step too; the fixed point is not guaranteed",
    "step": "the update map contracts: its solver is valid",
    "no-step": "the update map does not contract (L ≥ 1 found): the fixed point is not guaranteed",
}


@dataclass
class SolverValidity:
    """Per-sample estimates at the model's fixed point ``x*``.

    Attributes:
        gamma: the damping γ of the step tested (the model's own when < 1, else the reference 0.1);
            NaN for models whose update map is not a damped ``H_θ`` step (MOL).
        L_H: ``(B,)`` largest lower bound found of ``L[H_θ](x*; δ)`` (NaN for MOL).
        L_step: ``(B,)`` largest lower bound found of ``L[(1 − γ) I + γ H_θ](x*; δ)``, or of the
            update map for MOL.
        verdict: per sample, a key of :data:`VERDICTS`.
        delta: the ball radius δ used.
    """

    gamma: float
    L_H: torch.Tensor  # noqa: N815 - the paper's name
    L_step: torch.Tensor  # noqa: N815
    verdict: list[str]
    delta: float

    def explain(self, i: int) -> str:
        return VERDICTS[self.verdict[i]].format(gamma=self.gamma)


def damped_step(H: Operator, gamma: float) -> Operator:
    """``x ↦ (1 − γ) x + γ H(x)``: the damped iteration's map without its constant ``γ Aᴴb``."""
    return lambda x: (1 - gamma) * x + gamma * H(x)


def largest_lower_bound(G: Operator, f: Operator, x: torch.Tensor, delta: float, steps: int, restarts: int,
                        slow_steps: int, generator: torch.Generator | None) -> torch.Tensor:
    """``(B,)`` max of the random-pair ascent and the ascent seeded on the slow mode of the
    iteration ``x ↦ f(x)`` (``slow_steps = 0`` skips it), both lower bounds of ``L[G](x; δ)``."""
    best = local_lipschitz(G, x, delta, steps=steps, restarts=restarts, generator=generator).estimate
    if slow_steps > 0:
        seed = slow_direction(f, x)
        slow = local_lipschitz(G, x, delta, steps=slow_steps, restarts=1, init=seed, generator=generator).estimate
        best = torch.maximum(best, slow)
    return best.detach()


def _has_damped_h_step(model) -> bool:
    return hasattr(model.config, "gamma")


def solver_validity(model, kspace: torch.Tensor, op, *, x_star: torch.Tensor | None = None, gamma: float | None = None,
                    delta: float | None = None, steps: int = 20, restarts: int = 2, slow_steps: int = 10,
                    generator: torch.Generator | None = None, known_L_H: torch.Tensor | None = None) -> SolverValidity:
    """Estimate ``L[H_θ](x*; δ)`` and ``L[(1 − γ)I + γH_θ](x*; δ)`` and say which solver they allow.

    Args:
        model: a DEQ model (MnM-MOL; MOL gets its update map's constant only).
        kspace: measurements ``b`` ``(B, C, H, W)``; op: their SENSE operator.
        x_star: the fixed point ``(B, H, W)`` (default: solved here with the model's own solver).
        gamma: γ of the damped step (default: the model's γ when < 1, else the reference 0.1).
        delta: ball radius δ (default: the model's, else 0.3).
        steps, restarts, slow_steps: of the two-point ascents (docs/maths.md).
        generator: RNG of the ascents.
        known_L_H: ``(B,)`` lower bounds of ``L[H_θ](x*; δ)`` found elsewhere (``models check``'s
            Lanczos and top-singular estimates); ``L_H`` is the largest of them and the ascents', so
            the verdict never rests on a smaller bound than the caller already has.
    """
    delta = float(delta if delta is not None else getattr(model.config, "delta", 0.3))
    if x_star is None:
        with torch.no_grad():
            x_star = model(kspace, op)
    x_star = x_star.detach()
    f = model.fixed_point_map(kspace, op)
    if not _has_damped_h_step(model):
        L_step = largest_lower_bound(f, f, x_star, delta, steps, restarts, slow_steps, generator)
        verdict = ["step" if v < 1 else "no-step" for v in L_step.tolist()]
        return SolverValidity(float("nan"), torch.full_like(L_step, float("nan")), L_step, verdict, delta)
    if gamma is None:
        own = float(model.config.gamma)
        gamma = own if own < 1 else REFERENCE_GAMMA
    if not 0 < gamma <= 1:
        raise ValueError(f"gamma must lie in (0, 1], got {gamma}")
    H = model.H_map(op)
    atb = drive_of(model, kspace, op)  # Aᴴb, or the model's own right-hand side
    G = damped_step(H, gamma)
    L_H = largest_lower_bound(H, lambda x: H(x) + atb, x_star, delta, steps, restarts, slow_steps, generator)
    if known_L_H is not None:
        L_H = torch.maximum(L_H, torch.as_tensor(known_L_H, dtype=L_H.dtype, device=L_H.device).reshape(L_H.shape))
    L_step = largest_lower_bound(G, lambda x: G(x) + gamma * atb, x_star, delta, steps, restarts, slow_steps,
                                 generator)
    verdict = ["H_theta" if h < 1 else "damped-only" if s < 1 else "neither"
               for h, s in zip(L_H.tolist(), L_step.tolist())]
    return SolverValidity(float(gamma), L_H, L_step, verdict, delta)


def validity_rows(model, dataset, device: torch.device | str = "cpu", limit: int | None = None, seed: int = 0,
                  known_L_H: list[float] | None = None, **kwargs: Any) -> list[dict[str, Any]]:
    """One row per slice of ``dataset``: ``index, gamma, delta, L_H, L_step, verdict``. ``known_L_H``:
    per slice, a lower bound of ``L[H_θ]`` found elsewhere (:func:`solver_validity`)."""
    from robustkit.batch import operator_of, to_device

    model.eval()
    g = rng.generator(seed)
    n = len(dataset) if limit is None else min(limit, len(dataset))
    rows = []
    for i in range(n):
        batch = to_device({k: v[None] for k, v in dataset[i].items()}, device)
        known = None if known_L_H is None else torch.tensor([known_L_H[i]])
        v = solver_validity(model, batch["kspace"], operator_of(batch), generator=g, known_L_H=known, **kwargs)
        rows.append({"index": int(batch["index"][0]), "gamma": v.gamma, "delta": v.delta,
                     "L_H": float(v.L_H[0]), "L_step": float(v.L_step[0]), "verdict": v.verdict[0]})
    return rows


def summarize_validity(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts of each verdict, the largest estimates and the verdict that holds on every slice
    (the weakest one found: one slice without contraction decides)."""
    order = ["neither", "no-step", "damped-only", "H_theta", "step"]
    verdicts = [r["verdict"] for r in rows]
    worst = min(verdicts, key=order.index)
    gamma = rows[0]["gamma"]
    return {
        "n": len(rows),
        "gamma": gamma,
        "L_H_max": max(r["L_H"] for r in rows),
        "L_step_max": max(r["L_step"] for r in rows),
        "counts": {v: verdicts.count(v) for v in order if v in verdicts},
        "verdict": worst,
        "explanation": VERDICTS[worst].format(gamma=gamma),
    }
