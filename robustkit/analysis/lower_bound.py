"""The largest valid lower bound of ``L[H](x; δ)`` that robustkit can find, from four estimators.

Every pass/fail against ``L[H_θ] ≤ 1 − m`` rests on this number (docs/certificates.md). Each
estimator below returns a ratio ``‖H(z₁) − H(z₂)‖ / ‖z₁ − z₂‖`` for a pair in the ball, or
``‖J v‖`` for a unit ``v``, so each is a LOWER bound of the local constant; they differ in which
directions they look at, and a single one can miss a slow direction by ≈ 2 % (issue 18):

- ``ball``:  two-point ascent from random pairs in ``B(x, δ‖x‖)`` (docs/maths.md, the paper's);
- ``slow``:  ascent from the pair ``x ± (d/2)‖x‖ r̂`` with ``r`` the residual after a few plain
  iterations of the fixed-point map from ``x`` (the slow mode), ``d`` = ``pair_distance``;
- ``top``:   ascent from the pair ``x ± (d/2)‖x‖ v̂`` with ``v`` the top right singular vector of
  ``J_H(x)`` (the Lanczos Ritz vector);
- ``power``: ``‖J_H(x')‖₂`` by the Lanczos process on ``JᵀJ`` at ``x' = x + 10⁻⁴‖x‖ r̂`` (``r`` random)
  — ``‖J v‖ ≤ L[H](x; δ)`` wherever ``H`` is differentiable at a point ``x'`` of the ball (the
  limit of pairs ``x' ± t v``, ``t → 0``). A ReLU CNN is differentiable almost everywhere, but a
  fixed point can sit exactly on a kink (an empty background of exact zeros), where autograd's
  ``ReLU'(0) = 0`` gives a matrix that is not a derivative; the random shift avoids that.

``estimate`` is the per-sample maximum of the four.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from robustkit import rng
from robustkit.analysis.lipschitz import (
    LipschitzResult,
    Operator,
    _norm,
    PowerIterationResult,
    jacobian_spectral_norm,
    local_lipschitz,
    pair_ratio,
    slow_direction,
)

#: relative distance from ``x`` at which the Jacobian-norm estimate linearises ``H`` (off the ReLU kinks).
POWER_SHIFT = 1e-4
#: the estimators of :func:`lipschitz_lower_bound`, in the order of the ``source`` codes.
ESTIMATORS: tuple[str, ...] = ("ball", "slow", "top", "power")


@dataclass
class LowerBound:
    """Result of :func:`lipschitz_lower_bound`; every tensor is ``(B,)``.

    Attributes:
        estimate: the largest of the four lower bounds (detached).
        source: which estimator gave it, per sample (names of :data:`ESTIMATORS`).
        pair_estimate: the largest of the three PAIR estimates; with ``differentiable=True`` it is
            recomputed at that pair with the graph of ``H`` (a training penalty can act on it).
        ball, slow, top: the :class:`~robustkit.analysis.lipschitz.LipschitzResult` of each ascent
            (``slow`` is ``None`` without a fixed-point map).
        power: the :class:`~robustkit.analysis.lipschitz.PowerIterationResult` of ``‖J_H(x)‖₂``.
    """

    estimate: torch.Tensor
    source: list[str]
    pair_estimate: torch.Tensor
    ball: LipschitzResult
    slow: LipschitzResult | None
    top: LipschitzResult
    power: PowerIterationResult

    def by_estimator(self) -> dict[str, torch.Tensor]:
        """``{"ball": (B,), "slow": (B,) or NaN, "top": (B,), "power": (B,)}``, detached."""
        nan = torch.full_like(self.ball.estimate.detach(), float("nan"))
        return {
            "ball": self.ball.estimate.detach(),
            "slow": nan if self.slow is None else self.slow.estimate.detach(),
            "top": self.top.estimate.detach(),
            "power": self.power.estimate.detach(),
        }


def lipschitz_lower_bound(
    H: Operator,
    x: torch.Tensor,
    delta: float,
    *,
    f: Operator | None = None,
    steps: int = 20,
    restarts: int = 2,
    seeded_steps: int = 10,
    slow_iters: int = 5,
    pair_distance: float = 0.01,
    power_iters: int = 100,
    power_tol: float = 1e-4,
    generator: torch.Generator | None = None,
    differentiable: bool = False,
) -> LowerBound:
    """The largest valid lower bound of ``L[H](x; δ)`` found by ball, slow-mode, top-singular and
    Jacobian-norm (Lanczos) estimates (module docstring).

    Args:
        H: the operator, e.g. ``model.H_map(op)`` (``H_θ(x) = x − AᴴA x − F_θ(x)/λ``), ``(B, ...) → (B, ...)``.
        x: the centre ``(B, ...)``, usually the fixed point ``x*``; every sample nonzero.
        delta: ball radius δ (relative to ``‖x‖``).
        f: the fixed-point map whose slow mode seeds the ``slow`` pair (e.g.
            ``model.fixed_point_map(b, op)``); ``None`` skips that estimator.
        steps, restarts: of the random-start ball ascent (*ref* 20, 2).
        seeded_steps: ascent steps of each seeded pair (one restart each).
        slow_iters: plain iterations of ``f`` from ``x`` that expose the slow mode.
        pair_distance: distance of the seeded pairs relative to ``‖x‖`` (0.005–0.01 works; ≤ 2δ).
        power_iters, power_tol: of :func:`~robustkit.analysis.lipschitz.jacobian_spectral_norm`.
        generator: RNG of the random starts (default: a fresh generator seeded 0).
        differentiable: give ``pair_estimate`` a graph to ``H``'s parameters.

    Returns:
        :class:`LowerBound`.
    """
    ball = local_lipschitz(H, x, delta, steps=steps, restarts=restarts, generator=generator)
    slow = None
    if f is not None:
        slow = local_lipschitz(H, x, delta, steps=seeded_steps, restarts=1, init=slow_direction(f, x, slow_iters),
                               pair_distance=pair_distance, generator=generator)
    # ‖J_H(x')‖₂ bounds L[H](x; δ) from below only where H is differentiable at x' ∈ B(x, δ‖x‖). A
    # ReLU CNN has kinks, and a fixed point can sit on one (pixels exactly 0 in an empty background,
    # where PyTorch's ReLU'(0) = 0 turns the Jacobian into a different matrix). A random shift of
    # 1e-4‖x‖ (far inside the ball) lands off the kinks almost surely.
    gen = generator if generator is not None else rng.generator(0)
    shift = rng.randn(x.shape, dtype=x.dtype, device=x.device, generator=gen)
    shift = shift * (POWER_SHIFT * _norm(x) / _norm(shift).clamp_min(torch.finfo(x.real.dtype).tiny)).reshape(-1, *([1] * (x.ndim - 1)))
    power = jacobian_spectral_norm(H, x + shift, iters=power_iters, tol=power_tol, generator=generator)
    top = local_lipschitz(H, x, delta, steps=seeded_steps, restarts=1, init=power.vector,
                          pair_distance=pair_distance, generator=generator)

    pairs = [r for r in (ball, slow, top) if r is not None]
    pair_values = torch.stack([r.estimate.detach() for r in pairs])  # (P, B)
    best_pair = pair_values.argmax(dim=0)
    if differentiable:
        u = torch.stack([r.u for r in pairs])[best_pair, torch.arange(x.shape[0], device=best_pair.device)]
        v = torch.stack([r.v for r in pairs])[best_pair, torch.arange(x.shape[0], device=best_pair.device)]
        with torch.enable_grad():
            pair_estimate = pair_ratio(H, x, delta, u, v)
    else:
        pair_estimate = pair_values.max(dim=0).values
    values = torch.stack(list(LowerBound(pair_estimate, [], pair_estimate, ball, slow, top, power).by_estimator().values()))
    filled = torch.nan_to_num(values, nan=-1.0)
    winner = filled.argmax(dim=0)
    # an estimator with no number (NaN) is left out; with none at all the bound is unknown (NaN), never passing
    estimate = torch.where(torch.isnan(values).all(dim=0), torch.full_like(filled[0], float("nan")), filled.max(dim=0).values)
    return LowerBound(
        estimate=estimate,
        source=[ESTIMATORS[int(i)] for i in winner],
        pair_estimate=pair_estimate,
        ball=ball,
        slow=slow,
        top=top,
        power=power,
    )
