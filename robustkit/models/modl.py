"""MoDL (Aggarwal, Mani, Jacob 2019): K shared-weight unrolled iterations with CG data consistency."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from robustkit.models.base import ModelConfig, ReconModel
from robustkit.physics.cg import conjugate_gradient
from robustkit.physics.sense import SenseOperator


@dataclass
class MoDLConfig(ModelConfig):
    lam: float = 10.0
    K: int = 10  # noqa: N815 - the paper's name
    cg_iters: int = 5
    mu: float = 1.001


class MoDL(ReconModel):
    """``z = x − F_θ(x)``; ``x ← CG_{cg_iters}[(λAᴴA + μI) x = z + λAᴴb]`` warm-started at x, K times,
    from the SENSE init; trained end to end by autograd through all K iterations (docs/maths.md §4)."""

    name = "modl"
    is_deq = False
    config_class = MoDLConfig
    config: MoDLConfig

    def iteration(self, x: torch.Tensor, kspace: torch.Tensor, op: SenseOperator) -> torch.Tensor:
        lam, mu = self.lam_value, self.config.mu
        z = x - self.cnn(x)
        rhs = z + lam * op.adjoint(kspace)
        x_new, _ = conjugate_gradient(lambda v: lam * op.normal(v) + mu * v, rhs, x0=x, max_iter=self.config.cg_iters)
        return x_new

    def forward(self, kspace: torch.Tensor, op: SenseOperator, x0: torch.Tensor | None = None) -> torch.Tensor:
        x = self.initial(kspace, op, x0)
        for _ in range(self.config.K):
            x = self.iteration(x, kspace, op)
        return x
