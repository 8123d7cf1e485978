"""The k-space threat model of docs/maths.md §7: ``b̃ = b + γ`` with ``γ`` on the sampled locations only and
``‖γ‖₂ ≤ ε‖b‖₂`` per sample.

Shapes: k-space ``b`` and perturbation ``γ`` complex ``(B, C, H, W)``; mask real, broadcastable to
``(B, 1, H, W)``; radii ``(B,)``.
"""

from __future__ import annotations

import torch

from robustkit import rng
from robustkit.physics.sense import as_mask


def per_sample_norm(x: torch.Tensor) -> torch.Tensor:
    """``‖x_i‖₂`` over all but the batch dim, ``(B,)``."""
    return torch.linalg.vector_norm(x.reshape(x.shape[0], -1), dim=1)


def _expand(r: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return r.reshape(-1, *([1] * (like.ndim - 1)))


class KSpaceBall:
    """The set ``{γ : γ = M ⊙ γ, ‖γ_i‖₂ ≤ ε‖b_i‖₂}`` of allowed perturbations for a batch ``b``."""

    def __init__(self, kspace: torch.Tensor, mask: torch.Tensor, eps: float):
        if not eps >= 0:  # also rejects NaN
            raise ValueError(f"eps must be a number >= 0, got {eps!r}")
        self.mask = as_mask(mask, kspace.ndim).to(kspace.device)
        self.eps = float(eps)
        self.radius = self.eps * per_sample_norm(kspace)  # (B,)

    def project(self, gamma: torch.Tensor) -> torch.Tensor:
        """Euclidean projection onto the set: restrict to the mask, then scale into the ball."""
        gamma = gamma * self.mask
        norm = per_sample_norm(gamma)
        scale = torch.where(norm > self.radius, self.radius / norm.clamp_min(1e-30), torch.ones_like(norm))
        return gamma * _expand(scale, gamma)

    def random_direction(self, like: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """A complex Gaussian on the sampled locations, normalised to unit norm per sample."""
        noise = rng.randn(like.shape, dtype=like.dtype, device=like.device, generator=generator) * self.mask
        return noise / _expand(per_sample_norm(noise).clamp_min(1e-30), noise)

    def random_point(self, like: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """A uniform random point of the ball on the sampled locations (radius ``r·U^{1/n}``)."""
        n = int(self.mask.expand_as(like)[0].sum().item()) * 2  # real dimension of one sample
        u = rng.rand((like.shape[0],), device=like.device, dtype=self.radius.dtype, generator=generator)
        r = self.radius * u ** (1.0 / max(n, 1))
        return self.random_direction(like, generator) * _expand(r, like)

    def contains(self, gamma: torch.Tensor, rtol: float = 1e-5) -> torch.Tensor:
        """``(B,)`` bool: inside the ball (to ``rtol``) and zero off the mask."""
        off = per_sample_norm(gamma * (1 - self.mask))
        return (per_sample_norm(gamma) <= self.radius * (1 + rtol) + 1e-12) & (off == 0)
