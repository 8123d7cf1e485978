"""The one helper pair between native complex images and the CNN's 2-channel real view (docs/maths.md §1)."""

from __future__ import annotations

import torch


def to_channels(x: torch.Tensor) -> torch.Tensor:
    """Complex ``(B, H, W)`` → real ``(B, 2, H, W)`` (real, imaginary)."""
    return torch.view_as_real(x).permute(0, 3, 1, 2)


def from_channels(x: torch.Tensor) -> torch.Tensor:
    """Real ``(B, 2, H, W)`` → complex ``(B, H, W)``."""
    return torch.complex(x[:, 0], x[:, 1])
