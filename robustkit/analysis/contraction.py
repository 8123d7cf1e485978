"""The OBSERVED contraction rate of a fixed-point iteration, to hold against the L estimates.

Near a fixed point ``x*`` the plain iteration ``x_{k+1} = f(x_k)`` (no damping, no Anderson)
shrinks the residual ``r_k = ‖f(x_k) − x_k‖ / ‖f(x_k)‖`` by ``r_{k+1}/r_k → ρ(J_f(x*))``, the
spectral radius of the Jacobian: the decay of the slowest mode. For ``f = H_θ + Aᴴb`` that is
``ρ(J_H) ≤ ‖J_H‖₂ ≤ L[H_θ](x*; δ)``, so an observed rate above the largest L estimate means the
estimators missed a direction (docs/certificates.md).

Measured here, per sample: start at ``x* + s‖x*‖ r`` (``r`` a random unit direction, ``s`` =
``start_distance``, 0.1: inside the ball for δ ≥ 0.1), run ``iters`` = 200 plain iterations, and take
the geometric mean of ``r_{k+1}/r_k`` over the last ``tail`` = 50 steps that start above the
numerical floor. With a dense spectrum near 1 the windowed rate still creeps up at 200 iterations
(default MnM-MOL: 0.978 over iterations 60–80, 0.990 over 180–200), so the observed rate is itself
an under-estimate of the asymptotic ``ρ(J_H)``; a flag it raises is real, its silence is not proof.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from robustkit.analysis.lipschitz import Operator, _default_generator, _norm, _per_sample, _random_unit

#: how far above the largest L estimate the observed rate may lie before the two are flagged.
RATE_TOLERANCE = 0.005


@dataclass
class ContractionRate:
    """Result of :func:`observed_contraction_rate`.

    Attributes:
        rate: ``(B,)`` geometric mean of ``r_{k+1}/r_k`` over the tail (NaN when no residual lies
            above the floor: the start was already at rounding level).
        trace: ``(iters + 1, B)`` the relative residual of every iterate.
        ratios_used: ``(B,)`` how many ratios entered the mean.
    """

    rate: torch.Tensor
    trace: torch.Tensor
    ratios_used: torch.Tensor


def observed_contraction_rate(
    f: Operator,
    x_star: torch.Tensor,
    *,
    iters: int = 200,
    tail: int = 50,
    start_distance: float = 0.1,
    floor: float | None = None,
    generator: torch.Generator | None = None,
) -> ContractionRate:
    """Observed contraction rate of the plain iteration ``x_{k+1} = f(x_k)`` near ``x_star``
    (module docstring). ``floor`` defaults to ``100 ε`` of the dtype (float32: ≈ 1.2e-5)."""
    from robustkit.solvers import solve

    if iters < 2 or tail < 1:
        raise ValueError(f"iters must be ≥ 2 and tail ≥ 1, got {iters}, {tail}")
    if not start_distance > 0:
        raise ValueError(f"start_distance must be > 0, got {start_distance}")
    x = x_star.detach()
    gen = _default_generator(x, generator)
    x0 = x + start_distance * _per_sample(_norm(x), x) * _random_unit(x, gen, None)
    _, stats = solve(f, x0, method="damped", damping=1.0, tol=0.0, max_iter=iters)
    trace = stats.trace
    if floor is None:
        floor = 100 * torch.finfo(trace.dtype).eps
    ok = torch.isfinite(trace) & (trace > floor)
    logs = torch.log(trace.clamp_min(torch.finfo(trace.dtype).tiny))
    steps = logs[1:] - logs[:-1]  # (iters, B)
    # r_{k+1} may sit at the rounding floor (≈ ε, ≤ 1 % of the floor): the ratio then over-states a
    # fast rate by at most ≈ 0.01, harmless next to rates near 1, and a fast iteration still gets one
    valid = ok[:-1] & torch.isfinite(trace[1:]) & (trace[1:] > 0)
    # keep only the last `tail` valid ratios of each sample
    from_end = torch.flip(torch.cumsum(torch.flip(valid.to(torch.int64), [0]), 0), [0])
    use = valid & (from_end <= tail)
    count = use.sum(dim=0)
    mean_log = torch.where(use, steps, torch.zeros_like(steps)).sum(dim=0) / count.clamp_min(1)
    rate = torch.where(count > 0, torch.exp(mean_log), torch.full_like(mean_log, float("nan")))
    return ContractionRate(rate=rate, trace=trace, ratios_used=count)


def plain_map(model, b: torch.Tensor, op) -> Operator:
    """``x ↦ H_θ(x) + c(b)`` of a model (``model.H_map(op)``, ``c = model.drive(b, op)``, ``Aᴴb``
    for a model without ``drive``) and measurements ``b``: the undamped iteration whose
    contraction ``L[H_θ] < 1`` guarantees (MnM-MOL's update at γ = 1; its fixed points are the
    model's at any γ)."""
    from robustkit.models.base import drive_of

    H, c = model.H_map(op), drive_of(model, b, op)
    return lambda x: H(x) + c


def rate_exceeds(rate: torch.Tensor, largest_L: torch.Tensor, tolerance: float = RATE_TOLERANCE) -> torch.Tensor:
    """``rate > largest_L + tolerance`` per sample (False where the rate is NaN): the L estimates
    miss a direction along which the iteration contracts more slowly than they allow."""
    return torch.nan_to_num(rate, nan=-1.0) > largest_L + tolerance
