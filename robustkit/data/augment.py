"""Training-time augmentation of a fully sampled sample: a random smooth phase and a left-right flip.

With coil maps ``S`` ``(C, H, W)`` and target ``x`` ``(H, W)``, the augmented sample is

    x' = P(x) · exp(iψ),    S' = P(S),    k'_c = F(S'_c x')

where ``P`` is the identity or the left-right flip (each with probability 1/2), ``F`` the centred
orthonormal FFT, and ``ψ`` a new smooth phase drawn like the built-in data's own
(:func:`robustkit.data.builtin.smooth_phase`: ``Σ_{i+j≤2} a_ij yⁱ xʲ``, ``a_ij ~ N(0, (π/3)²)``).
``k'`` is re-simulated from ``S'`` and ``x'``, so the new sample obeys the forward model exactly
(``Σ_c conj(S'_c) Fᴴ k'_c = x'`` wherever ``Σ_c |S'_c|² = 1``); the mask is applied afterwards.

The built-in phase is synthetic, so a network trained on 37 slices with fixed phases can fit them;
a new phase and a mirror image per epoch give it a new sample every time.
"""

from __future__ import annotations

import numpy as np


def augment_sample(
    maps: np.ndarray, target: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(k', S', x')`` for ``maps`` ``(C, H, W)`` and ``target`` ``(H, W)``, all complex64."""
    import torch

    from robustkit.data.builtin import smooth_phase
    from robustkit.physics.fft import fft2c

    if rng.random() < 0.5:
        maps, target = maps[..., ::-1], target[..., ::-1]
    x = target * np.exp(1j * smooth_phase(target.shape, rng))
    maps = np.ascontiguousarray(maps, dtype=np.complex64)
    x = np.ascontiguousarray(x, dtype=np.complex64)
    k = fft2c(torch.from_numpy(maps) * torch.from_numpy(x)).numpy()
    return k, maps, x
