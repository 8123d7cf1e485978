"""Batched GMRES for ``(I − K) g = v`` per sample: the implicit backward's linear system.

The implicit backward (docs/maths.md §5) solves ``g = J_fᴴ g + v`` with ``v = ∂ℓ/∂x*``, i.e.
``(I − K) g = v`` for the linear map ``K u = J_fᴴ u``. Fixed-point iteration (or Anderson with a
short memory) needs about ``1/(1 − ρ)`` products per decade of residual when ``K`` has an
eigenvalue near 1 (``ρ`` ≈ 0.98–0.99 on the shipped MnM-MOL and MOL). GMRES (Saad & Schultz 1986)
minimises the residual over the Krylov space ``span{v, Kv, …, Kᵏ⁻¹v}``, so a few eigenvalues of
``I − K`` near 0 cost a few extra products (docs/maths.md §5, "GMRES").

The batch ``(B, ...)`` holds independent samples and ``K`` acts on each sample alone, so one
batched Arnoldi process with per-sample Hessenberg matrices ``H⁽ᵇ⁾`` is exactly ``B`` separate
GMRES runs. Vectors are flattened to the real view ``(B, N)``: complex tensors use the real inner
product ``⟨a, b⟩ = Re Σ conj(a) b`` (``K`` is real-linear, not complex-linear, so the Krylov
coefficients are real). Arnoldi orthogonalises twice by classical Gram–Schmidt (CGS2, as stable
as modified Gram–Schmidt and one batched matrix product per pass); Givens rotations keep the
least-squares residual of ``min_y ‖β e₁ − H y‖`` at hand after every product.

Start ``g₀ = 0``, no restarts: ``max_iter`` is the Krylov dimension (memory ``(max_iter + 1)``
vectors per sample). A sample stops when GMRES's residual estimate meets the stopping rule and is
then frozen; the loop runs on for the others. The returned residual is the TRUE one, verified with
one more product ``K g`` at the end, in the fixed-point solvers' definition

    residual = ‖K g + v − g‖ / ‖K g + v‖   (= ‖v − (I − K) g‖ / ‖T(g)‖,  T(g) = K g + v),

so that it means what ``backward_residual`` meant for the Anderson backward. During the iteration
the denominator ``‖K g + v‖ = ‖g − r‖`` is estimated by ``‖g_k‖ = ‖y_k‖`` (the Arnoldi basis is
orthonormal); the verified value decides ``converged``.
"""

from __future__ import annotations

from typing import Callable

import torch

from robustkit.solvers.fixed_point import (
    DEFAULT_MAX_ITER,
    DEFAULT_TOL,
    SolverStats,
    _check,
    _flatten,
    _norm,
    _relative,
    _unflatten,
    flat_map,
)


def _givens(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(c, s)`` with ``[c s; −s c] [a; b] = [r; 0]`` per sample (``c = 1, s = 0`` when both vanish)."""
    r = torch.hypot(a, b)
    safe = r > 0
    c = torch.where(safe, a / torch.where(safe, r, torch.ones_like(r)), torch.ones_like(r))
    s = torch.where(safe, b / torch.where(safe, r, torch.ones_like(r)), torch.zeros_like(r))
    return c, s


def gmres(
    K: Callable[[torch.Tensor], torch.Tensor],
    v: torch.Tensor,
    *,
    tol: float = DEFAULT_TOL,
    max_iter: int = DEFAULT_MAX_ITER,
) -> tuple[torch.Tensor, SolverStats]:
    """Solve ``(I − K) g = v`` per sample by GMRES from ``g₀ = 0`` (module docstring).

    Args:
        K: a linear map ``(B, ...) → (B, ...)`` acting on each sample separately (real-linear for
            complex tensors), e.g. ``u ↦ J_fᴴ u``.
        v: the right-hand side ``(B, ...)``, real or complex.
        tol: a sample stops once ``‖v − (I − K) g_k‖ ≤ tol · ‖g_k‖`` by GMRES's estimate; it is
            ``converged`` when the verified ``‖K g + v − g‖ / ‖K g + v‖ ≤ tol``.
        max_iter: at most this many products ``K u`` per sample (the Krylov dimension), ≥ 0.
    Returns:
        ``(g, stats)``: ``g`` shaped like ``v``; :class:`~robustkit.solvers.SolverStats` with
        ``method="gmres"``, ``stop="residual"``, ``iterations`` the products ``K u`` per sample (the
        verifying product not counted, so ``f_evals = max(iterations) + 1`` as for the fixed-point
        solvers), ``residual`` the verified one, ``trace`` GMRES's estimate after each product
        (``1`` at ``g₀ = 0``; a frozen sample repeats its last value).
    """
    _check(v, tol, max_iter, "residual")  # the fixed-point solvers' checks of the start, tol and cap
    like = v.detach()
    apply = flat_map(K, like, "K")

    with torch.no_grad():
        rhs = _flatten(like)
        b, n = rhs.shape
        wide = torch.float64  # the small Hessenberg system and its rotations
        beta = _norm(rhs).to(wide)
        basis = rhs.new_zeros(b, max_iter + 1, n)
        basis[:, 0] = rhs / _norm(rhs).clamp_min(torch.finfo(rhs.dtype).tiny)[:, None]  # 0 when v = 0
        hess = torch.zeros(b, max_iter + 1, max_iter, dtype=wide, device=rhs.device)  # rotated: upper triangular
        cs = torch.zeros(b, max_iter, dtype=wide, device=rhs.device)
        sn = torch.zeros_like(cs)
        e = torch.zeros(b, max_iter + 1, dtype=wide, device=rhs.device)  # rotated β e₁
        e[:, 0] = beta
        y = torch.zeros(b, max_iter, dtype=wide, device=rhs.device)  # each sample's coefficients when it stopped
        iterations = torch.zeros(b, dtype=torch.int64, device=rhs.device)
        estimate = torch.ones(b, dtype=wide, device=rhs.device)
        active = beta > 0  # v = 0 is solved by g = 0
        trace = [estimate.clone()]
        for j in range(max_iter):
            if not bool(active.any()):
                break
            u = torch.where(active[:, None], basis[:, j], torch.zeros_like(basis[:, j]))
            w = u - apply(u)  # (I − K) u
            q = basis[:, : j + 1]
            h = torch.zeros(b, j + 1, dtype=rhs.dtype, device=rhs.device)
            for _ in range(2):  # CGS2: a second pass restores orthogonality lost to cancellation
                c = (q @ w[:, :, None])[..., 0]
                w = w - (q.transpose(1, 2) @ c[:, :, None])[..., 0]
                h = h + c
            norm_w = _norm(w)
            column = torch.cat([h.to(wide), norm_w.to(wide)[:, None]], dim=1)  # H[: j + 2, j]
            for i in range(j):  # earlier rotations
                top, bottom = column[:, i].clone(), column[:, i + 1].clone()
                column[:, i] = cs[:, i] * top + sn[:, i] * bottom
                column[:, i + 1] = -sn[:, i] * top + cs[:, i] * bottom
            c_j, s_j = _givens(column[:, j], column[:, j + 1])
            column[:, j] = c_j * column[:, j] + s_j * column[:, j + 1]
            column[:, j + 1] = 0
            keep = active[:, None]
            hess[:, : j + 2, j] = torch.where(keep, column, hess[:, : j + 2, j])
            cs[:, j] = torch.where(active, c_j, cs[:, j])
            sn[:, j] = torch.where(active, s_j, sn[:, j])
            e_j = e[:, j].clone()
            e[:, j] = torch.where(active, c_j * e_j, e[:, j])
            e[:, j + 1] = torch.where(active, -s_j * e_j, e[:, j + 1])
            # A zero ‖w‖ is a lucky breakdown: the Krylov space is invariant and g_k is exact.
            unit = w / norm_w.clamp_min(torch.finfo(rhs.dtype).tiny)[:, None]
            basis[:, j + 1] = torch.where(keep & (norm_w > 0)[:, None], unit, torch.zeros_like(unit))
            iterations += active.to(torch.int64)
            coef = torch.linalg.solve_triangular(
                hess[:, : j + 1, : j + 1], e[:, : j + 1, None], upper=True
            )[..., 0]
            y[:, : j + 1] = torch.where(keep, coef, y[:, : j + 1])
            est = _relative(e[:, j + 1].abs(), torch.linalg.vector_norm(coef, dim=1))
            estimate = torch.where(active, est, estimate)
            trace.append(estimate.clone())
            active = active & ~(estimate <= tol) & torch.isfinite(estimate)

        g = (basis[:, :max_iter].transpose(1, 2) @ y.to(rhs.dtype)[:, :, None])[..., 0]
        image = apply(g) + rhs  # T(g) = K g + v, the verifying product
        residual = _relative(_norm(image - g), _norm(image))
        residual = torch.where(beta > 0, residual, torch.zeros_like(residual))

    stats = SolverStats(
        method="gmres",
        stop="residual",
        tol=float(tol),
        iterations=iterations,
        residual=residual,
        trace=torch.stack(trace).to(residual.dtype),
        converged=residual <= tol,
        f_evals=int(iterations.max()) + 1,
    )
    return _unflatten(g, like), stats
