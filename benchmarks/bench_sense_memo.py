"""The operator's memo of the SENSE image (``sense_init``), against solving SENSE each time it is
asked for, on a cold no-grad solve of MnM-MOL with the leak towards SENSE (``leak_to = "sense"``,
the recipe's models; docs/performance.md §6). Such a solve asks for ``x_S`` twice: as its start and
in its drive.

Both paths run the same solve, ``--iterations`` Anderson iterations (the eval tolerance is set
out of reach so that both stop at the cap: the recipe's models converge in 25–27 at 120×104), on
random data of the built-in size with a width-64 F_θ. Interleaved rounds; median seconds per
solve, the ratio memo / none (< 1: the memo is faster) and the largest difference of the outputs
(0: the same solve bit for bit).

Usage: python benchmarks/bench_sense_memo.py [--batch 2] [--coils 12] [--size 120x104] [--iterations 26]
"""
import argparse
import statistics
import time

import torch
from common import random_sense

import robustkit.models.base as base_module
import robustkit.models.mnmmol as mnmmol_module
from robustkit.models import build_model
from robustkit.physics import SenseOperator
from robustkit.physics.sense import sense_init, sense_solve

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--batch", type=int, default=2)
parser.add_argument("--coils", type=int, default=12)
parser.add_argument("--size", default="120x104")
parser.add_argument("--iterations", type=int, default=26)
parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds")
args = parser.parse_args()
h, w = (int(v) for v in args.size.split("x"))

maps, mask, gen = random_sense(args.batch, args.coils, h, w)
torch.manual_seed(0)
model = build_model("mnmmol", {"leak": 0.04, "leak_to": "sense", "eval_tol": 1e-30,
                               "eval_max_iter": args.iterations}).eval()
kspace = SenseOperator(maps, mask)(torch.randn(args.batch, h, w, dtype=torch.complex64, generator=gen))


def no_memo(op: SenseOperator, k: torch.Tensor) -> torch.Tensor:
    """The library's path before this version: a CG solve at every call."""
    return sense_solve(op, k)[0]


def solve(memo: bool) -> tuple[float, torch.Tensor]:
    base_module.sense_init = mnmmol_module.sense_init = sense_init if memo else no_memo  # the start, the drive's x_S
    op = SenseOperator(maps, mask)  # a fresh operator per solve: no memo carried over between solves
    t = time.perf_counter()
    with torch.no_grad():
        x = model(kspace, op)
    return time.perf_counter() - t, x


solve(True)
times: dict[bool, list[float]] = {False: [], True: []}
outputs = {}
for _ in range(args.repeats):
    for memo in (False, True):
        seconds, outputs[memo] = solve(memo)
        times[memo].append(seconds)
print(f"{torch.get_num_threads()} threads, batch {args.batch}, {args.coils} coils, {h}×{w}, "
      f"{args.iterations} iterations per solve, median of {args.repeats} interleaved rounds\n")
none, memo = statistics.median(times[False]), statistics.median(times[True])
print(f"{'cold no-grad solve, leak_to = sense':40s} {'s':>7s}")
print(f"{'SENSE solved at each call (before)':40s} {none:7.3f}")
print(f"{'SENSE remembered by the operator':40s} {memo:7.3f}")
print(f"{'ratio remembered / before':40s} {memo / none:7.3f}")
print(f"{'largest |difference| of the outputs':40s} {float((outputs[True] - outputs[False]).abs().max()):7.1e}")
