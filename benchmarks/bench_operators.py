"""Two rewrites of the solves' kernels, each against the form it would replace, in one run
(docs/performance.md §6):

- ``AᴴA``: the centred formula ``Sᴴ ifft2c(M ⊙ fft2c(S x))`` (four coil-sized shifts per product,
  the library's before this version) against ``SenseOperator.normal`` (the shifts moved off the
  coil axis: ``fftshift(Σ_c conj(S̃_c) ⊙ ifft2(M̃ ⊙ fft2(S̃_c ⊙ ifftshift(x))))``, kept);
- ``F_θ``: ReLUs out of place (the library's) against in place (tried, not kept).

Interleaved rounds, median milliseconds per call, the ratio second / first (< 1: the second is
faster) and the largest difference of the outputs (the same maths, to rounding).

Usage: python benchmarks/bench_operators.py [--batch 2] [--coils 12] [--size 120x104] [--repeats 5]
"""
import argparse
import copy

import torch
from common import interleaved_ms, random_sense
from torch import nn

from robustkit.models.cnn import ScoreCNN
from robustkit.physics import SenseOperator, fft2c, ifft2c

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--batch", type=int, default=2)
parser.add_argument("--coils", type=int, default=12)
parser.add_argument("--size", default="120x104")
parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds of each pair")
parser.add_argument("--calls", type=int, default=20, help="calls per round")
args = parser.parse_args()
h, w = (int(v) for v in args.size.split("x"))

maps, mask, gen = random_sense(args.batch, args.coils, h, w)
x = torch.randn(args.batch, h, w, dtype=torch.complex64, generator=gen)
op = SenseOperator(maps, mask)


def centred_normal(v: torch.Tensor) -> torch.Tensor:
    """``AᴴA v`` as the library computed it before this version: ``Sᴴ ifft2c(M ⊙ fft2c(S v))``."""
    return (maps.conj() * ifft2c(op.mask * fft2c(maps * v.unsqueeze(-3)))).sum(dim=-3)


net = ScoreCNN().eval()
net_inplace = copy.deepcopy(net)
for i, layer in enumerate(net_inplace.net):
    if isinstance(layer, nn.ReLU):
        net_inplace.net[i] = nn.ReLU(inplace=True)


def fwd_vjp(cnn: nn.Module):
    def run() -> torch.Tensor:
        xg = x.detach().requires_grad_(True)
        y = cnn(xg)
        (g,) = torch.autograd.grad(y, xg, torch.ones_like(y))
        return g
    return run


pairs = {
    "AᴴA: centred → library": (lambda: centred_normal(x), lambda: op.normal(x)),
    "F_θ forward: ReLU → in place": (torch.no_grad()(lambda: net(x)), torch.no_grad()(lambda: net_inplace(x))),
    "F_θ fwd + VJP: ReLU → in place": (fwd_vjp(net), fwd_vjp(net_inplace)),
}


print(f"batch {args.batch}, {args.coils} coils, {h}×{w}, {torch.get_num_threads()} threads, "
      f"{args.repeats} interleaved rounds × {args.calls} calls")
print(f"{'kernel: first → second':32s} {'first ms':>10s} {'second ms':>10s} {'ratio':>7s} {'max |difference|':>17s}")
for name, (first, second) in pairs.items():
    diff = (second() - first()).abs().max().item()
    t = interleaved_ms({"first": first, "second": second}, args.repeats, args.calls)
    a, b = t["first"], t["second"]
    print(f"{name:32s} {a:10.2f} {b:10.2f} {b / a:7.2f} {diff:17.1e}")
