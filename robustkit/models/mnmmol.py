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
    leak: float = 0.0  # κ: H_θ(x) = (1 − κ)(x − AᴴA x) − F_θ(x)/λ (docs/maths.md §4); 0 is the paper's model
    leak_on: str = "unmeasured"  # what the leak pulls to 0: "unmeasured", (I − AᴴA) x; "image", x itself


class MnMMOL(DEQModel):
    """``x⁺ = x − γ [AᴴA x − Aᴴb + F_θ(x)/λ] = (1 − γ) x + γ (H_θ(x) + Aᴴb)`` (docs/maths.md §4).

    Its fixed point solves ``Q_θ(x) = AᴴA x + F_θ(x)/λ = Aᴴb``; the iteration contracts where
    ``L[H_θ] < 1``, which training enforces locally in ``B(x*, δ‖x*‖)``.

    With a leak ``κ > 0`` (``config.leak``), ``H_θ(x) = (1 − κ)(x − AᴴA x) − F_θ(x)/λ`` and the fixed
    point solves ``AᴴA x + κ (I − AᴴA) x + F_θ(x)/λ = Aᴴb``: a small Tikhonov pull towards 0 on what
    the measurements leave open. Where ``J_F`` vanishes on the null space of ``A`` (a direction
    F_θ does not see), ``J_H`` is ``1 − κ`` there instead of 1: such directions contract by
    construction, as the ``(1 − m) I`` term does in monotone operator networks.
    """

    name = "mnmmol"
    config_class = MnMMOLConfig
    config: MnMMOLConfig

    def H(self, x: torch.Tensor, op: SenseOperator) -> torch.Tensor:  # noqa: N802 - the paper's name
        """``H_θ(x) = (1 − κ)(x − AᴴA x) − F_θ(x)/λ``, complex ``(B, H, W)``; with ``κ = 0`` the factor
        is exactly 1, so this is the paper's ``x − AᴴA x − F_θ(x)/λ`` bit for bit.

        With ``leak_on = "image"``: ``H_θ(x) = (1 − κ) x − AᴴA x − F_θ(x)/λ``, fixed point
        ``(AᴴA + κ I) x + F_θ(x)/λ = Aᴴb`` (MoDL's ``(μ − 1)/λ`` term, larger). F_θ can cancel this
        pull on image content with a local map (``−λκ x``), where the ``unmeasured`` pull
        ``κ (I − AᴴA) x`` holds the aliasing of the mask, which a small CNN cannot reproduce."""
        if self.config.leak_on == "image":
            return (1 - self.config.leak) * x - op.normal(x) - self.cnn(x) / self.lam_value
        return (1 - self.config.leak) * (x - op.normal(x)) - self.cnn(x) / self.lam_value

    def iteration(self, x: torch.Tensor, kspace: torch.Tensor, op: SenseOperator) -> torch.Tensor:
        g = self.config.gamma
        step = self.H(x, op) + op.adjoint(kspace)
        return step if g == 1.0 else (1 - g) * x + g * step
