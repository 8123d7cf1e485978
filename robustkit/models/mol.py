"""MOL (Pramanik, Zimmerman, Jacob, IEEE TCI 2023): a globally monotone deep-equilibrium model."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from robustkit.models.deq import DEQConfig, DEQModel
from robustkit.physics.cg import conjugate_gradient
from robustkit.physics.sense import SenseOperator


@dataclass
class MOLConfig(DEQConfig):
    lam: float = 100.0
    alpha: float = 0.01
    cg_iters: int = 5
    mu: float = 1.001
    m: float = 0.02  # the constraint is L[F_θ] ≤ T = 1 − m
    max_iter: int = 500
    tol: float = 1e-4
    eval_max_iter: int = 1000


class MOL(DEQModel):
    """Forward-backward step ``x⁺ = (μI + αλAᴴA)⁻¹ [(1−α) x + α F_θ(x) + αλ Aᴴb]`` (CG, warm start),
    with ``F_θ`` the CNN output itself; ``I − F_θ`` is monotone when ``L[F_θ] ≤ T = 1 − m``, which
    training enforces with a log barrier on an estimate of ``L[F_θ]`` (docs/maths.md §4)."""

    name = "mol"
    config_class = MOLConfig
    config: MOLConfig

    def iteration(self, x: torch.Tensor, kspace: torch.Tensor, op: SenseOperator) -> torch.Tensor:
        c, lam = self.config, self.lam_value
        rhs = (1 - c.alpha) * x + c.alpha * self.cnn(x) + c.alpha * lam * op.adjoint(kspace)
        x_new, _ = conjugate_gradient(
            lambda v: c.mu * v + c.alpha * lam * op.normal(v), rhs, x0=x, max_iter=c.cg_iters
        )
        return x_new

    def equation_H_map(self, op: SenseOperator):  # noqa: N802 - the paper's name
        """``H`` of MOL's own fixed-point equation ``x = H(x) + Aᴴb`` (docs/maths.md §4, §11):
        ``H(x) = x − AᴴA x − (c x − F_θ(x))/λ`` with ``c = 1 + (μ − 1)/α``, i.e. the fixed point of
        :meth:`iteration` solves ``AᴴA x + (c x − F_θ(x))/λ = Aᴴb``. Complex ``(B, H, W)`` maps."""
        c = 1.0 + (self.config.mu - 1.0) / self.config.alpha
        return lambda x: x - op.normal(x) - (c * x - self.cnn(x)) / self.lam_value


class MOLSN(MOL):
    """MOL with per-layer spectral normalisation of ``F_θ``: each conv is rescaled so its true
    operator norm (power iteration on the convolution, not the reshaped weight matrix) is at most
    ``T^(1/depth)``, so ``L[F_θ] ≤ T`` holds by construction (ReLU is 1-Lipschitz)."""

    name = "mol-sn"

    def __init__(self, config: MOLConfig | None = None):
        super().__init__(config)
        target = (1 - self.config.m) ** (1 / self.config.depth)
        for conv in self.cnn.convs:
            nn.utils.parametrize.register_parametrization(conv, "weight", ConvSpectralNorm(conv, target))


class ConvSpectralNorm(nn.Module):
    """Rescales a conv weight so the convolution's operator norm is ≤ ``target``.

    The norm of the conv as a linear map on ``(C_in, H, W)`` images (zero padding) is estimated by
    power iteration on ``Wᵀ W`` with ``conv2d`` / ``conv_transpose2d`` on a ``size × size`` probe;
    the vector persists across calls, so one step per training step suffices (Miyato et al.).
    """

    def __init__(self, conv: nn.Conv2d, target: float, size: int = 32, iters: int = 1):
        super().__init__()
        self.target, self.iters, self.padding = target, iters, conv.padding
        g = torch.Generator().manual_seed(0)
        self.register_buffer("u", torch.randn(1, conv.in_channels, size, size, generator=g))

    def operator_norm(self, weight: torch.Tensor, iters: int | None = None) -> torch.Tensor:
        f = nn.functional
        u = self.u
        with torch.no_grad():
            for _ in range(self.iters if iters is None else iters):
                v = f.conv_transpose2d(f.conv2d(u, weight, padding=self.padding), weight, padding=self.padding)
                u = v / v.norm().clamp_min(1e-12)
            if self.training:
                self.u.copy_(u)
        return f.conv2d(u, weight, padding=self.padding).norm() / u.norm()

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        sigma = self.operator_norm(weight)
        return weight * (self.target / sigma.clamp_min(self.target))
