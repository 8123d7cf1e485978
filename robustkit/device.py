"""Device selection: ``auto`` means CUDA whenever it is available; on CUDA, full fp32 arithmetic.

PyTorch lets cuDNN run fp32 convolutions in TF32 by default (a 10-bit mantissa, relative error
≈ 1e-3 per product). A fixed-point solve to the relative residual 1e-5 cannot get there: on an
NVIDIA H200 the shipped ``mnmmol-4x`` stalled at residual ≈ 1.4e-5 and hit its iteration cap on
every slice of the quick suite, and its PSNR differed from the CPU's by 0.05 dB (docs/gpu.md).
:func:`full_fp32` turns TF32 off; :func:`resolve_device` (every command) and the torchrun ranks
call it whenever they pick a CUDA device.
"""

from __future__ import annotations

import torch

from robustkit.errors import RobustkitError


def full_fp32() -> None:
    """Make fp32 convolutions and matrix products on CUDA use full fp32 (IEEE), not TF32.

    Process-wide (PyTorch's backend flags). Call it yourself when you run robustkit models on a
    GPU from your own code without :func:`resolve_device`.
    """
    cudnn = torch.backends.cudnn
    if hasattr(getattr(cudnn, "conv", None), "fp32_precision"):  # torch ≥ 2.9: the per-backend API
        cudnn.conv.fp32_precision = cudnn.rnn.fp32_precision = "ieee"
        torch.backends.cuda.matmul.fp32_precision = "ieee"
    else:
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False


def resolve_device(name: str = "auto") -> torch.device:
    """``auto``, ``cpu`` or ``cuda`` as a :class:`torch.device`; on CUDA also :func:`full_fp32`."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise RobustkitError("--device cuda was asked for but no CUDA device is available; use --device cpu")
    device = torch.device(name)
    if device.type == "cuda":
        full_fp32()
    return device
