"""The convergence checks a shipped DEQ model must pass (issue: model zoo), per slice.

For each slice with measurements ``b``: the fixed point ``x*`` from the SENSE start (tight solve),
its fixed-point residual, the largest lower bound of ``L[H_θ](x*; δ)`` robustkit finds (random-start
ball ascent, slow-mode and top-singular seeded pairs, ``‖J_{H_θ}(x*)‖₂``; see
:mod:`robustkit.analysis.lower_bound`), the observed contraction rate of the plain iteration
``x⁺ = H_θ(x) + Aᴴb`` next to it (flagged when it exceeds the largest estimate: the estimates miss
a direction), and whether a start inside the ball, ``x* + ρ δ‖x*‖ r`` for a random unit direction
``r``, reaches the same fixed point (docs/certificates.md).

Whether two starts reach the same fixed point is judged on solves much tighter than the distance
threshold: with contraction rate ``q`` along the slowest mode, an iterate with residual ``r`` can
lie ``≈ r / (1 − q)`` from the fixed point (docs/maths.md §5), so two solves stopped at the evaluation
tolerance 1e-5 with ``q ≈ 0.99`` can differ by ``≈ 2e-3`` while converging to one point.
"""

from __future__ import annotations

from typing import Any

import torch

from robustkit.analysis.contraction import ContractionRate, observed_contraction_rate, plain_map, rate_exceeds
from robustkit.analysis.lipschitz import local_lipschitz, slow_direction
from robustkit.analysis.lower_bound import LowerBound, lipschitz_lower_bound
from robustkit.batch import operator_of, to_device
from robustkit.evaluate import score
from robustkit.solvers import solve


def rel_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``‖a − b‖ / ‖b‖`` per sample, ``(B,)``."""
    return torch.linalg.vector_norm((a - b).flatten(1), dim=1) / torch.linalg.vector_norm(b.flatten(1), dim=1).clamp_min(1e-30)


def lipschitz_at(model, x_star: torch.Tensor, b: torch.Tensor, op, delta: float, steps: int, restarts: int,
                 slow_steps: int, generator: torch.Generator | None = None):
    """``(ball, slow)`` :class:`~robustkit.analysis.lipschitz.LipschitzResult` of ``L[H_θ](x*; δ)``:
    the two-point ascent from random pairs in ``B(x*, δ‖x*‖)`` (``steps``, ``restarts``, docs/maths.md §6)
    and the ascent seeded along the slowest mode of the model's update map (``slow_steps``, one
    restart, docs/maths.md §6; ``slow_steps = 0`` skips it and returns ``None`` in its place); both draw from
    ``generator``, ball first."""
    H = model.H_map(op)
    ball = local_lipschitz(H, x_star, delta, steps=steps, restarts=restarts, generator=generator)
    if slow_steps == 0:
        return ball, None
    f = model.fixed_point_map(b, op)
    slow = local_lipschitz(H, x_star, delta, steps=slow_steps, restarts=1, init=slow_direction(f, x_star), generator=generator)
    return ball, slow


def certificate_at(model, x_star: torch.Tensor, b: torch.Tensor, op, delta: float, *, steps: int = 20,
                   restarts: int = 2, seeded_steps: int = 10, power_iters: int = 100, power_tol: float = 1e-4,
                   rate_iters: int = 200, generator: torch.Generator | None = None) -> tuple[LowerBound, ContractionRate, torch.Tensor]:
    """``(bound, rate, disagree)`` at a DEQ model's fixed point ``x*``: the largest lower bound of
    ``L[H_θ](x*; δ)`` (:func:`~robustkit.analysis.lower_bound.lipschitz_lower_bound`, slow mode of
    the model's update map), the observed contraction rate of :func:`plain_map` near ``x*`` and
    ``(B,)`` bool ``rate > bound + RATE_TOLERANCE``."""
    bound = lipschitz_lower_bound(model.H_map(op), x_star, delta, f=model.fixed_point_map(b, op), steps=steps,
                                  restarts=restarts, seeded_steps=seeded_steps, power_iters=power_iters,
                                  power_tol=power_tol, generator=generator)
    rate = observed_contraction_rate(plain_map(model, b, op), x_star, iters=rate_iters, generator=generator)
    return bound, rate, rate_exceeds(rate.rate, bound.estimate)


def same_fixed_point(f, x_star: torch.Tensor, starts: list[torch.Tensor], tol: float = 1e-6, max_iter: int = 1000,
                     method: str = "anderson") -> tuple[torch.Tensor, torch.Tensor]:
    """Relative distances ``‖x_s − x*‖ / ‖x*‖`` ``(S, B)`` between the fixed point of ``f`` reached from
    ``x_star`` (refined once) and those reached from each of the ``S`` ``starts``, all solved to
    residual ``tol``, and whether both solves of each pair converged ``(S, B)`` bool. ``tol`` must sit
    well below the distance threshold times ``1 − q`` (module docstring)."""
    x_ref, ref_stats = solve(f, x_star, method=method, tol=tol, max_iter=max_iter)
    distances, converged = [], []
    for start in starts:
        x_s, s_stats = solve(f, start, method=method, tol=tol, max_iter=max_iter)
        distances.append(rel_distance(x_s, x_ref))
        converged.append(ref_stats.converged & s_stats.converged)
    if not distances:
        raise ValueError("same_fixed_point needs at least one start")
    return torch.stack(distances), torch.stack(converged)


def deq_checks(
    model,
    dataset,
    delta: float,
    device: torch.device | str = "cpu",
    steps: int = 20,
    restarts: int = 2,
    ball_radius: float = 0.5,
    seed: int = 0,
    limit: int | None = None,
    same_point_tol: float = 1e-6,
    power_iters: int = 100,
) -> list[dict[str, Any]]:
    """One row per slice: ``psnr``, ``iterations``, ``residual``, ``converged``; the lower bounds
    ``L_ball``, ``L_ball_change``, ``L_slow``, ``L_top`` (pair seeded on the top singular vector),
    ``jacobian_norm``, ``jacobian_converged``, their maximum ``L_max`` and which one gave it
    (``L_source``); the observed contraction rate ``rate`` and ``rate_exceeds_L``
    (``rate > L_max + 0.005``); ``ball_start_distance`` (relative distance of the fixed point
    reached from ``x* + ball_radius·δ‖x*‖ r`` to ``x*``, both solved to ``same_point_tol``) and
    ``ball_start_converged`` (both of those solves reached ``same_point_tol``). ``model``: a
    fixed-point model with ``H_map`` (a built-in DEQ, a user network or its
    :class:`~robustkit.models.adapter.ModelAdapter`)."""
    from robustkit.models.adapter import adapt

    lm = adapt(model)
    lm.require("H_map", "the convergence checks")
    lm.eval()
    rows = []
    g = torch.Generator(device="cpu").manual_seed(seed)
    n = len(dataset) if limit is None else min(limit, len(dataset))
    for i in range(n):
        batch = to_device({k: v[None] for k, v in dataset[i].items()}, device)
        op, b = operator_of(batch), batch["kspace"]
        f = lm.fixed_point_map(b, op)
        with torch.no_grad():
            x, stats = lm.solve(b, op)
            bound, rate, disagree = certificate_at(lm, x, b, op, delta, steps=steps, restarts=restarts,
                                                   power_iters=power_iters, generator=g)
            r = torch.complex(torch.randn(x.shape, generator=g), torch.randn(x.shape, generator=g)).to(x.device)
            r = r / torch.linalg.vector_norm(r.flatten(1), dim=1).reshape(-1, 1, 1)
            start = x + ball_radius * delta * torch.linalg.vector_norm(x.flatten(1), dim=1).reshape(-1, 1, 1) * r
            distance, both_converged = same_fixed_point(f, x, [start], tol=same_point_tol,
                                                        max_iter=2 * lm.settings.max_iter, method=lm.settings.method)
        rows.append({
            "index": int(batch["index"][0]),
            "psnr": float(score(x, batch["target"])["psnr"][0]),
            "iterations": int(stats.iterations[0]),
            "residual": float(stats.residual[0]),
            "converged": bool(stats.converged[0]),
            "L_ball": float(bound.ball.estimate[0]),
            "L_ball_change": float(bound.ball.last_rel_change[0]),
            "L_slow": float(bound.slow.estimate[0]),
            "L_top": float(bound.top.estimate[0]),
            "jacobian_norm": float(bound.power.estimate[0]),
            "jacobian_converged": bool(bound.power.converged[0]),
            "L_max": float(bound.estimate[0]),
            "L_source": bound.source[0],
            "rate": float(rate.rate[0]),
            "rate_exceeds_L": bool(disagree[0]),
            "ball_start_distance": float(distance[0, 0]),
            "ball_start_converged": bool(both_converged[0, 0]),
        })
    return rows


def _worst(values: list[float]) -> float:
    """The largest value, or NaN when any is NaN (an unknown value may be the largest)."""
    return float("nan") if any(v != v for v in values) else max(values)


def summarize_checks(rows: list[dict[str, Any]], threshold: float) -> dict[str, float]:
    """Fractions of slices passing each check (residual ≤ 1e-3, L ≤ T, same fixed point ≤ 1e-3).

    ``L_le_T`` is THE pass/fail: the largest lower bound ``L_max`` ≤ T (``L_ball_le_T`` and
    ``L_slow_le_T`` are single estimators, kept for comparison); ``rate_max`` is the largest
    observed contraction rate and ``rate_exceeds_L`` the fraction of slices where it exceeds
    ``L_max`` by more than the tolerance (the estimates miss a direction)."""
    n = len(rows)
    rates = [r["rate"] for r in rows if r["rate"] == r["rate"]]
    return {
        "n": n,
        "converged": sum(r["converged"] for r in rows) / n,
        "residual_le_1e-3": sum(r["residual"] <= 1e-3 for r in rows) / n,
        "L_le_T": sum(r["L_max"] <= threshold for r in rows) / n,
        "L_max_max": _worst([r["L_max"] for r in rows]),
        "jacobian_converged": sum(r["jacobian_converged"] for r in rows) / n,
        "rate_max": max(rates) if rates else float("nan"),
        "rate_exceeds_L": sum(r["rate_exceeds_L"] for r in rows) / n,
        "L_ball_le_T": sum(r["L_ball"] <= threshold for r in rows) / n,
        "L_slow_le_T": sum(r["L_slow"] <= threshold for r in rows) / n,
        "L_ball_max": _worst([r["L_ball"] for r in rows]),
        "L_slow_max": _worst([r["L_slow"] for r in rows]),
        "ball_start_same_fixed_point": sum(r["ball_start_distance"] <= 1e-3 for r in rows) / n,
        "psnr_mean": sum(r["psnr"] for r in rows) / n,
        "iterations_mean": sum(r["iterations"] for r in rows) / n,
    }
