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

    ``x0``: warm start of a DEQ model (``(B, H, W)``, e.g. the clean fixed point): each solve starts
    from the fixed point of the previous call (the attack's last iterate), which lies within the
    perturbation's reach of the next one; the fixed point itself does not depend on the start
    (:mod:`robustkit.models.reuse`). ``None``: every solve starts at the model's SENSE init.
    """

    def __init__(self, model: nn.Module, op: SenseOperator, x0: torch.Tensor | None = None):
        super().__init__()
        # torchattacks reads the device from the first parameter; a baseline (sense, l1-wavelet) has
        # none, so an empty one on the operator's device answers (and keeps its warning quiet).
        self.device_anchor = nn.Parameter(torch.empty(0, device=op.mask.device), requires_grad=False)
        self.model = model
        self.op = op
        self.x0 = None if x0 is None or not self.is_deq else x0.detach()

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
        if self.x0 is None or self.x0.shape[0] != kspace.shape[0]:
            return self.model(kspace, self.op)
        x = self.model(kspace, self.op, self.x0)
        self.x0 = x.detach()
        return x

    @property
    def is_deq(self) -> bool:
        return bool(getattr(self.model, "is_deq", False))

    @property
    def last_stats(self):
        return getattr(self.model, "last_stats", None)
