"""MnM-MOL (arXiv 2312.00386): a locally monotone deep-equilibrium model."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from robustkit.models.deq import DEQConfig, DEQModel
from robustkit.physics.sense import SenseOperator


@dataclass
class MnMMOLConfig(DEQConfig):
    lam: float = 10.0
    gamma: float = 1.0  # step γ; the reference uses 0.1, the fixed point does not depend on it
    delta: float = 0.3  # ball radius δ (relative) of the local constraint
    m: float = 0.02  # monotonicity margin: the constraint is L[H_θ](x*; δ) ≤ 1 − m


class MnMMOL(DEQModel):
    """``x⁺ = x − γ [AᴴA x − Aᴴb + F_θ(x)/λ] = (1 − γ) x + γ (H_θ(x) + Aᴴb)`` (docs/maths.md §4).

    Its fixed point solves ``Q_θ(x) = AᴴA x + F_θ(x)/λ = Aᴴb``; the iteration contracts where
    ``L[H_θ] < 1``, which training enforces locally in ``B(x*, δ‖x*‖)``.
    """

    name = "mnmmol"
    config_class = MnMMOLConfig
    config: MnMMOLConfig

    def iteration(self, x: torch.Tensor, kspace: torch.Tensor, op: SenseOperator) -> torch.Tensor:
        g = self.config.gamma
        step = self.H(x, op) + op.adjoint(kspace)
        return step if g == 1.0 else (1 - g) * x + g * step
