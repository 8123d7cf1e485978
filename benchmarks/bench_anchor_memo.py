"""The model's memo of the anchor image (``MnMMOL._anchor_reconstruction``), against a pass of the
anchor MoDL each time it is asked for, on the training step of MnM-MOL with a MoDL anchor
(``leak_to = "modl"``, ``robustkit train --set leak_to=modl``). A step asks for the anchor's image
twice: in the drive of its solve and in that of the slow-mode estimate.

Both paths run the same step (:func:`robustkit.training._step`: solve, implicit backward,
constraint term, Adam) from the same weights, optimizer state and random draws, on random data of
the built-in size with the default F_θ and a K = 10 anchor. Interleaved rounds; median seconds
per step, the ratio memo / none (< 1: the memo is faster), anchor passes per step, and the
largest difference of the updated weights (0: the same step bit for bit).

Usage: python benchmarks/bench_anchor_memo.py [--batch 1] [--coils 12] [--size 120x104] [--repeats 3]
"""
import argparse
import copy
import statistics
import time

import torch
from common import random_sense

from robustkit.models import build_model
from robustkit.models.mnmmol import MnMMOL
from robustkit.physics import SenseOperator
from robustkit.training import TrainConfig, _step, _wrap

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--batch", type=int, default=1)
parser.add_argument("--coils", type=int, default=12)
parser.add_argument("--size", default="120x104")
parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds")
args = parser.parse_args()
h, w = (int(v) for v in args.size.split("x"))

maps, mask, gen = random_sense(args.batch, args.coils, h, w)
torch.manual_seed(0)
model = build_model("mnmmol", {"leak": 0.04, "leak_to": "modl"}).train()
target = torch.randn(args.batch, h, w, dtype=torch.complex64, generator=gen)
batch = {"kspace": SenseOperator(maps, mask)(target), "maps": maps, "mask": mask, "target": target}
config = TrainConfig(model="mnmmol", model_config={"leak": 0.04, "leak_to": "modl"})
start = copy.deepcopy(model.state_dict())
remembered = MnMMOL._anchor_reconstruction
passes = []
model.anchor.register_forward_hook(lambda *_: passes.append(1))


def step(memo: bool) -> tuple[float, int, dict[str, torch.Tensor]]:
    MnMMOL._anchor_reconstruction = remembered if memo else (lambda self, kspace, op: self.anchor(kspace, op))
    model.load_state_dict(start)
    model._anchor_memo.clear()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    passes.clear()
    t = time.perf_counter()
    _step(model, _wrap(model, type("Ctx", (), {"distributed": False})()), dict(batch), config, opt,
          torch.Generator().manual_seed(0), lambda loss: None)
    return time.perf_counter() - t, len(passes), copy.deepcopy(model.state_dict())


step(True)
times: dict[bool, list[float]] = {False: [], True: []}
counts, weights = {}, {}
for _ in range(args.repeats):
    for memo in (False, True):
        seconds, counts[memo], weights[memo] = step(memo)
        times[memo].append(seconds)
MnMMOL._anchor_reconstruction = remembered
none, memo = statistics.median(times[False]), statistics.median(times[True])
diff = max(float((weights[True][k].float() - weights[False][k].float()).abs().max()) for k in weights[True])
print(f"{torch.get_num_threads()} threads, batch {args.batch}, {args.coils} coils, {h}×{w}, "
      f"median of {args.repeats} interleaved rounds\n")
print(f"{'training step, leak_to = modl':40s} {'s':>7s} {'anchor passes':>14s}")
print(f"{'anchor run at each call (before)':40s} {none:7.3f} {counts[False]:14d}")
print(f"{'anchor image remembered by the model':40s} {memo:7.3f} {counts[True]:14d}")
print(f"{'ratio remembered / before':40s} {memo / none:7.3f}")
print(f"{'largest |difference| of the weights':40s} {diff:7.1e}")
