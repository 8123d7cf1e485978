"""Work the studies need not repeat: clean fixed-point solves shared in-process, and warm starts.

Two levers (docs/performance.md), both switchable so that a benchmark can time the old paths in
the same process (:func:`speedups`):

- ``cache``: the clean reconstruction ``f(b)`` of a model at measurements ``b`` is solved once per
  process and reused by every study of a suite (attack, audit, sweep-delta). The key is the
  model's weights (sha256 of its state dict), the settings that shape its no-grad forward (solver,
  tolerance, cap, the model config without the backward's keys, train/eval mode) and the bytes of
  ``b``, the mask ``M`` and the coil maps ``S``: a result never crosses models, data or settings.
  A cached result is the very tensor a fresh solve returns (the solve is deterministic).
- ``warm_start``: a DEQ solve whose measurements are a small perturbation of measurements already
  solved (an attack's next PGD step, a Gaussian draw, the attacked k-space) starts from that
  fixed point instead of the SENSE init. The fixed point ``x* = f(x*)`` does not depend on the
  start; the solve still stops only when ``‖f(x) − x‖/‖f(x)‖ ≤ tol``, so the numbers agree within
  the solver's tolerance (tests/test_reuse.py).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Iterator

import torch


@dataclass
class Speedups:
    """Which levers are on (both by default); ``False`` restores the old code path exactly."""

    warm_start: bool = True
    cache: bool = True


#: the process-wide switches (read at each solve).
SPEEDUPS = Speedups()


@contextlib.contextmanager
def speedups(warm_start: bool = True, cache: bool = True) -> Iterator[Speedups]:
    """Within the block, use (or not) warm starts and the clean-solve cache; restores the previous
    switches after. Turning the cache off also empties it, so the block starts cold."""
    old = Speedups(SPEEDUPS.warm_start, SPEEDUPS.cache)
    SPEEDUPS.warm_start, SPEEDUPS.cache = warm_start, cache
    if not cache:
        CLEAN_SOLVES.clear()
    try:
        yield SPEEDUPS
    finally:
        SPEEDUPS.warm_start, SPEEDUPS.cache = old.warm_start, old.cache


def tensor_digest(*tensors: torch.Tensor) -> str:
    """sha256 over dtype, shape and bytes of each tensor (CPU copy): equal only for equal data."""
    digest = hashlib.sha256()
    for t in tensors:
        t = t.detach().to("cpu").contiguous()
        digest.update(f"{t.dtype}|{tuple(t.shape)}|".encode())
        if t.is_complex():
            t = torch.view_as_real(t)
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


#: config keys that change only the gradient, not the no-grad forward solve.
_BACKWARD_KEYS = ("backward", "backward_method", "backward_tol", "backward_max_iter", "phantom_steps")


def solve_key(lm, kspace: torch.Tensor, op) -> tuple[Any, ...]:
    """What determines ``lm``'s clean no-grad solve at ``kspace`` with operator ``op``."""
    from robustkit.hashing import sha256_json
    from robustkit.models.adapter import state_dict_sha256

    model = lm.model
    config = getattr(model, "config", None)
    config = config.to_dict() if hasattr(config, "to_dict") else {}
    settings = lm.settings.to_dict() if lm.settings is not None else {}
    forward = {k: v for k, v in {**config, **settings}.items() if k not in _BACKWARD_KEYS}
    return (type(model).__qualname__, state_dict_sha256(model), sha256_json(forward), bool(model.training),
            str(kspace.device), tensor_digest(kspace, op.mask, op.maps))


class SolveCache:
    """Least-recently-used store ``key → (x, stats)`` of at most ``size`` clean solves."""

    def __init__(self, size: int = 256):
        self.size = size
        self.store: OrderedDict[tuple[Any, ...], tuple[torch.Tensor, Any]] = OrderedDict()
        self.hits = self.misses = 0

    def clear(self) -> None:
        self.store.clear()
        self.hits = self.misses = 0

    def get(self, key: tuple[Any, ...]):
        if key in self.store:
            self.store.move_to_end(key)
            self.hits += 1
            return self.store[key]
        self.misses += 1
        return None

    def put(self, key: tuple[Any, ...], value: tuple[torch.Tensor, Any]) -> None:
        self.store[key] = value
        self.store.move_to_end(key)
        while len(self.store) > self.size:
            self.store.popitem(last=False)


#: the process's clean solves (shared by the studies of a suite).
CLEAN_SOLVES = SolveCache()


def clean_solve(lm, kspace: torch.Tensor, op):
    """``(x, stats)``: ``lm``'s reconstruction at ``kspace`` without graph, solved once per process
    (module docstring); ``lm.last_stats`` is set as after a solve. ``x`` must not be modified."""
    if not SPEEDUPS.cache:
        with torch.no_grad():
            return lm.solve(kspace, op)
    key = solve_key(lm, kspace, op)
    found = CLEAN_SOLVES.get(key)
    if found is None:
        with torch.no_grad():
            x, stats = lm.solve(kspace, op)
        found = (x.detach(), stats)
        CLEAN_SOLVES.put(key, found)
    lm.last_stats = found[1]
    return found


def warm_start(lm, x: torch.Tensor | None) -> torch.Tensor | None:
    """The start for a solve of ``lm`` near the fixed point ``x``: ``x`` (detached) when warm
    starts are on and ``lm`` is a fixed-point model, else ``None`` (its own SENSE start)."""
    if x is None or not SPEEDUPS.warm_start or not lm.is_deq:
        return None
    return x.detach()
