"""A reconstruction model bound to one batch's SENSE operator, as the one-argument ``nn.Module``
``kspace ↦ image`` that torchattacks' :class:`~torchattacks.attack.Attack` expects."""

from __future__ import annotations

import torch
from torch import nn

from robustkit.physics.sense import SenseOperator


class BoundReconstructor(nn.Module):
    """``forward(kspace (B, C, H, W)) -> image (B, H, W)`` = ``model(kspace, op)``.

    DEQ models stay differentiable in eval mode: their fixed point is differentiated implicitly, so
    ``∂x*/∂b`` is available to the attack. ``last_stats`` forwards the model's solver statistics.
    """

    def __init__(self, model: nn.Module, op: SenseOperator):
        super().__init__()
        self.model = model
        self.op = op

    # torchattacks reads ``training`` before an attack and restores it after: mirror the model's.
    @property
    def training(self) -> bool:  # type: ignore[override]
        model = self.__dict__.get("_modules", {}).get("model")
        return bool(model.training) if model is not None else True

    @training.setter
    def training(self, mode: bool) -> None:
        model = self.__dict__.get("_modules", {}).get("model")
        if model is not None:
            model.train(mode)

    def forward(self, kspace: torch.Tensor) -> torch.Tensor:
        return self.model(kspace, self.op)

    @property
    def is_deq(self) -> bool:
        return bool(getattr(self.model, "is_deq", False))

    @property
    def last_stats(self):
        return getattr(self.model, "last_stats", None)
