"""Adversarial k-space perturbation by projected gradient ascent (docs/maths.md §7).

Maximises the relative reconstruction error

    ℓ_i(γ) = ‖R ⊙ (f(b_i + γ_i) − x_ref,i)‖² / ‖R ⊙ x_ref,i‖²

over ``γ`` in :class:`~robustkit.attacks.threat.KSpaceBall` (sampled locations, ``‖γ_i‖ ≤ ε‖b_i‖``),
with ``x_ref`` the clean reconstruction (default) or the ground truth and ``R`` an optional
region-of-interest mask. Step ``γ ← Π(γ + α ε‖b‖ · d/‖d‖)`` with ``d`` the gradient (PGD-ℓ2) or the
Adam direction ``m̂/(√v̂ + 1e-12)`` (projected Adam, normalised the same way). Random start inside the
ball, restarts; per sample the worst iterate seen over all steps and restarts is kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchattacks.attack import Attack

from robustkit import rng
from robustkit.attacks.target import BoundReconstructor
from robustkit.attacks.threat import KSpaceBall, _expand, per_sample_norm

OPTIMIZERS = ("pgd", "adam")


@dataclass
class AttackTrace:
    """What one call found. ``loss``: ``(restarts, steps + 1, B)`` the objective at each iterate
    (before each step and after the last); ``best_loss``: ``(B,)``; ``gamma``: ``(B, C, H, W)`` the
    worst perturbation kept; ``radius``: ``(B,)`` ``ε‖b‖``.

    For a DEQ model with the implicit backward, the backward solve ``g = J_fᴴ g + ∂ℓ/∂x*`` behind
    each gradient: ``backward_residual`` ``(B,)`` its largest final residual over the steps,
    ``backward_converged`` ``(B,)`` the fraction of steps whose backward converged,
    ``backward_iterations`` ``(B,)`` its mean iterations (all ``None`` when no backward solve ran:
    unrolled models, Jacobian-free or phantom gradients)."""

    loss: torch.Tensor
    best_loss: torch.Tensor
    gamma: torch.Tensor
    radius: torch.Tensor
    backward_residual: torch.Tensor | None = None
    backward_converged: torch.Tensor | None = None
    backward_iterations: torch.Tensor | None = None


def relative_error(x: torch.Tensor, reference: torch.Tensor, roi: torch.Tensor | None = None) -> torch.Tensor:
    """``‖R ⊙ (x − x_ref)‖² / ‖R ⊙ x_ref‖²`` per sample, ``(B,)``."""
    diff, ref = x - reference, reference
    if roi is not None:
        diff, ref = diff * roi, ref * roi
    return per_sample_norm(diff) ** 2 / per_sample_norm(ref).clamp_min(1e-30) ** 2


class KSpacePGD(Attack):
    """PGD-ℓ2 (or projected Adam) on the measured k-space of a reconstruction model.

    A torchattacks :class:`~torchattacks.attack.Attack`: ``attack(kspace, reference) -> b + γ``.
    Unlike torchattacks' image attacks there is no [0, 1] range or clamp, no classification loss,
    and the model stays differentiable in eval mode.

    Args:
        model: :class:`~robustkit.attacks.target.BoundReconstructor` (model bound to the batch's operator).
        mask: sampling mask, broadcastable to ``(B, 1, H, W)``.
        eps: relative radius ε (``‖γ‖ ≤ ε‖b‖``).
        steps: ascent steps per restart.
        step_size: α, relative to the radius ε‖b‖ (default ``2.5 / steps``, Madry et al.).
        restarts: random starts; the per-sample worst is kept.
        optimizer: ``"pgd"`` or ``"adam"``.
        random_start: start at a uniform random point of the ball (else at ``γ = 0``).
        roi: optional real ``(B or 1, H, W)`` region-of-interest weight of the loss.
        seed: seed of the random starts (a private generator; global RNG untouched).
    """

    def __init__(
        self,
        model: BoundReconstructor,
        mask: torch.Tensor,
        eps: float,
        steps: int = 10,
        step_size: float | None = None,
        restarts: int = 1,
        optimizer: str = "pgd",
        random_start: bool = True,
        roi: torch.Tensor | None = None,
        seed: int = 0,
    ):
        super().__init__("KSpacePGD", model)
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
        if steps < 1 or restarts < 1:
            raise ValueError("steps and restarts must be >= 1")
        self.mask, self.eps, self.steps, self.restarts = mask, float(eps), int(steps), int(restarts)
        self.step_size = 2.5 / self.steps if step_size is None else float(step_size)
        self.optimizer, self.random_start, self.roi, self.seed = optimizer, random_start, roi, seed
        self.last_trace: AttackTrace | None = None

    def objective(self, kspace: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        return relative_error(self.get_logits(kspace), reference, self.roi)

    def forward(self, kspace: torch.Tensor, reference: torch.Tensor | None = None) -> torch.Tensor:
        kspace = kspace.detach()
        if reference is None:
            with torch.no_grad():
                reference = self.get_logits(kspace)
        reference = reference.detach()
        ball = KSpaceBall(kspace, self.mask, self.eps)
        generator = rng.generator(self.seed)  # a CPU stream: the same draws on every device
        batch = kspace.shape[0]
        best_loss = torch.full((batch,), -1.0, device=kspace.device, dtype=ball.radius.dtype)
        best_gamma = torch.zeros_like(kspace)
        trace = torch.zeros(self.restarts, self.steps + 1, batch, dtype=ball.radius.dtype)
        step = _expand(self.step_size * ball.radius, kspace)

        def keep(loss: torch.Tensor, gamma: torch.Tensor) -> None:
            better = loss > best_loss
            best_loss.copy_(torch.where(better, loss, best_loss))
            best_gamma.copy_(torch.where(_expand(better, gamma), gamma, best_gamma))

        backward: list = []  # SolverStats of the implicit backward behind each gradient
        for r in range(self.restarts):
            gamma = ball.random_point(kspace, generator) if self.random_start else torch.zeros_like(kspace)
            m = torch.zeros_like(kspace)
            v = torch.zeros(kspace.shape, dtype=ball.radius.dtype, device=kspace.device)
            for t in range(self.steps):
                gamma.requires_grad_(True)
                loss = self.objective(kspace + gamma, reference)
                (grad,) = torch.autograd.grad(loss.sum(), gamma)
                stats = getattr(self.model, "last_stats", None)
                if getattr(stats, "backward", None) is not None:
                    backward.append(stats.backward)
                gamma = gamma.detach()
                trace[r, t] = loss.detach().cpu()
                keep(loss.detach(), gamma)
                direction = grad * ball.mask
                if self.optimizer == "adam":
                    b1, b2 = 0.9, 0.999
                    m = b1 * m + (1 - b1) * direction
                    v = b2 * v + (1 - b2) * direction.abs() ** 2
                    direction = (m / (1 - b1 ** (t + 1))) / ((v / (1 - b2 ** (t + 1))).sqrt() + 1e-12)
                norm = _expand(per_sample_norm(direction).clamp_min(1e-30), direction)
                gamma = ball.project(gamma + step * direction / norm)
            with torch.no_grad():
                loss = self.objective(kspace + gamma, reference)
            trace[r, self.steps] = loss.cpu()
            keep(loss, gamma)
        self.last_trace = AttackTrace(loss=trace, best_loss=best_loss.cpu(), gamma=best_gamma, radius=ball.radius)
        if backward:
            self.last_trace.backward_residual = torch.stack([s.residual.detach().cpu() for s in backward]).amax(0)
            self.last_trace.backward_converged = torch.stack([s.converged.cpu().float() for s in backward]).mean(0)
            self.last_trace.backward_iterations = torch.stack([s.iterations.cpu().float() for s in backward]).mean(0)
        return kspace + best_gamma

    def save(self, *args, **kwargs):  # torchattacks' save() scores a classifier
        raise NotImplementedError("KSpacePGD attacks a reconstruction model; run robustkit.studies.attack instead")
