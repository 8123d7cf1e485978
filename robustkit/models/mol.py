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

    @property
    def c(self) -> float:
        """``c = 1 + (μ − 1)/α``: the weight of ``x`` in MOL's fixed-point equation (:meth:`H`)."""
        return 1.0 + (self.config.mu - 1.0) / self.config.alpha

    def H(self, x: torch.Tensor, op: SenseOperator) -> torch.Tensor:  # noqa: N802 - the paper's name
        """MOL's own ``H_θ(x) = x − AᴴA x − (c x − F_θ(x))/λ``, complex ``(B, H, W)``.

        A fixed point of MOL's step satisfies ``AᴴA x + (c x − F_θ(x))/λ = Aᴴb``, i.e.
        ``x = H_θ(x) + Aᴴb`` with this ``H_θ`` (docs/maths.md §4): the audit, the observed
        contraction rate and the monotone bound then measure the map whose fixed point MOL
        computes, not the MnM-MOL operator built from MOL's network."""
        return x - op.normal(x) - (self.c * x - self.cnn(x)) / self.lam_value

    @property
    def m(self) -> float:
        """Monotonicity margin of ``Q_θ = I − H_θ`` implied by MOL's constraint ``L[F_θ] ≤ 1 − m_F``
        (``m_F = config.m``): ``m = (c − 1 + m_F)/λ``, so that ``L[H_θ] ≤ 1 − m`` wherever the
        constraint holds and ``‖AᴴA‖ ≤ 1``, ``c/λ ≤ 1/2`` (docs/maths.md §4)."""
        return float((self.c - 1.0 + self.config.m) / float(self.lam_value.detach()))


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
