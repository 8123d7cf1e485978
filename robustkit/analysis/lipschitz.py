"""Lipschitz estimates of an operator ``H`` (docs/maths.md §2, §4, §6).

In robustkit ``H`` is usually ``H_θ(x) = x − AᴴA x − F_θ(x)/λ``; ``L[H_θ] ≤ T = 1 − m`` makes
``Q_θ = I − H_θ`` m-monotone. Every estimator here takes any callable ``H: (B, ...) → (B, ...)``
on complex or real tensors, treats samples independently (``H`` must not mix the batch, which
holds for ``H_θ`` and ``F_θ``) and returns per-sample numbers with its own convergence record:

- :func:`local_lipschitz` — two-point projected gradient ascent in the ball ``B(x, δ‖x‖)``
  (docs/maths.md §6), a LOWER bound of the local constant ``L[H](x; δ)``; differentiable in θ for training.
- :func:`slow_direction` — the slow mode of a fixed-point map, to seed the ascent (docs/maths.md §6).
- :func:`jacobian_spectral_norm` — ``‖J_H(x)‖₂`` by the Lanczos process (default) or power iteration
  on ``JᵀJ``.
- :func:`jacobian_spectral_radius` — ``|λ_max(J_H(x))|`` by power iteration on ``J``.
- :func:`penalty` — the training penalty on an estimate, quadratic or log barrier.

Complex tensors are treated as vectors of ``ℝ^{2n}`` (the real and imaginary parts of
``torch.view_as_real``), so a map that is not holomorphic (a CNN on the 2-channel view) has a
well-defined real Jacobian. PyTorch's autograd is consistent with that view: the vector-Jacobian
product of a complex map is the adjoint of its real-linear Jacobian under ``Re⟨a, b⟩``, so no
explicit conversion is needed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Literal

import torch

from robustkit import rng
from robustkit.solvers.fixed_point import _flatten, _unflatten

Operator = Callable[[torch.Tensor], torch.Tensor]
AscentCallback = Callable[[int, int, torch.Tensor, torch.Tensor, torch.Tensor], None]

__all__ = [
    "LipschitzResult",
    "PowerIterationResult",
    "local_lipschitz",
    "slow_direction",
    "jacobian_spectral_norm",
    "jacobian_spectral_radius",
    "penalty",
]


# ----------------------------------------------------------------------------- helpers


def _norm(x: torch.Tensor) -> torch.Tensor:
    """Per-sample Euclidean norm over all but the first dim: ``(B, ...) → (B,)`` (real)."""
    return torch.linalg.vector_norm(x.reshape(x.shape[0], -1), dim=1)


def _per_sample(s: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape a ``(B,)`` tensor to broadcast against ``like`` ``(B, ...)``."""
    return s.reshape((-1,) + (1,) * (like.ndim - 1))


def _default_generator(x: torch.Tensor, generator: torch.Generator | None) -> torch.Generator:
    # Never the global RNG: a fixed seed when the caller gives no generator.
    return generator if generator is not None else rng.generator(0)


def _randn_like(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return rng.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)


def _random_unit(x: torch.Tensor, generator: torch.Generator, support: torch.Tensor | None) -> torch.Tensor:
    """Random per-sample unit vector (restricted to ``support``), shape of ``x``."""
    g = _randn_like(x, generator)
    if support is not None:
        g = g * support
    n = _norm(g)
    return g / _per_sample(n.clamp_min(torch.finfo(n.dtype).tiny), g)


def _project_ball(u: torch.Tensor) -> torch.Tensor:
    """Projection onto the unit ball ``{‖u‖ ≤ 1}`` per sample: ``u / max(1, ‖u‖)``."""
    return u / _per_sample(_norm(u).clamp_min(1.0), u)


def _check_support(support: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor | None:
    if support is None:
        return None
    if support.is_complex():
        raise ValueError("support must be a real or boolean mask (e.g. Σ_c|S_c|² > 0), got a complex tensor")
    try:
        torch.broadcast_shapes(support.shape, x.shape)
    except RuntimeError as err:
        raise ValueError(f"support of shape {tuple(support.shape)} does not broadcast to x {tuple(x.shape)}") from err
    s = (support != 0).to(device=x.device, dtype=x.real.dtype)
    if bool((_norm(s.expand(x.shape)) == 0).any()):
        raise ValueError("support is empty for at least one sample; pass a mask with nonzero entries")
    return s


# ----------------------------------------------------------------------------- local Lipschitz


@dataclass
class LipschitzResult:
    """Result of :func:`local_lipschitz`.

    Attributes:
        estimate: ``(B,)`` the best ratio ``‖H(z₁) − H(z₂)‖ / ‖z₁ − z₂‖`` found over all restarts
            (a lower bound of ``L[H](x; δ)``); carries a graph to θ when ``differentiable=True``.
        trace: ``(steps, B)`` the ratio after each ascent step, of each sample's best restart.
        last_rel_change: ``(B,)`` ``(r_K − r_{K−1}) / r_K`` of that restart's last step (0 when
            the last step was rejected by the backtracking rule: no improvement at that step size).
        restarts: number of restarts run.
        steps: ascent steps per restart.
        u, v: ``x``-shaped, the best pair in unit-ball coordinates (``z = x + ε u``), detached.
        separation: ``(B,)`` ``‖z₁ − z₂‖ / ‖x‖`` of the best pair (close pairs probe the
            Jacobian, far pairs the ball).
    """

    estimate: torch.Tensor
    trace: torch.Tensor
    last_rel_change: torch.Tensor
    restarts: int
    steps: int
    u: torch.Tensor
    v: torch.Tensor
    separation: torch.Tensor


def slow_direction(f: Operator, x: torch.Tensor, iters: int = 5) -> torch.Tensor:
    """The slow mode of the fixed-point iteration ``x_{k+1} = f(x_k)`` near ``x`` (docs/maths.md §6).

    Runs ``iters`` plain iterations from ``x_0 = x`` without graph and returns the residual
    ``r = f(x_n) − x_n`` (shape of ``x``, not normalised): fast components decay as ``ρ_fast^n``,
    so near a fixed point ``r`` points along the slowest direction. Pass it as ``init=`` to
    :func:`local_lipschitz`.
    """
    if iters < 0:
        raise ValueError(f"iters must be ≥ 0, got {iters}")
    with torch.no_grad():
        z = x.detach()
        for _ in range(iters):
            z = f(z)
        return f(z) - z


def _ratio(H: Operator, x: torch.Tensor, eps: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``‖H(x + εu) − H(x + εv)‖ / (ε‖u − v‖)`` per sample, ``(B,)``.

    Two calls of ``H`` (not one on a ``2B`` batch): ``H_θ`` closes over a batched SENSE operator.
    """
    e = _per_sample(eps, x)
    num = _norm(H(x + e * u) - H(x + e * v))
    den = eps * _norm(u - v)
    return num / den.clamp_min(torch.finfo(den.dtype).tiny)


def pair_ratio(H: Operator, x: torch.Tensor, delta: float, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The two-point ratio ``‖H(z₁) − H(z₂)‖ / ‖z₁ − z₂‖`` at ``z₁ = x + εu``, ``z₂ = x + εv``,
    ``ε = δ‖x‖`` (``u, v`` in unit-ball coordinates, e.g. a :class:`LipschitzResult`'s pair), ``(B,)``;
    with the graph of ``H`` when grad is enabled (the training penalty differentiates it)."""
    return _ratio(H, x, delta * _norm(x), u, v)


def _ascent(
    H: Operator,
    x: torch.Tensor,
    eps: torch.Tensor,
    u: torch.Tensor,
    v: torch.Tensor,
    steps: int,
    step_size: float,
    support: torch.Tensor | None,
    callback: AscentCallback | None,
    restart: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One restart of the projected, normalised-gradient ascent with per-sample backtracking.

    Returns ``(u, v, ratio (B,), trace (steps, B), last_rel_change (B,))``, all detached.
    """

    def value_and_grad(u_: torch.Tensor, v_: torch.Tensor):
        u_ = u_.detach().requires_grad_(True)
        v_ = v_.detach().requires_grad_(True)
        r = _ratio(H, x, eps, u_, v_)
        # Gradients w.r.t. u, v only: parameters of H get no .grad and no graph survives.
        gu, gv = torch.autograd.grad(r.sum(), (u_, v_))
        if support is not None:
            gu, gv = gu * support, gv * support
        return r.detach(), gu, gv

    eta = torch.full((x.shape[0],), float(step_size), dtype=eps.dtype, device=x.device)
    r, gu, gv = value_and_grad(u, v)
    trace = []
    prev = r
    for k in range(steps):
        gnorm = torch.sqrt(_norm(gu) ** 2 + _norm(gv) ** 2)
        # Step length relative to the pair's separation: the ratio is scale-free in u − v, so a
        # pair seeded 0.01‖x‖ apart is refined as gently as a far pair (docs/maths.md §6, slow mode).
        length = eta * _norm(u - v) / gnorm.clamp_min(torch.finfo(gnorm.dtype).tiny)
        u_new = _project_ball(u + _per_sample(length, u) * gu)
        v_new = _project_ball(v + _per_sample(length, v) * gv)
        r_new, gu_new, gv_new = value_and_grad(u_new, v_new)
        accept = r_new > r
        a = _per_sample(accept, u)
        prev = r
        u, v = torch.where(a, u_new, u), torch.where(a, v_new, v)
        gu, gv = torch.where(a, gu_new, gu), torch.where(a, gv_new, gv)
        r = torch.where(accept, r_new, r)
        eta = torch.where(accept, eta * 1.5, eta * 0.5)
        trace.append(r)
        if callback is not None:
            callback(restart, k, u, v, r)
    trace_t = torch.stack(trace) if trace else r.unsqueeze(0)
    last = (r - prev) / r.clamp_min(torch.finfo(r.dtype).tiny)
    return u, v, r, trace_t, last


def local_lipschitz(
    H: Operator,
    x: torch.Tensor,
    delta: float,
    *,
    steps: int = 20,
    restarts: int = 2,
    step_size: float = 0.5,
    support: torch.Tensor | None = None,
    init: Literal["random", "slow-mode"] | torch.Tensor = "random",
    slow_mode_map: Operator | None = None,
    pair_distance: float | None = None,
    generator: torch.Generator | None = None,
    differentiable: bool = False,
    callback: AscentCallback | None = None,
) -> LipschitzResult:
    """Local Lipschitz constant ``L[H](x; δ)`` by two-point projected gradient ascent (docs/maths.md §6).

    ``z₁ = x + ε u``, ``z₂ = x + ε v``, ``ε = δ‖x‖`` per sample, ``‖u‖, ‖v‖ ≤ 1``; maximise
    ``R(u, v) = ‖H(z₁) − H(z₂)‖ / ‖z₁ − z₂‖``. Every ratio found is a LOWER bound of the local
    constant; ``estimate`` is the best over ``restarts``.

    Step rule: normalised gradient ascent on ``(u, v)`` jointly, step length
    ``η_k ‖u − v‖`` (relative to the pair's separation, since ``R`` of a linear map depends only
    on the direction of ``u − v``), then projection onto the unit BALL (``u / max(1, ‖u‖)``,
    not the MOL reference's sphere). Per sample, a step is kept only if it raises ``R``
    (then ``η ← 1.5 η``), else it is rejected (``η ← η/2``): the trace never decreases and each
    step costs two calls of ``H`` plus one backward.

    Args:
        H: operator ``(B, ...) → (B, ...)``, complex or real, per-sample.
        x: centre of the ball ``(B, ...)``; every sample must be nonzero.
        delta: relative ball radius δ > 0.
        steps: ascent steps per restart (*ref* 20; 10 for the slow-mode seed).
        restarts: independent starts; the per-sample maximum is kept. With a slow-mode seed,
            restart 0 starts on the seed and the others at random.
        step_size: initial relative step ``η₀``.
        support: real/bool mask broadcastable to ``x`` (e.g. coil support ``Σ_c|S_c|² > 0``);
            the perturbations ``u, v`` are zero outside it.
        init: ``"random"`` (u, v uniform in the unit ball), ``"slow-mode"`` (the direction
            :func:`slow_direction` of ``slow_mode_map``), or a direction tensor ``r`` shaped like
            ``x``: ``u = +a r̂``, ``v = −a r̂`` with ``a = pair_distance / (2δ)``, i.e.
            ``z₁,₂ = x ± (pair_distance‖x‖/2) r̂``.
        slow_mode_map: the fixed-point map ``f`` for ``init="slow-mode"``.
        pair_distance: seeded pair distance relative to ``‖x‖`` (default 0.01); at most 2δ.
        generator: RNG for the random starts (default: a fresh generator seeded 0; never global).
        differentiable: when True, ``estimate`` is recomputed with graph at the final pair so
            that ``∂estimate/∂θ`` flows to H's parameters (and to ``x`` if it requires grad);
            the ascent itself runs on detached copies and is not differentiated.
        callback: called after every step as ``callback(restart, step, u, v, ratio)`` with the
            current (accepted, projected) iterates — a debug hook, e.g. to check ``‖u‖ ≤ 1``.

    Returns:
        :class:`LipschitzResult`.
    """
    if delta <= 0 or not math.isfinite(delta):
        raise ValueError(f"delta must be a positive finite number, got {delta}")
    if steps < 1:
        raise ValueError(f"steps must be ≥ 1, got {steps}")
    if restarts < 1:
        raise ValueError(f"restarts must be ≥ 1, got {restarts}")
    if not step_size > 0:
        raise ValueError(f"step_size must be positive, got {step_size}")
    if x.ndim < 2:
        raise ValueError(f"x must be batched (B, ...), got shape {tuple(x.shape)}")
    if isinstance(init, str) and init not in ("random", "slow-mode"):
        raise ValueError(f"init must be 'random', 'slow-mode' or a direction tensor, got {init!r}")
    if isinstance(init, str) and init == "slow-mode" and slow_mode_map is None:
        raise ValueError("init='slow-mode' needs slow_mode_map (the fixed-point map f) or pass the direction tensor as init")
    if isinstance(init, torch.Tensor) and init.shape != x.shape:
        raise ValueError(f"init direction of shape {tuple(init.shape)} must match x {tuple(x.shape)}")
    if pair_distance is None:
        pair_distance = 0.01
    if not 0 < pair_distance <= 2 * delta:
        raise ValueError(f"pair_distance must be in (0, 2δ] = (0, {2 * delta}], got {pair_distance}")

    x0 = x.detach()
    xnorm = _norm(x0)
    if bool((xnorm == 0).any()):
        raise ValueError("x has an all-zero sample: the relative ball δ‖x‖ is empty; pass nonzero images")
    eps = delta * xnorm
    mask = _check_support(support, x0)
    gen = _default_generator(x0, generator)

    direction: torch.Tensor | None = None
    if isinstance(init, torch.Tensor):
        direction = init.detach().to(device=x0.device, dtype=x0.dtype)
    elif init == "slow-mode":
        direction = slow_direction(slow_mode_map, x0)  # type: ignore[arg-type]

    def uniform_ball() -> torch.Tensor:
        n = float(x0[0].numel() * (2 if x0.is_complex() else 1))
        radius = rng.rand((x0.shape[0],), generator=gen, device=x0.device, dtype=eps.dtype) ** (1.0 / n)
        return _random_unit(x0, gen, mask) * _per_sample(radius, x0)

    best = None
    for restart in range(restarts):
        if direction is not None and restart == 0:
            d = direction * mask if mask is not None else direction
            dn = _norm(d)
            # A zero residual (x exactly at the fixed point) has no slow mode: random direction.
            d = torch.where(_per_sample(dn > 0, d), d / _per_sample(dn.clamp_min(torch.finfo(dn.dtype).tiny), d), _random_unit(x0, gen, mask))
            a = pair_distance / (2 * delta)
            u, v = a * d, -a * d
        else:
            u, v = uniform_ball(), uniform_ball()
        with torch.enable_grad():
            out = _ascent(H, x0, eps, u, v, steps, step_size, mask, callback, restart)
        if best is None:
            best = list(out)
        else:
            better = out[2] > best[2]
            b_ = _per_sample(better, x0)
            best = [
                torch.where(b_, out[0], best[0]),
                torch.where(b_, out[1], best[1]),
                torch.where(better, out[2], best[2]),
                torch.where(better.unsqueeze(0), out[3], best[3]),
                torch.where(better, out[4], best[4]),
            ]
    u, v, ratio, trace, last = best  # type: ignore[misc]
    if differentiable:
        with torch.enable_grad():
            estimate = pair_ratio(H, x, delta, u, v)
    else:
        estimate = ratio
    return LipschitzResult(
        estimate=estimate,
        trace=trace,
        last_rel_change=last,
        restarts=restarts,
        steps=steps,
        u=u,
        v=v,
        separation=delta * _norm(u - v),
    )


# ----------------------------------------------------------------------------- Jacobian norm: power iteration, Lanczos


@dataclass
class PowerIterationResult:
    """Result of :func:`jacobian_spectral_norm` / :func:`jacobian_spectral_radius`.

    Attributes:
        estimate: ``(B,)`` for the norm the largest ``‖J v_k‖`` over the unit iterates ``v_k`` (each
            a lower bound of ``‖J‖₂``); for the radius the last one.
        trace: ``(iterations, B)`` ``‖J v_k‖`` after each iteration.
        last_rel_change: ``(B,)`` ``(s_k − s_{k−w}) / s_k``: the relative increase over the last
            ``window`` iterations (``inf`` before ``window + 1`` iterations).
        rayleigh_residual: ``(B,)`` ``‖JᵀJ v − s² v‖ / s²`` at the last iterate (norm only: how far
            ``v`` is from a right singular vector; NaN for the radius).
        converged: ``(B,)`` bool: the stopping rule held at the last iteration (never at the cap
            while the estimate still climbs, see :func:`jacobian_spectral_norm`).
        iterations: iterations run (stops early once every sample converged).
        vector: ``x``-shaped, the last unit iterate ``v_k`` (leading right singular vector /
            eigenvector estimate), detached.
        method: ``"power"`` or ``"lanczos"``. For Lanczos (:func:`_lanczos`) ``trace`` holds the Ritz
            values ``sqrt(θ_max(T_k))``, ``vector`` the unit Ritz vector, ``rayleigh_residual`` the Ritz
            residual ``β_k |e_kᵀ y| / θ_max`` and ``estimate`` the witnessed ``‖J v_ritz‖``.
    """

    estimate: torch.Tensor
    trace: torch.Tensor
    last_rel_change: torch.Tensor
    converged: torch.Tensor
    iterations: int
    vector: torch.Tensor
    rayleigh_residual: torch.Tensor | None = None
    method: str = "power"


def plateaued(trace: torch.Tensor, window: int, tol: float) -> torch.Tensor:
    """Whether a rising estimate has stopped rising: ``(s_k − s_{k−w}) / s_k < tol`` per sample.

    ``trace`` is ``(k + 1, B)``; the increase is measured over the last ``w = window`` iterations,
    not one, so a slowly but steadily climbing sequence (each step below ``tol``, the sum over ``w``
    steps above it) does not stop. False (for every sample) before ``window + 1`` entries.
    """
    if trace.shape[0] <= window:
        return torch.zeros(trace.shape[1:], dtype=torch.bool, device=trace.device)
    rise = (trace[-1] - trace[-1 - window]).abs() / trace[-1].abs().clamp_min(torch.finfo(trace.dtype).tiny)
    return rise < tol


def _last_rise(trace: torch.Tensor, window: int) -> torch.Tensor:
    """``(s_k − s_{k−w}) / s_k`` of a ``(k + 1, B)`` trace, ``(B,)``; ``inf`` before ``window + 1`` entries."""
    if trace.shape[0] <= window:
        return torch.full_like(trace[-1], float("inf"))
    return (trace[-1] - trace[-1 - window]).abs() / trace[-1].abs().clamp_min(torch.finfo(trace.dtype).tiny)


class _Linearisation:
    """``J = ∂H/∂x`` at ``x`` from ONE forward graph: ``Jᵀw`` by backward, ``Jv`` by the
    double-backward trick (``Jv = ∂/∂w ⟨Jᵀw, v⟩``, exact since ``Jᵀw`` is linear in ``w``).
    For complex tensors both are the real-linear maps on ``ℝ^{2n}`` (module docstring)."""

    def __init__(self, H: Operator, x: torch.Tensor):
        self.x = x.detach().requires_grad_(True)
        self.y = H(self.x)
        if self.y.shape[0] != x.shape[0]:
            raise ValueError(f"H must keep the batch size: got {tuple(self.y.shape)} from {tuple(x.shape)}")
        self.w = torch.zeros_like(self.y, requires_grad=True)
        (self.jt_w,) = torch.autograd.grad(self.y, self.x, self.w, create_graph=True)

    def jvp(self, v: torch.Tensor) -> torch.Tensor:
        (out,) = torch.autograd.grad(self.jt_w, self.w, v, retain_graph=True)
        return out

    def vjp(self, w: torch.Tensor) -> torch.Tensor:
        (out,) = torch.autograd.grad(self.y, self.x, w, retain_graph=True)
        return out


def _start_vector(x: torch.Tensor, generator: torch.Generator | None, init: torch.Tensor | None) -> torch.Tensor:
    """Unit start vector per sample: ``init`` normalised, or random from ``generator``; a sample
    whose ``init`` is zero (or not finite) gets the random one. The random vector is drawn even when
    ``init`` is given, so ``generator`` advances the same way with and without ``init`` and the
    estimators drawn after this one see the same random numbers either way."""
    random = _random_unit(x.detach(), _default_generator(x, generator), None)
    if init is None:
        return random
    if init.shape != x.shape:
        raise ValueError(f"init must have the shape of x {tuple(x.shape)}, got {tuple(init.shape)}")
    init = init.detach().to(dtype=x.dtype, device=x.device)
    n = _norm(init)
    ok = torch.isfinite(n) & (n > 0)
    unit = init / _per_sample(torch.where(ok, n, torch.ones_like(n)), init)
    return torch.where(_per_sample(ok, init), unit, random)


def _check_power_args(iters: int, tol: float, window: int, x: torch.Tensor) -> None:
    if iters < 1:
        raise ValueError(f"iters must be ≥ 1, got {iters}")
    if not tol > 0:
        raise ValueError(f"tol must be positive, got {tol}")
    if window < 1:
        raise ValueError(f"window must be ≥ 1, got {window}")
    if x.ndim < 2:
        raise ValueError(f"x must be batched (B, ...), got shape {tuple(x.shape)}")


def _power_iteration(
    step: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]],
    x: torch.Tensor,
    iters: int,
    tol: float,
    window: int,
    rayleigh_tol: float | None,
    generator: torch.Generator | None,
    keep_max: bool,
    init: torch.Tensor | None = None,
) -> PowerIterationResult:
    """Generic loop: ``step(v) → (s, v_next, rayleigh)`` with ``s (B,)`` the estimate at unit ``v``
    and ``rayleigh (B,)`` its Rayleigh-quotient residual (``None``: not available, not tested);
    ``keep_max``: report the largest ``s`` seen (each is a lower bound), else the last."""
    v = _start_vector(x, generator, init)
    trace: list[torch.Tensor] = []
    tiny = torch.finfo(x.real.dtype).tiny
    converged = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    rayleigh = None
    for _ in range(iters):
        s, v_next, rayleigh = step(v)
        trace.append(s.detach())
        converged = plateaued(torch.stack(trace), window, tol)
        if rayleigh is not None and rayleigh_tol is not None:
            converged = converged & (rayleigh < rayleigh_tol)
        n = _norm(v_next)
        # J v = 0 (a zero Jacobian on this vector): keep v, the estimate 0 is exact for it.
        v = torch.where(_per_sample(n > 0, v), v_next / _per_sample(n.clamp_min(tiny), v), v)
        if bool(converged.all()):
            break
    stacked = torch.stack(trace)
    return PowerIterationResult(
        estimate=stacked.max(dim=0).values if keep_max else stacked[-1],
        trace=stacked,
        last_rel_change=_last_rise(stacked, window),
        converged=converged,
        iterations=len(trace),
        vector=v.detach(),
        rayleigh_residual=None if rayleigh is None else rayleigh.detach(),
    )


#: β_k ≤ this × eps × θ_max counts as a breakdown of the Lanczos process (an invariant Krylov space).
_BREAKDOWN = 100.0


def _lanczos(
    lin: _Linearisation,
    x: torch.Tensor,
    iters: int,
    tol: float,
    window: int,
    rayleigh_tol: float,
    generator: torch.Generator | None,
    init: torch.Tensor | None = None,
) -> PowerIterationResult:
    """Largest eigenvalue of ``A = JᵀJ`` per sample by the Lanczos process with full
    reorthogonalisation (docs/maths.md §6); every sample runs its own process on ``ℝ^m``.

    ``q₁`` random unit (or ``init``, normalised); step ``k``: ``w = A q_k``, ``α_k = ⟨q_k, w⟩``, ``w ← w − α_k q_k − β_{k−1} q_{k−1}``,
    then ``w ← w − Q_k Q_kᵀ w`` twice, ``β_k = ‖w‖``, ``q_{k+1} = w / β_k``. ``T_k`` (``k × k``
    tridiagonal, ``α`` on the diagonal, ``β`` beside it) is ``Q_kᵀ A Q_k``, so its top eigenpair
    ``(θ, y)`` gives ``θ = max_{v ∈ span Q_k, ‖v‖ = 1} ‖J v‖²``: ``sqrt(θ)`` is a lower bound of
    ``‖J‖₂`` at every ``k`` and never decreases in ``k``. A sample stops (and is frozen: its
    ``q_{k+1} = 0`` and the coupling ``β_k`` is not entered in ``T``, so ``T`` stays block-diagonal)
    when ``sqrt(θ)`` rose by less than ``tol`` over ``window`` steps and the Ritz residual
    ``‖A v − θ v‖ / θ = β_k |y_k| / θ`` is below ``rayleigh_tol``, or at a breakdown
    ``β_k ≈ 0`` (``span Q_k`` is invariant: ``θ`` is an eigenvalue of ``A``). The reported
    ``estimate`` is ``‖J v‖`` at the unit Ritz vector ``v = Q_k y`` (one more ``Jv``): a lower bound
    by construction, equal to ``sqrt(θ)`` up to rounding.
    """
    batch = x.shape[0]
    q = _flatten(_start_vector(x, generator, init))
    dim = q.shape[1]
    steps = min(iters, dim)  # dim orthonormal vectors span ℝ^m: T_m is A itself
    eps = torch.finfo(q.dtype).eps
    basis = q.new_zeros(batch, steps, dim)
    T = torch.zeros(batch, steps, steps, dtype=torch.float64, device=x.device)
    active = torch.ones(batch, dtype=torch.bool, device=x.device)
    converged = torch.zeros_like(active)
    theta = torch.zeros(batch, dtype=torch.float64, device=x.device)
    residual = torch.full_like(theta, float("inf"))
    ritz = torch.zeros(batch, steps, dtype=torch.float64, device=x.device)
    q_prev, b_prev = torch.zeros_like(q), torch.zeros(batch, dtype=q.dtype, device=x.device)
    trace: list[torch.Tensor] = []
    for k in range(steps):
        basis[:, k] = q
        w = _flatten(lin.vjp(lin.jvp(_unflatten(q, x)))).detach()
        a = (q * w).sum(dim=1)
        w = w - a[:, None] * q - b_prev[:, None] * q_prev
        Q = basis[:, : k + 1]
        for _ in range(2):  # one Gram–Schmidt pass loses orthogonality in float32; twice is enough
            w = w - torch.einsum("bk,bkm->bm", torch.einsum("bkm,bm->bk", Q, w), Q)
        b = _norm(w)
        T[:, k, k] = a.to(torch.float64)
        Tk = T[:, : k + 1, : k + 1]
        broken = ~torch.isfinite(Tk).flatten(1).all(dim=1)  # the map gave NaN or Inf: no estimate (NaN)
        evals, evecs = torch.linalg.eigh(torch.where(broken[:, None, None], torch.zeros_like(Tk), Tk))
        th, y = evals[:, -1].clamp_min(0.0), evecs[:, :, -1]
        th = torch.where(broken, torch.full_like(th, float("nan")), th)
        res = b.to(torch.float64) * y[:, -1].abs() / th.clamp_min(torch.finfo(torch.float64).tiny)
        # Frozen samples keep their last Ritz pair (their T only gained a zero block).
        theta = torch.where(active, th, theta)
        residual = torch.where(active, res, residual)
        ritz[:, : k + 1] = torch.where(active[:, None], y, ritz[:, : k + 1])
        trace.append(theta.sqrt().to(q.dtype))
        breakdown = b.to(torch.float64) <= _BREAKDOWN * eps * theta
        met = plateaued(torch.stack(trace), window, tol) & (residual < rayleigh_tol)
        converged = converged | (active & (breakdown | met) & ~broken)
        if k == dim - 1:
            converged = converged | active
        active = active & ~converged & ~broken
        if not bool(active.any()):
            break
        if k + 1 < steps:
            go = active[:, None]
            beta = torch.where(active, b, torch.zeros_like(b))
            T[:, k, k + 1] = T[:, k + 1, k] = beta.to(torch.float64)
            q_prev, b_prev = q, beta
            q = torch.where(go, w / b.clamp_min(torch.finfo(b.dtype).tiny)[:, None], torch.zeros_like(w))
    stacked = torch.stack(trace)
    v = torch.einsum("bk,bkm->bm", ritz[:, : stacked.shape[0]].to(q.dtype), basis[:, : stacked.shape[0]])
    v = v / _norm(v).clamp_min(torch.finfo(v.dtype).tiny)[:, None]
    vector = _unflatten(v, x).detach()
    return PowerIterationResult(
        estimate=_norm(lin.jvp(vector)).detach(),
        trace=stacked,
        last_rel_change=_last_rise(stacked, window),
        converged=converged,
        iterations=stacked.shape[0],
        vector=vector,
        rayleigh_residual=residual.to(q.dtype),
        method="lanczos",
    )


def jacobian_spectral_norm(
    H: Operator,
    x: torch.Tensor,
    *,
    iters: int = 100,
    tol: float = 1e-4,
    window: int = 5,
    rayleigh_tol: float = 1e-3,
    generator: torch.Generator | None = None,
    method: Literal["lanczos", "power"] = "lanczos",
    init: torch.Tensor | None = None,
) -> PowerIterationResult:
    """``‖J_H(x)‖₂`` per sample by the Lanczos process (default) or power iteration on ``JᵀJ``; a
    lower bound at every step either way.

    ``method="lanczos"`` (:func:`_lanczos`): the largest Ritz value of ``JᵀJ`` on the Krylov space
    ``span{v, JᵀJ v, …, (JᵀJ)^{k−1} v}``, which contains the power iterate ``v_k``, so after ``k``
    steps it is at least the power iteration's ``s_k`` — and on clustered top singular values (the
    shipped MnM-MOL's 0.99, 0.98, …) it gets there in far fewer steps. Same stopping rule, same
    cost per step (one ``Jv`` and one ``Jᵀw``), plus one ``Jv`` for the witness ``‖J v_ritz‖``
    that it reports; ``iters`` stays the cap on steps.

    ``method="power"``: ``v_{k+1} = JᵀJ v_k / ‖JᵀJ v_k‖``, estimate ``s_k = ‖J v_k‖``
    (``‖v_k‖ = 1``), which increases to ``‖J‖₂``; it reports the largest ``s_k``.

    Stopping rule (both methods, per sample; the loop ends when every sample met it): the estimate
    rose by less than ``tol`` (relative) over the last ``window`` steps AND the vector is close to
    a right singular vector, ``‖JᵀJ v − s² v‖ / s² < rayleigh_tol`` (Lanczos: the Ritz residual;
    also a breakdown, an invariant Krylov space, stops a sample). A single-step change
    test (the old rule: 30 iterations, 1e-3) fired while the estimate was still climbing by ≈ 1e-3
    per step; this one cannot (see :func:`plateaued`), and a sample that has not met it at ``iters``
    reports ``converged=False``. A starting vector with almost no component along the top singular
    vector can still plateau below ``‖J‖₂`` — no stopping rule sees that; seed pair estimates on
    other directions as well (:func:`robustkit.analysis.lower_bound.lipschitz_lower_bound`).
    ``init``: the starting vector (``x``-shaped, any nonzero norm per sample; default a random
    unit vector from ``generator``), e.g. the previous call's ``vector`` when ``x`` moved a little
    (training: :func:`robustkit.training.constraint_term`); the estimate is a lower bound from any start.
    One forward of ``H`` in all, two backward passes per step. Complex maps are taken as
    real-linear maps of ``ℝ^{2n}``, so this is the norm of the real Jacobian.
    """
    _check_power_args(iters, tol, window, x)
    if method not in ("lanczos", "power"):
        raise ValueError(f"method must be 'lanczos' or 'power', got {method!r}")
    with torch.enable_grad():
        lin = _Linearisation(H, x)
        if method == "lanczos":
            return _lanczos(lin, x, iters, tol, window, rayleigh_tol, generator, init)

        def step(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            jv = lin.jvp(v)
            s = _norm(jv)
            jtjv = lin.vjp(jv)
            s2 = (s * s).clamp_min(torch.finfo(s.dtype).tiny)
            rayleigh = _norm(jtjv - _per_sample(s * s, v) * v) / s2
            return s.detach(), jtjv.detach(), rayleigh.detach()

        return _power_iteration(step, x, iters, tol, window, rayleigh_tol, generator, keep_max=True, init=init)


def jacobian_spectral_radius(
    H: Operator,
    x: torch.Tensor,
    *,
    iters: int = 50,
    tol: float = 1e-4,
    window: int = 5,
    generator: torch.Generator | None = None,
) -> PowerIterationResult:
    """``|λ_max(J_H(x))|`` per sample by power iteration on ``J``: ``v_{k+1} = J v_k / ‖J v_k‖``,
    estimate ``s_k = ‖J v_k‖`` of the last iterate.

    ``s_k`` tends to the spectral radius when the dominant eigenvalue (of the real Jacobian) is
    unique in modulus — the decay rate of the slowest mode of the linearised iteration; with a
    complex-conjugate dominant pair it oscillates and ``converged`` stays False. Not a bound
    either way (``ρ(J) ≤ ‖J‖₂``). One backward pass per iteration; stops when the estimate changed
    by less than ``tol`` over the last ``window`` iterations.
    """
    _check_power_args(iters, tol, window, x)
    with torch.enable_grad():
        lin = _Linearisation(H, x)

        def step(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
            jv = lin.jvp(v)
            return _norm(jv).detach(), jv.detach(), None

        return _power_iteration(step, x, iters, tol, window, None, generator, keep_max=False)


# ----------------------------------------------------------------------------- penalty


def penalty(
    L: torch.Tensor,  # noqa: N803 - the paper's name
    threshold: float = 0.98,
    kind: Literal["quadratic", "barrier"] = "quadratic",
    *,
    barrier_eps: float = 1e-3,
) -> torch.Tensor:
    """Elementwise penalty on a Lipschitz estimate ``L`` against the threshold ``T``; the caller
    applies the weight β (docs/maths.md §4).

    - ``"quadratic"`` (MnM-MOL): ``relu(L − T)²`` — zero below ``T``.
    - ``"barrier"`` (MOL): ``−log(T − L)`` for ``L ≤ T − e``, continued linearly (value and slope
      matched) above: ``−log(e) + (L − T + e)/e``, so it stays finite for any ``L``.
    """
    if kind == "quadratic":
        return torch.relu(L - threshold) ** 2
    if kind == "barrier":
        if not barrier_eps > 0:
            raise ValueError(f"barrier_eps must be positive, got {barrier_eps}")
        gap = threshold - L
        inside = -torch.log(gap.clamp_min(barrier_eps))
        linear = -math.log(barrier_eps) + (barrier_eps - gap) / barrier_eps
        return torch.where(gap > barrier_eps, inside, linear)
    raise ValueError(f"kind must be 'quadratic' or 'barrier', got {kind!r}")
