"""Random k-space perturbation of the same size as the adversarial one (docs/maths.md §7): complex Gaussian
noise on the sampled locations scaled to ``‖γ_i‖ = ε‖b_i‖`` exactly."""

from __future__ import annotations

import torch
from torchattacks.attack import Attack

from robustkit import rng
from robustkit.attacks.target import BoundReconstructor
from robustkit.attacks.threat import KSpaceBall, _expand


class KSpaceGaussian(Attack):
    """``attack(kspace) -> b + γ``, ``γ = ε‖b‖ · n/‖n‖`` with ``n`` complex Gaussian on the mask.

    Each call draws a new ``γ`` from a private generator seeded by ``seed`` (global RNG untouched);
    studies average the damage over several draws. The model is not called.
    """

    def __init__(self, model: BoundReconstructor, mask: torch.Tensor, eps: float, seed: int = 0):
        super().__init__("KSpaceGaussian", model)
        self.mask, self.eps, self.seed = mask, float(eps), seed
        self._generator: torch.Generator | None = None
        self.last_gamma: torch.Tensor | None = None

    def forward(self, kspace: torch.Tensor, reference: torch.Tensor | None = None) -> torch.Tensor:
        ball = KSpaceBall(kspace, self.mask, self.eps)
        if self._generator is None:
            self._generator = rng.generator(self.seed)  # a CPU stream: the same draws on every device
        gamma = ball.random_direction(kspace, self._generator) * _expand(ball.radius, kspace)
        self.last_gamma = gamma
        return kspace.detach() + gamma

    def save(self, *args, **kwargs):
        raise NotImplementedError("KSpaceGaussian perturbs k-space; run robustkit.studies.attack instead")
