"""Random SENSE problems of a given size for the kernel benchmarks (``from problem import ...``
works when a benchmark runs as ``python benchmarks/NAME.py``)."""
import torch


def random_sense(batch: int, coils: int, h: int, w: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Generator]:
    """``(maps (B, C, H, W) complex64 with Σ_c |S_c|² = 1, mask (H, W) 0/1 with ≈ 30 % ones, the
    generator)`` from ``seed``; the generator goes on to draw the benchmark's images."""
    gen = torch.Generator().manual_seed(seed)
    maps = torch.randn(batch, coils, h, w, dtype=torch.complex64, generator=gen)
    maps = maps / (maps.abs() ** 2).sum(dim=1, keepdim=True).sqrt()
    mask = (torch.rand(h, w, generator=gen) < 0.3).float()
    return maps, mask, gen
