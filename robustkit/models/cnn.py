"""The score network ``F_θ`` shared by MoDL, MOL and MnM-MOL (docs/maths.md §3)."""

from __future__ import annotations

import torch
from torch import nn

from robustkit.complex import from_channels, to_channels


class ScoreCNN(nn.Module):
    """``F_θ``: ``depth`` 3×3 conv layers, 2 → width → … → width → 2 channels, bias, ReLU after all
    but the last, no normalisation, no skip (*ref*: width 64, depth 5).

    ``forward`` maps a complex image ``(B, H, W)`` to a complex image ``(B, H, W)`` through the
    2-channel real view (:mod:`robustkit.complex`).
    """

    def __init__(self, width: int = 64, depth: int = 5):
        super().__init__()
        if depth < 2 or width < 1:
            raise ValueError(f"ScoreCNN needs depth ≥ 2 and width ≥ 1, got depth={depth}, width={width}")
        chans = [2] + [width] * (depth - 1) + [2]
        layers: list[nn.Module] = []
        for i in range(depth):
            layers.append(nn.Conv2d(chans[i], chans[i + 1], 3, padding=1, bias=True))
            if i < depth - 1:
                layers.append(nn.ReLU())
        self.net = nn.Sequential(*layers)

    @property
    def convs(self) -> list[nn.Conv2d]:
        return [m for m in self.net if isinstance(m, nn.Conv2d)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return from_channels(self.net(to_channels(x)))
