"""Moving a dataset batch to a device and building its SENSE operator."""

from __future__ import annotations

import torch

from robustkit.physics.sense import SenseOperator


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


def operator_of(batch: dict[str, torch.Tensor]) -> SenseOperator:
    """The SENSE operator ``A = M F S`` of a batch from :class:`robustkit.data.prepared.PreparedDataset`."""
    return SenseOperator(batch["maps"], batch["mask"])
