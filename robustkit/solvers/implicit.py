"""Deep-equilibrium layer: solve ``x* = f(x*)`` without a graph, differentiate implicitly.

Forward: :func:`~robustkit.solvers.fixed_point.solve` under ``no_grad`` (memory independent of the
number of iterations), then ONE differentiable evaluation ``z = f(x*)`` with ``x*`` detached, so that
gradients reach everything ``f`` closes over: parameters θ, λ, and input tensors such as the
measured k-space ``b`` (attacks need ``∂x*/∂b``; nothing here looks at ``module.training``).

Backward (docs/maths.md §5):
- ``"implicit"``: a hook on ``z`` replaces the incoming ``∂ℓ/∂x*`` by the solution of
  ``g = J_f(x*)ᴴ g + ∂ℓ/∂x*``, solved with vector-Jacobian products ``u ↦ J_fᴴ u``
  (``torch.autograd.grad`` through the graph of ``z``) by ``backward_method``: GMRES on
  ``(I − J_fᴴ) g = ∂ℓ/∂x*`` (:mod:`robustkit.solvers.krylov`) or a fixed-point solver; then ``g``
  flows on to θ and ``b``. For complex tensors ``Jᴴ`` is the adjoint of the real-linear Jacobian on the real view,
  which is what autograd's VJP gives; the tests check it against unrolling and finite differences.
- ``"jfb"``: Jacobian-free gradient, the single step: ``∂ℓ/∂x*`` goes through
  ``∂f/∂(θ, b)`` unchanged (``J_f`` neglected).
- ``"phantom"``: the k-step phantom gradient (Geng et al., NeurIPS 2021), the truncated Neumann
  series ``g = Σ_{j<k} (J_fᴴ)ʲ ∂ℓ/∂x*`` of the implicit gradient: the same hook as ``"implicit"``,
  with exactly ``k − 1`` plain VJP updates ``g ← J_fᴴ g + ∂ℓ/∂x*`` instead of a solve. Geng et al.
  unroll ``k`` differentiable steps ``f(f(…f(x*)))``; at a fixed point every step sits at ``x*`` and
  the two are the same gradient (tested), but this form keeps ONE graph of ``f``, so memory is that
  of the implicit backward and independent of ``k``; ``k = 1`` is ``"jfb"``.

Only first-order gradients are supported (no ``create_graph`` through the implicit hook).
"""

from __future__ import annotations

from typing import Any, Callable, Literal

import torch

# the implicit backward's solvers (GMRES or a fixed-point solver; docs/maths.md §5): the torch-free
# list that SolverSettings checks too (tests/test_krylov.py checks it names every solver)
from robustkit.protocols import BACKWARD_METHODS
from robustkit.solvers.fixed_point import DEFAULT_MAX_ITER, DEFAULT_TOL, SolverStats, solve
from robustkit.solvers.krylov import gmres

Backward = Literal["implicit", "jfb", "phantom"]
BACKWARDS: tuple[str, ...] = ("implicit", "jfb", "phantom")


def deq_fixed_point(
    f: Callable[[torch.Tensor], torch.Tensor],
    x0: torch.Tensor,
    solver_kwargs: dict[str, Any] | None = None,
    *,
    backward: Backward = "implicit",
    backward_tol: float | None = None,
    backward_max_iter: int | None = None,
    backward_method: str | None = None,
    phantom_steps: int = 5,
) -> tuple[torch.Tensor, SolverStats]:
    """Fixed point of ``f`` with an implicit (or Jacobian-free) gradient.

    Args:
        f: the update map ``(B, ...) → (B, ...)``, real or complex; may close over parameters and
            over inputs that require grad.
        x0: start ``(B, ...)``; detached (the fixed point does not depend on it).
        solver_kwargs: keyword arguments of :func:`~robustkit.solvers.fixed_point.solve`
            (``method``, ``tol``, ``max_iter``, ``damping``, ``anderson_*``, ``stop``).
        backward: ``"implicit"``, ``"jfb"`` or ``"phantom"``.
        backward_tol, backward_max_iter, backward_method: of the backward solve
            ``g = J_fᴴ g + ∂ℓ/∂x*``; ``None`` = the forward's. ``backward_method`` is ``"gmres"``
            (from ``g = 0``, ``backward_max_iter`` VJPs = the Krylov dimension, plus one verifying
            VJP) or a fixed-point solver of :data:`SOLVERS` (from ``g = ∂ℓ/∂x*``). Either way the
            reported residual is ``‖J_fᴴ g + ∂ℓ/∂x* − g‖ / ‖J_fᴴ g + ∂ℓ/∂x*‖``.
        phantom_steps: ``k`` of the ``"phantom"`` backward (≥ 1).
    Returns:
        ``(z, stats)``: ``z = f(x*)`` shaped like ``x0`` (differentiable when grad is enabled; it
        differs from ``x*`` by ``stats.residual · ‖z‖``); ``stats`` of the forward solve, whose
        ``stats.backward`` is filled with the backward solve's statistics each time an implicit
        backward runs.
    """
    if backward not in BACKWARDS:
        raise ValueError(f"backward must be one of {BACKWARDS}, got {backward!r}")
    if backward_method is not None and backward_method not in BACKWARD_METHODS:
        raise ValueError(f"backward_method must be one of {BACKWARD_METHODS}, got {backward_method!r}")
    forward_kwargs = dict(solver_kwargs or {})
    x_star, stats = solve(f, x0, **forward_kwargs)

    if not torch.is_grad_enabled() or backward == "jfb":
        return f(x_star), stats
    if backward == "phantom" and phantom_steps < 1:
        raise ValueError(f"phantom_steps must be >= 1, got {phantom_steps}")
    x_req = x_star.detach().requires_grad_(True)
    z = f(x_req)
    if not z.requires_grad:
        return z, stats

    backward_kwargs = {
        **forward_kwargs,
        "tol": forward_kwargs.get("tol", DEFAULT_TOL) if backward_tol is None else backward_tol,
        "max_iter": forward_kwargs.get("max_iter", DEFAULT_MAX_ITER) if backward_max_iter is None else backward_max_iter,
        "stop": "residual",
    }
    if backward_method is not None:
        backward_kwargs["method"] = backward_method
    inside = [False]  # the VJPs below traverse z's graph again; the hook must not act on them

    def implicit_gradient(grad: torch.Tensor) -> torch.Tensor | None:
        if inside[0]:
            return None

        def vjp(u: torch.Tensor) -> torch.Tensor:
            (out,) = torch.autograd.grad(z, x_req, u, retain_graph=True, allow_unused=True)
            return torch.zeros_like(u) if out is None else out

        def vjp_map(u: torch.Tensor) -> torch.Tensor:
            return vjp(u) + grad

        inside[0] = True
        try:
            if backward == "phantom":
                g = grad
                for _ in range(phantom_steps - 1):
                    g = vjp_map(g)
                return g
            if backward_kwargs.get("method") == "gmres":
                g, backward_stats = gmres(vjp, grad, tol=backward_kwargs["tol"], max_iter=backward_kwargs["max_iter"])
            else:
                g, backward_stats = solve(vjp_map, grad, **backward_kwargs)
        finally:
            inside[0] = False
        stats.backward = backward_stats
        return g

    z.register_hook(implicit_gradient)
    return z, stats
