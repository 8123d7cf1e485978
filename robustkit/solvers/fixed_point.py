"""Forward fixed-point solvers for deep-equilibrium models: find ``x* = f(x*)`` per sample.

Every solver has one signature, ``solver(f, x0, *, tol, max_iter, stop, <its options>) -> (x, SolverStats)``,
and runs the same loop: evaluate ``f`` at the current iterate, measure the relative fixed-point
residual ``‖f(x) − x‖ / ‖f(x)‖`` (docs/maths.md §5: the honest convergence measure), freeze the samples
whose stopping criterion is met, propose the next iterate for the others. The solvers differ only
in the proposal:

- ``damped``:   ``x⁺ = (1 − γ) x + γ f(x)`` (γ = 1: plain iteration; the fixed point does not depend on γ);
- ``anderson``: ``x⁺ = β Σᵢ αᵢ f(xᵢ) + (1 − β) Σᵢ αᵢ xᵢ`` over the last ``m`` iterates, with
  ``α = argmin ‖Σᵢ αᵢ (f(xᵢ) − xᵢ)‖² + λ‖α‖²`` subject to ``Σᵢ αᵢ = 1``.

Tensors are batched ``(B, ...)``, real or complex. Internally an iterate is the flattened real
view ``(B, N)``; the Anderson coefficients α are real, because the maps of robustkit (a CNN on
real/imaginary channels) are real-linear, not complex-linear.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Literal, Protocol

import torch

Stop = Literal["residual", "step"]
STOP_CRITERIA: tuple[str, ...] = ("residual", "step")
DEFAULT_TOL = 1e-4
DEFAULT_MAX_ITER = 200


@dataclass
class SolverStats:
    """Per-sample statistics of one fixed-point solve (the forward solve, or the implicit backward).

    Attributes:
        method: the solver's name, a key of :data:`SOLVERS`.
        stop: the criterion that froze samples, ``"residual"`` or ``"step"``.
        tol: its tolerance.
        iterations: updates applied to each sample before it was frozen, int64 ``(B,)``;
            the sample's evaluations of ``f`` are ``iterations + 1``.
        residual: relative fixed-point residual ``‖f(x) − x‖ / ‖f(x)‖`` of the returned ``x``, ``(B,)``.
        trace: the relative residual of every evaluated iterate ``x₀, x₁, …``, ``(f_evals, B)``;
            a frozen sample repeats its last value.
        converged: ``residual ≤ tol``, bool ``(B,)``, whatever ``stop`` is: with ``stop="step"`` a
            sample may stop unconverged, and this flag says so.
        f_evals: batched evaluations of ``f`` (``max(iterations) + 1``).
        backward: statistics of the implicit backward solve ``g = J_fᴴ g + ∂ℓ/∂x*``; filled by
            :func:`robustkit.solvers.deq_fixed_point` when the backward runs, else ``None``.
    """

    method: str
    stop: str
    tol: float
    iterations: torch.Tensor
    residual: torch.Tensor
    trace: torch.Tensor
    converged: torch.Tensor
    f_evals: int
    backward: "SolverStats | None" = None


class Proposal(Protocol):
    """The solver-specific part: next iterate from the current one and its image, flat ``(B, N)``."""

    def __call__(self, x: torch.Tensor, fx: torch.Tensor) -> torch.Tensor: ...


def _flatten(x: torch.Tensor) -> torch.Tensor:
    """``(B, ...)`` real or complex → real ``(B, N)`` (the real view of a complex tensor)."""
    if x.is_complex():
        x = torch.view_as_real(x)
    return x.reshape(x.shape[0], -1)


def _unflatten(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`_flatten` for a tensor shaped and typed like ``like``."""
    if like.is_complex():
        return torch.view_as_complex(v.reshape(*like.shape, 2))
    return v.reshape(like.shape)


def flat_map(f: Callable[[torch.Tensor], torch.Tensor], like: torch.Tensor, name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """``f`` on the flat real view: ``v (B, N) ↦ _flatten(f(_unflatten(v, like)))``, refusing an ``f``
    (called ``name`` in the message) that changes the shape or the real/complex kind of ``like``."""

    def apply(v: torch.Tensor) -> torch.Tensor:
        out = f(_unflatten(v, like))
        if out.shape != like.shape or out.is_complex() != like.is_complex():
            raise ValueError(
                f"{name} must map {tuple(like.shape)} {like.dtype} to the same shape and kind, "
                f"got {tuple(out.shape)} {out.dtype}"
            )
        return _flatten(out.to(like.dtype))

    return apply


def _norm(v: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(v, dim=1)


def _relative(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    return num / den.clamp_min(torch.finfo(den.dtype).tiny)


def _check(x0: torch.Tensor, tol: float, max_iter: int, stop: str) -> None:
    if x0.ndim < 1 or x0.shape[0] < 1:
        raise ValueError(f"x0 must be batched (B, ...) with B ≥ 1, got shape {tuple(x0.shape)}")
    if not (x0.is_floating_point() or x0.is_complex()):
        raise ValueError(f"x0 must be a real or complex floating tensor, got {x0.dtype}")
    if not tol >= 0:
        raise ValueError(f"tol must be ≥ 0, got {tol}")
    if max_iter < 0:
        raise ValueError(f"max_iter must be ≥ 0, got {max_iter}")
    if stop not in STOP_CRITERIA:
        raise ValueError(f"stop must be one of {STOP_CRITERIA}, got {stop!r}")


def _iterate(
    f: Callable[[torch.Tensor], torch.Tensor],
    x0: torch.Tensor,
    propose: Proposal,
    *,
    method: str,
    tol: float,
    max_iter: int,
    stop: str,
) -> tuple[torch.Tensor, SolverStats]:
    """The loop shared by all solvers, with per-sample freezing; see the module docstring."""
    _check(x0, tol, max_iter, stop)
    like = x0.detach()
    evaluate = flat_map(f, like, "f")

    with torch.no_grad():
        x = _flatten(like).clone()
        fx = evaluate(x)
        f_evals = 1
        residual = _relative(_norm(fx - x), _norm(fx))
        step = torch.full_like(residual, math.inf)  # no step has been taken at x₀
        iterations = torch.zeros(x.shape[0], dtype=torch.int64, device=x.device)

        def still_running(active: torch.Tensor) -> torch.Tensor:
            criterion = residual if stop == "residual" else step
            # A sample that went non-finite cannot recover: freeze it, it reports converged=False.
            return active & ~(criterion <= tol) & torch.isfinite(residual)

        active = still_running(torch.ones_like(residual, dtype=torch.bool))
        trace = [residual]
        for _ in range(max_iter):
            if not bool(active.any()):
                break
            proposal = propose(x, fx)
            keep = active[:, None]
            change = _relative(_norm(proposal - x), _norm(x))
            x = torch.where(keep, proposal, x)
            # Frozen samples keep their image, so their reported residual stays that of the returned x.
            fx = torch.where(keep, evaluate(x), fx)
            f_evals += 1
            residual = torch.where(active, _relative(_norm(fx - x), _norm(fx)), residual)
            step = torch.where(active, change, step)
            iterations += active.to(torch.int64)
            trace.append(residual)
            active = still_running(active)

    stats = SolverStats(
        method=method,
        stop=stop,
        tol=float(tol),
        iterations=iterations,
        residual=residual,
        trace=torch.stack(trace),
        converged=residual <= tol,
        f_evals=f_evals,
    )
    return _unflatten(x, like), stats


def damped(
    f: Callable[[torch.Tensor], torch.Tensor],
    x0: torch.Tensor,
    *,
    tol: float = DEFAULT_TOL,
    max_iter: int = DEFAULT_MAX_ITER,
    stop: Stop = "residual",
    damping: float = 1.0,
) -> tuple[torch.Tensor, SolverStats]:
    """Damped (Krasnosel'skii–Mann) iteration ``x⁺ = (1 − γ) x + γ f(x)``, γ = ``damping``.

    Args:
        f: the map, ``(B, ...) → (B, ...)``, real or complex.
        x0: start ``(B, ...)``.
        tol, max_iter, stop: see :func:`solve`.
        damping: γ > 0; γ = 1 is plain iteration ``x⁺ = f(x)``.
    Returns:
        ``(x, SolverStats)`` with ``x`` shaped like ``x0``.
    """
    if not damping > 0:
        raise ValueError(f"damping γ must be > 0, got {damping}")
    return _iterate(
        f, x0, lambda x, fx: x + damping * (fx - x), method="damped", tol=tol, max_iter=max_iter, stop=stop
    )


#: Anderson history length m. Not larger: m = 10 takes 15–20 % fewer iterations than 5 from the
#: SENSE start on the shipped MnM-MOL and MOL (4 built-in test slices, tol 1e-5), but from a far
#: start (complex noise of ‖x*‖, the init-test's ``noise``) the shipped MnM-MOL then stalls at
#: residual ≈ 1e-3 on every slice (800 iterations, PSNR 7–9 dB) where m = 5 converges in 127–178
#: (docs/performance.md): a solver setting must not make a model look non-convergent.
ANDERSON_M = 5


class AndersonMixer:
    """Anderson (type II) proposal over the last ``m`` pairs ``(xᵢ, f(xᵢ))``, flat real ``(B, N)``.

    ``α`` solves ``(G Gᵀ / s + λ I) a = 1``, ``α = a / Σa``, with residuals ``Gᵢ = f(xᵢ) − xᵢ`` and
    ``s`` the mean of ``diag(G Gᵀ)`` (so λ is relative and the solver scale-invariant); the small
    system is solved in float64 because late residuals are nearly parallel. A sample whose system
    fails falls back to the plain step ``x⁺ = β f(x) + (1 − β) x``.
    """

    def __init__(self, m: int = ANDERSON_M, beta: float = 1.0, lam: float = 1e-4):
        if m < 1:
            raise ValueError(f"anderson_m must be ≥ 1, got {m}")
        if not beta > 0:
            raise ValueError(f"anderson_beta must be > 0, got {beta}")
        if not lam >= 0:
            raise ValueError(f"anderson_lam must be ≥ 0, got {lam}")
        self.m, self.beta, self.lam = m, beta, lam
        self.xs: torch.Tensor | None = None
        self.fs: torch.Tensor | None = None
        self.count = 0

    def __call__(self, x: torch.Tensor, fx: torch.Tensor) -> torch.Tensor:
        b, dim = x.shape
        if self.xs is None:
            self.xs = x.new_zeros(b, self.m, dim)
            self.fs = x.new_zeros(b, self.m, dim)
        slot = self.count % self.m
        self.xs[:, slot] = x
        self.fs[:, slot] = fx
        self.count += 1
        n = min(self.count, self.m)
        xs, fs = self.xs[:, :n], self.fs[:, :n]
        g = (fs - xs).to(torch.float64)
        gram = g @ g.transpose(1, 2)
        scale = gram.diagonal(dim1=1, dim2=2).mean(dim=1).clamp_min(torch.finfo(torch.float64).tiny)
        eye = torch.eye(n, dtype=torch.float64, device=x.device)
        system = gram / scale[:, None, None] + self.lam * eye
        a, info = torch.linalg.solve_ex(system, torch.ones(b, n, 1, dtype=torch.float64, device=x.device))
        a = a[..., 0]
        total = a.sum(dim=1, keepdim=True)
        alpha = a / total
        failed = (info != 0) | ~torch.isfinite(alpha).all(dim=1) | (total[:, 0].abs() < 1e-12)
        plain = torch.zeros_like(alpha)
        plain[:, slot] = 1.0
        alpha = torch.where(failed[:, None], plain, alpha).to(x.dtype)[:, None, :]
        mixed_f = (alpha @ fs)[:, 0]
        if self.beta == 1.0:
            return mixed_f
        return self.beta * mixed_f + (1 - self.beta) * (alpha @ xs)[:, 0]


def anderson(
    f: Callable[[torch.Tensor], torch.Tensor],
    x0: torch.Tensor,
    *,
    tol: float = DEFAULT_TOL,
    max_iter: int = DEFAULT_MAX_ITER,
    stop: Stop = "residual",
    m: int = ANDERSON_M,
    beta: float = 1.0,
    lam: float = 1e-4,
) -> tuple[torch.Tensor, SolverStats]:
    """Anderson acceleration ``x⁺ = β Σᵢ αᵢ f(xᵢ) + (1 − β) Σᵢ αᵢ xᵢ`` (see :class:`AndersonMixer`).

    Args:
        f, x0, tol, max_iter, stop: see :func:`solve`.
        m: history length; beta: mixing β; lam: relative regularisation λ of the α system.
    Returns:
        ``(x, SolverStats)`` with ``x`` shaped like ``x0``.
    """
    return _iterate(f, x0, AndersonMixer(m, beta, lam), method="anderson", tol=tol, max_iter=max_iter, stop=stop)


SOLVERS: dict[str, Callable[..., tuple[torch.Tensor, SolverStats]]] = {"damped": damped, "anderson": anderson}


def solve(
    f: Callable[[torch.Tensor], torch.Tensor],
    x0: torch.Tensor,
    *,
    method: str = "anderson",
    tol: float = DEFAULT_TOL,
    max_iter: int = DEFAULT_MAX_ITER,
    damping: float = 1.0,
    anderson_m: int = ANDERSON_M,
    anderson_beta: float = 1.0,
    anderson_lam: float = 1e-4,
    stop: Stop = "residual",
) -> tuple[torch.Tensor, SolverStats]:
    """Solve ``x = f(x)`` per sample from ``x0`` without building a graph (runs under ``no_grad``).

    A sample is frozen (no further updates) once its criterion is ≤ ``tol``:
    ``stop="residual"``: ``‖f(x) − x‖ / ‖f(x)‖`` (default, docs/maths.md §5);
    ``stop="step"``: ``‖x_{n+1} − x_n‖ / ‖x_n‖`` (the reference's; a small step is not convergence,
    so ``SolverStats.converged`` still tests the residual). At most ``max_iter`` updates per sample;
    a sample that hits the cap reports ``converged=False`` with its residual.

    Args:
        f: the map ``(B, ...) → (B, ...)``, real or complex, same shape out as in.
        x0: start ``(B, ...)``; detached.
        method: a key of :data:`SOLVERS`.
        damping: γ of ``damped``, ``x⁺ = (1 − γ) x + γ f(x)``.
        anderson_m, anderson_beta, anderson_lam: history length m, mixing β and relative
            regularisation λ of ``anderson``.
    Returns:
        ``(x, SolverStats)``: ``x`` shaped like ``x0``, statistics per sample.
    """
    if method == "damped":
        return damped(f, x0, tol=tol, max_iter=max_iter, stop=stop, damping=damping)
    if method == "anderson":
        return anderson(f, x0, tol=tol, max_iter=max_iter, stop=stop, m=anderson_m, beta=anderson_beta, lam=anderson_lam)
    raise ValueError(f"unknown fixed-point solver {method!r}; choose one of {sorted(SOLVERS)}")
