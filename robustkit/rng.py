"""Random draws that do not depend on the device: one seed, the same numbers on the CPU and a GPU.

PyTorch's CUDA generator gives another stream than the CPU generator for the same seed, so a study
drawing its noise on the GPU would attack with other noise than the same ``--seed`` on the CPU
(measured on an H200: Gaussian-attack PSNR 0.05–0.36 dB away from the CPU's, docs/gpu.md). robustkit
draws every random tensor from a CPU :class:`torch.Generator` and moves it to the device; the copy
is small next to one F_θ pass. A generator a caller passes on another device is used where it lives.
"""

from __future__ import annotations

import torch


def generator(seed: int) -> torch.Generator:
    """A CPU generator seeded with ``seed``: the source of robustkit's draws on every device."""
    return torch.Generator().manual_seed(int(seed))


def _draw(sampler, shape, generator: torch.Generator | None, dtype: torch.dtype, device) -> torch.Tensor:
    if generator is None:
        return sampler(shape, dtype=dtype, device=device)
    return sampler(shape, generator=generator, dtype=dtype, device=generator.device).to(device)


def randn(shape: tuple[int, ...] | torch.Size, *, generator: torch.Generator | None, dtype: torch.dtype,
          device: torch.device | str) -> torch.Tensor:
    """``torch.randn(shape)`` (complex dtypes: real and imaginary parts N(0, 1/2)) drawn on
    ``generator``'s device and moved to ``device``; without a generator, PyTorch's global RNG on
    ``device``."""
    return _draw(torch.randn, shape, generator, dtype, device)


def rand(shape: tuple[int, ...] | torch.Size, *, generator: torch.Generator | None, dtype: torch.dtype,
         device: torch.device | str) -> torch.Tensor:
    """``torch.rand(shape)``, uniform on [0, 1), drawn like :func:`randn`."""
    return _draw(torch.rand, shape, generator, dtype, device)
