"""Shared by the kernel benchmarks (``from common import ...`` works when a benchmark runs as
``python benchmarks/NAME.py``): random SENSE problems, and interleaved timing."""
import statistics
import time
from typing import Callable

import torch


def random_sense(batch: int, coils: int, h: int, w: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Generator]:
    """``(maps (B, C, H, W) complex64 with Σ_c |S_c|² = 1, mask (H, W) 0/1 with ≈ 30 % ones, the
    generator)`` from ``seed``; the generator goes on to draw the benchmark's images."""
    gen = torch.Generator().manual_seed(seed)
    maps = torch.randn(batch, coils, h, w, dtype=torch.complex64, generator=gen)
    maps = maps / (maps.abs() ** 2).sum(dim=1, keepdim=True).sqrt()
    mask = (torch.rand(h, w, generator=gen) < 0.3).float()
    return maps, mask, gen


def interleaved_ms(fns: dict[str, Callable[[], object]], repeats: int, calls: int) -> dict[str, float]:
    """Median milliseconds per call of each function: ``repeats`` rounds, each timing ``calls``
    calls of every function in turn (after one untimed call), so that a machine's drift hits all
    of them alike."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            fn()
            t = time.perf_counter()
            for _ in range(calls):
                fn()
            times[k].append((time.perf_counter() - t) / calls * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}
