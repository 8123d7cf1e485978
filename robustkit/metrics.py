"""Image-quality metrics on magnitude images, per slice, with fastMRI conventions (docs/maths.md §9).

All functions take ``pred`` and ``target`` of shape ``(B, H, W)`` (complex or real; magnitudes are
used) and return a float64 tensor of shape ``(B,)``. ``data_range = max|target|`` per slice.
"""

from __future__ import annotations

import torch
import torch.nn.functional as nnf


def _mag(x: torch.Tensor) -> torch.Tensor:
    return (x.abs() if x.is_complex() else x).to(torch.float64)


def nmse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``‖|x| − |x_gt|‖² / ‖|x_gt|‖²`` per slice."""
    p, t = _mag(pred), _mag(target)
    return ((p - t) ** 2).flatten(1).sum(1) / (t**2).flatten(1).sum(1)


def psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``10 log10(max|x_gt|² / MSE)`` per slice (dB)."""
    p, t = _mag(pred), _mag(target)
    mse = ((p - t) ** 2).flatten(1).mean(1)
    peak = t.flatten(1).amax(1)
    return 10 * torch.log10(peak**2 / mse)


def ssim(
    pred: torch.Tensor, target: torch.Tensor, win_size: int = 7, k1: float = 0.01, k2: float = 0.03
) -> torch.Tensor:
    """Mean structural similarity per slice, as ``skimage.metrics.structural_similarity`` computes
    it with fastMRI's settings: uniform ``win_size²`` window, sample covariance, ``data_range =
    max|x_gt|``, mean over the interior (a border of ``(win_size − 1)/2`` pixels is excluded)."""
    p, t = _mag(pred)[:, None], _mag(target)[:, None]
    data_range = t.flatten(1).amax(1).reshape(-1, 1, 1, 1)
    kernel = torch.ones(1, 1, win_size, win_size, dtype=p.dtype, device=p.device) / win_size**2
    n = win_size**2
    cov_norm = n / (n - 1)

    def filt(z: torch.Tensor) -> torch.Tensor:
        return nnf.conv2d(z, kernel)  # "valid" region == skimage's cropped interior

    ux, uy = filt(p), filt(t)
    uxx, uyy, uxy = filt(p * p), filt(t * t), filt(p * t)
    vx, vy, vxy = cov_norm * (uxx - ux * ux), cov_norm * (uyy - uy * uy), cov_norm * (uxy - ux * uy)
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    return s.flatten(1).mean(1)


METRICS = {"psnr": psnr, "ssim": ssim, "nmse": nmse}
