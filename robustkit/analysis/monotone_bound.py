"""The monotone stability bound ``‖x*(b+γ) − x*(b)‖ ≤ ‖Aᴴγ‖/m`` checked against a measured
perturbation (docs/maths.md §12).

A fixed-point model solves ``x = H(x) + Aᴴb``, i.e. ``Q(x) = Aᴴb`` with ``Q = I − H``. If
``L[H] ≤ 1 − m`` on a set holding two solutions ``x₁ = x*(b)`` and ``x₂ = x*(b+γ)``, then ``Q`` is
m-monotone there and ``m‖x₂ − x₁‖ ≤ ‖Aᴴγ‖``. Solves stop at a residual: with the equation residuals
``e_i = x̃_i − H(x̃_i) − Aᴴb_i`` of the computed points the same argument gives

    ‖x̃₂ − x̃₁‖ / ‖Aᴴγ‖ ≤ (1 + s) / m,     s = (‖e₁‖ + ‖e₂‖) / ‖Aᴴγ‖   (the solve slack),

so a measured ratio above ``(1 + s)/m`` cannot be blamed on the solves (when they converged): it
proves that ``L[H] ≤ 1 − m`` fails on every set holding both points.

``H`` must be the model's OWN equation, ``model.H_map(op)``: for MOL that is MOL's
``H(x) = x − AᴴA x − (c x − F_θ(x))/λ`` with ``c = 1 + (μ − 1)/α`` (``MOL.H``, docs/maths.md §4).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

#: the verdicts of :func:`check_bound`.
STATUSES: tuple[str, ...] = ("holds", "vacuous", "violated")

ImageMap = Callable[[torch.Tensor], torch.Tensor]


def _norm(x: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(x.flatten(1), dim=1)


def equation_residual(H: ImageMap, x: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """``‖x − H(x) − rhs‖`` per sample ``(B,)`` (``rhs = Aᴴb``, ``x`` ``(B, H, W)``): zero at an exact solution."""
    with torch.no_grad():
        return _norm(x - H(x) - rhs)


@dataclass
class BoundCheck:
    """Result of :func:`check_bound`; tensors ``(B,)``.

    Attributes:
        m_eff: ``1 − L``.
        bound: ``1/m_eff`` (``inf`` where ``m_eff ≤ 0``).
        status: ``holds``, ``vacuous`` (``m_eff ≤ 0``: the estimate certifies nothing) or
            ``violated`` (``measured > bound·(1 + slack)``).
    """

    m_eff: torch.Tensor
    bound: torch.Tensor
    status: list[str]


def check_bound(L: torch.Tensor, measured: torch.Tensor, slack: torch.Tensor | float = 0.0) -> BoundCheck:
    """Compare measured amplifications ``‖Δx*‖/‖Aᴴγ‖`` with the bound ``1/(1 − L)``.

    Args:
        L: an estimate of ``L[H]`` per sample ``(B,)`` (NaN gives ``vacuous``).
        measured: ``‖x*(b+γ) − x*(b)‖ / ‖Aᴴγ‖`` per sample ``(B,)``.
        slack: the solve slack ``s`` of the module docstring, ``(B,)`` or a number ≥ 0.
    """
    L = torch.as_tensor(L, dtype=torch.float64)
    measured = torch.as_tensor(measured, dtype=torch.float64)
    slack = torch.as_tensor(slack, dtype=torch.float64).expand_as(measured)
    m_eff = 1.0 - L
    positive = m_eff > 0  # False for NaN too
    bound = torch.where(positive, 1.0 / m_eff.where(positive, torch.ones_like(m_eff)), torch.full_like(m_eff, float("inf")))
    status = ["vacuous" if not p else ("violated" if float(r) > float(c) * (1.0 + float(s)) else "holds")
              for p, r, c, s in zip(positive.tolist(), measured, bound, slack)]
    return BoundCheck(m_eff=m_eff, bound=bound, status=status)


@dataclass
class Shift:
    """The measured side of the bound for one perturbation; tensors ``(B,)``.

    Attributes:
        measured: ``‖x₂ − x₁‖ / ‖Aᴴγ‖``.
        slack: ``(‖e₁‖ + ‖e₂‖) / ‖Aᴴγ‖`` (module docstring).
        shift: ``‖x₂ − x₁‖ / ‖x₁‖``, to compare with the ball radius δ.
    """

    measured: torch.Tensor
    slack: torch.Tensor
    shift: torch.Tensor


def measure_shift(H: ImageMap, x1: torch.Tensor, x2: torch.Tensor, rhs1: torch.Tensor, rhs2: torch.Tensor) -> Shift:
    """Amplification of the equation ``x = H(x) + rhs`` between two computed solutions.

    Args:
        H: the equation's ``H`` (``model.H_map(op)``).
        x1, x2: solutions ``(B, H, W)`` for right-hand sides ``rhs1 = Aᴴb`` and ``rhs2 = Aᴴ(b + γ)``.
    """
    d_rhs = _norm(rhs2 - rhs1).double().clamp_min(1e-30)
    dx = _norm(x2 - x1).double()
    residuals = equation_residual(H, x1, rhs1).double() + equation_residual(H, x2, rhs2).double()
    return Shift(measured=dx / d_rhs, slack=residuals / d_rhs, shift=dx / _norm(x1).double().clamp_min(1e-30))
