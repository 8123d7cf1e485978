"""Batched conjugate gradient for Hermitian positive-definite systems ``N x = r`` (e.g. ``(λAᴴA + μI) x = r``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch


@dataclass
class CGStats:
    """Per-sample statistics of one CG solve.

    Attributes:
        iterations: CG steps taken (same for all samples; converged samples are frozen).
        residual: relative residual ``‖r − N x‖ / ‖r‖`` per sample, shape ``(B,)``.
        trace: relative residual after each step, shape ``(iterations, B)``.
    """

    iterations: int
    residual: torch.Tensor
    trace: torch.Tensor


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample ``<a, b> = Σ conj(a) b`` over all but the first dim, shape ``(B,)``."""
    return (a.conj() * b).flatten(1).sum(dim=1)


def _bcast(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.reshape(v.shape + (1,) * (like.ndim - 1))


def conjugate_gradient(
    normal: Callable[[torch.Tensor], torch.Tensor],
    rhs: torch.Tensor,
    x0: torch.Tensor | None = None,
    max_iter: int = 10,
    tol: float = 0.0,
) -> tuple[torch.Tensor, CGStats]:
    """Solve ``normal(x) = rhs`` per sample by CG, warm-started at ``x0`` (zeros if None).

    Differentiable (no in-place ops), so models may backpropagate through it. A sample stops
    updating once its relative residual is ≤ ``tol``; with ``tol = 0`` exactly ``max_iter`` steps run.

    Args:
        normal: the Hermitian positive-definite operator, ``(B, ...) → (B, ...)``.
        rhs: right-hand side ``(B, ...)``.
        x0: warm start, same shape as ``rhs``.
    Returns:
        ``(x, CGStats)``.
    """
    x = torch.zeros_like(rhs) if x0 is None else x0
    r = rhs - normal(x) if x0 is not None else rhs
    p = r
    rs = _dot(r, r).real
    rhs_norm = _dot(rhs, rhs).real.sqrt().clamp_min(torch.finfo(rs.dtype).tiny)
    trace = []
    for _ in range(max_iter):
        active = rs.sqrt() / rhs_norm > tol
        if not bool(active.any()):
            break
        ap = normal(p)
        pap = _dot(p, ap).real
        safe = active & (pap > 0)
        alpha = torch.where(safe, rs / torch.where(safe, pap, torch.ones_like(pap)), torch.zeros_like(pap))
        x = x + _bcast(alpha, x) * p
        r = r - _bcast(alpha, r) * ap
        rs_new = _dot(r, r).real
        beta = torch.where(safe, rs_new / torch.where(safe, rs, torch.ones_like(rs)), torch.zeros_like(rs))
        p = r + _bcast(beta, p) * p
        rs = torch.where(safe, rs_new, rs)
        trace.append((rs.sqrt() / rhs_norm).detach())
    residual = (rs.sqrt() / rhs_norm).detach()
    stacked = torch.stack(trace) if trace else residual.new_zeros((0, rhs.shape[0]))
    return x, CGStats(iterations=len(trace), residual=residual, trace=stacked)
