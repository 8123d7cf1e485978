"""The interface every reconstruction model shares: ``model(kspace, op, x0=None) -> image``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from robustkit.models.cnn import ScoreCNN
from robustkit.physics.sense import SenseOperator, sense_init


@dataclass
class ModelConfig:
    """Architecture and solver settings common to all models (stored on the model card)."""

    width: int = 64
    depth: int = 5
    lam: float = 10.0  # initial λ (learnable)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ReconModel(nn.Module):
    """Base class: holds the score network ``F_θ`` and the learnable λ.

    ``forward(kspace (B, C, H, W), op, x0=None) -> image (B, H, W)``; ``x0`` defaults to the SENSE
    init (docs/maths.md §1). ``iteration(x, kspace, op)`` is one application of the model's update map ``f``;
    DEQ models solve ``x = f(x)`` and leave per-sample statistics in ``last_stats``.
    """

    name: ClassVar[str]
    is_deq: ClassVar[bool] = False
    config_class: ClassVar[type[ModelConfig]] = ModelConfig

    def __init__(self, config: ModelConfig | None = None):
        super().__init__()
        self.config = config or self.config_class()
        self.cnn = ScoreCNN(self.config.width, self.config.depth)
        self.lam = nn.Parameter(torch.tensor(float(self.config.lam)))
        self.last_stats = None

    @property
    def lam_value(self) -> torch.Tensor:
        """λ, kept positive."""
        return self.lam.clamp_min(1e-3)

    def initial(self, kspace: torch.Tensor, op: SenseOperator, x0: torch.Tensor | None) -> torch.Tensor:
        return sense_init(op, kspace) if x0 is None else x0

    def iteration(self, x: torch.Tensor, kspace: torch.Tensor, op: SenseOperator) -> torch.Tensor:
        raise NotImplementedError

    def fixed_point_map(self, kspace: torch.Tensor, op: SenseOperator) -> Callable[[torch.Tensor], torch.Tensor]:
        """The update map ``f(x) = iteration(x, kspace, op)`` for these measurements, the operator
        that solvers, Lipschitz estimates and convergence checks iterate."""
        return lambda x: self.iteration(x, kspace, op)

    def H(self, x: torch.Tensor, op: SenseOperator) -> torch.Tensor:  # noqa: N802 - the paper's name
        """``H_θ(x) = x − AᴴA x − F_θ(x)/λ`` (docs/maths.md §2), complex ``(B, H, W)``."""
        return x - op.normal(x) - self.cnn(x) / self.lam_value

    def H_map(self, op: SenseOperator) -> Callable[[torch.Tensor], torch.Tensor]:  # noqa: N802
        """``x ↦ H_θ(x)`` for this operator: the map whose local Lipschitz constant is constrained
        in training and audited (docs/maths.md §2, §6)."""
        return lambda x: self.H(x, op)

    def forward(self, kspace: torch.Tensor, op: SenseOperator, x0: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError
