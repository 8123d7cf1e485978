"""Device selection: ``auto`` means CUDA whenever it is available."""

from __future__ import annotations

import torch

from robustkit.errors import RobustkitError


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RobustkitError("--device cuda was asked for but no CUDA device is available; use --device cpu")
    return torch.device(name)
