"""Centre crop of a fully sampled sample in image space (``robustkit data prepare --crop HxW``).

With coil images ``y_c = Fᴴ k_c`` ``(C, H, W)``, maps ``S`` and target ``x``, the cropped sample is

    y'_c = P y_c,    k'_c = F y'_c / p,    S' = P S,    x' = Σ_c conj(S'_c) Fᴴ k'_c = P x / p

where ``P`` keeps the centre ``h × w`` pixels (rows ``(H − h) // 2 …``, columns ``(W − w) // 2 …``,
as fastMRI's ``center_crop``) and ``F`` is the centred orthonormal FFT at the new size. Cropping
commutes with the pixel-wise coil combination, so ``x'`` is exactly the centre crop of ``x``,
divided by ``p = max|P x|`` so that ``max|x'| = 1`` again (``meta["scale"]`` follows; ``meta["crop"]`` records the
original and new sizes). Maps keep ``Σ_c |S_c|² = 1``. Undersampled k-space cannot be cropped: a
crop in image space resamples the k-space grid, which a sampling mask does not survive.
"""

from __future__ import annotations

import re

import numpy as np

from robustkit.data.sample import MIN_SIDE, Sample
from robustkit.errors import RobustkitError


def parse_crop(text: str) -> tuple[int, int]:
    """``"320x256"`` → ``(320, 256)`` (H × W, positive integers)."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", text)
    if m is None or min(int(m[1]), int(m[2])) < 1:
        raise RobustkitError(
            f"cannot read --crop {text!r}; give the image size HxW, e.g. --crop 320x256 "
            "(the ESPIRiT eigenvalue threshold is --espirit-crop)"
        )
    if min(int(m[1]), int(m[2])) < MIN_SIDE:
        raise RobustkitError(f"--crop {text} is too small: robustkit needs at least {MIN_SIDE} pixels a side (the SSIM "
                             f"window); choose a larger crop")
    return int(m[1]), int(m[2])


def centre_slices(shape: tuple[int, int], size: tuple[int, int]) -> tuple[slice, slice]:
    """Row and column slices of the centre ``size`` window of an image of ``shape``."""
    (H, W), (h, w) = shape, size
    top, left = (H - h) // 2, (W - w) // 2
    return slice(top, top + h), slice(left, left + w)


def crop_sample(sample: Sample, size: tuple[int, int]) -> Sample:
    """``sample`` centre-cropped to ``size = (h, w)`` in image space (module docstring)."""
    import torch

    from robustkit.physics.fft import fft2c, ifft2c

    name = f"{sample.meta.get('file', 'sample')} slice {sample.meta.get('slice', '?')}"
    H, W = sample.shape
    h, w = size
    if h > H or w > W:
        raise RobustkitError(f"{name}: --crop {h}x{w} is larger than the image, {H}x{W} (H x W); choose a crop within it")
    if sample.mask is not None or sample.target is None:
        raise RobustkitError(
            f"{name}: --crop needs fully sampled k-space, but this slice is undersampled (it has an acquisition "
            "mask); drop --crop, or pass --ignore-mask if the k-space is in fact fully sampled"
        )
    rows, cols = centre_slices((H, W), size)
    coil_images = ifft2c(torch.from_numpy(sample.kspace.astype(np.complex128)))[..., rows, cols]
    maps = np.ascontiguousarray(sample.maps[..., rows, cols])
    target = (torch.from_numpy(maps.astype(np.complex128)).conj() * coil_images).sum(dim=0).numpy()
    peak = float(np.abs(target).max())
    if not peak > 0:
        raise RobustkitError(f"{name}: the centre {h}x{w} of the image is empty; choose a larger --crop")
    kspace = fft2c(coil_images).numpy() / peak
    meta = {**sample.meta, "scale": sample.meta.get("scale", 1.0) / peak,
            "crop": {"from": [H, W], "to": [h, w], "rows": [rows.start, rows.stop], "cols": [cols.start, cols.stop]}}
    return Sample(kspace=kspace.astype(np.complex64), maps=maps.astype(np.complex64),
                  target=(target / peak).astype(np.complex64), meta=meta)
