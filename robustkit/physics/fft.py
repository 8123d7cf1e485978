"""Centred orthonormal 2-D FFT over the last two dimensions (docs/maths.md §1)."""

from __future__ import annotations

import torch

#: the image axes every centred transform and shift acts on
IMAGE_DIMS = (-2, -1)


def fft2c(x: torch.Tensor) -> torch.Tensor:
    """``F x = fftshift(fft2(ifftshift(x), norm="ortho"))`` over the last two dims; any leading shape."""
    return torch.fft.fftshift(torch.fft.fft2(torch.fft.ifftshift(x, dim=IMAGE_DIMS), norm="ortho"), dim=IMAGE_DIMS)


def ifft2c(k: torch.Tensor) -> torch.Tensor:
    """``Fᴴ k = fftshift(ifft2(ifftshift(k), norm="ortho"))``, the exact inverse and adjoint of :func:`fft2c`."""
    return torch.fft.fftshift(torch.fft.ifft2(torch.fft.ifftshift(k, dim=IMAGE_DIMS), norm="ortho"), dim=IMAGE_DIMS)
