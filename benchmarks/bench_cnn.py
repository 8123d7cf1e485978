"""How close ``F_θ`` runs to this machine's floating-point rate: the solves' cost floor.

Every solve, certificate and attack of robustkit spends most of its time in ``F_θ`` (the
reference ScoreCNN: 5 conv 3×3 layers, 64 channels; docs/performance.md §1). This prints, in one
run and interleaved:

- the rate of a large fp32 matrix product (the machine's practical fp32 ceiling);
- the rate of one 64 → 64 conv layer at the solves' size, with the activations in channels-last
  order (what ``F_θ`` gets: ``to_channels`` is a view of a complex image, channel stride 1) and
  in contiguous order;
- milliseconds per ``F_θ`` pass (forward under ``no_grad``, and forward + VJP as in an implicit
  backward or an ascent step), at batch 1, 2 and 4, with the conv weights as stored and in
  channels-last order, with the ratio of the two;
- the largest difference between the two weight orders' outputs (the same maths, to rounding);
- milliseconds per ``F_θ`` forward pass with the convs in bf16 (autocast) against fp32, and the
  relative difference of the outputs (bf16's 8-bit mantissa: ≈ 3e-3).

Usage: python benchmarks/bench_cnn.py [--size 120x104] [--repeats 5]
"""
import argparse
import copy

import torch
from common import interleaved_ms

from robustkit.complex import to_channels
from robustkit.models.cnn import ScoreCNN

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--size", default="120x104")
parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds")
parser.add_argument("--calls", type=int, default=10, help="calls per round")
args = parser.parse_args()
h, w = (int(v) for v in args.size.split("x"))


def median_of(fns: dict) -> dict:
    return interleaved_ms(fns, args.repeats, args.calls)


gen = torch.Generator().manual_seed(0)
print(f"{torch.get_num_threads()} threads, {h}×{w}, median of {args.repeats} interleaved rounds × {args.calls} calls\n")

n = 2048
a, b = torch.randn(n, n, generator=gen), torch.randn(n, n, generator=gen)
act = torch.randn(2, 64, h, w, generator=gen)
weight = torch.randn(64, 64, 3, 3, generator=gen)
act_cl = act.contiguous(memory_format=torch.channels_last)
conv = torch.nn.functional.conv2d
t = median_of({
    "matmul": lambda: a @ b,
    "conv, channels-last": lambda: conv(act_cl, weight, padding=1),
    "conv, contiguous": lambda: conv(act, weight, padding=1),
})
conv_flop = 2 * 2 * h * w * 64 * 64 * 9
print(f"{'kernel':44s} {'ms':>8s} {'GFLOP/s':>9s}")
print(f"{'fp32 matmul 2048²':44s} {t['matmul']:8.2f} {2 * n ** 3 / t['matmul'] / 1e6:9.1f}")
for k in ("conv, channels-last", "conv, contiguous"):
    print(f"{'64→64 conv 3×3, batch 2, ' + k:44s} {t[k]:8.2f} {conv_flop / t[k] / 1e6:9.1f}")

net = ScoreCNN().eval()
net_cl = copy.deepcopy(net).to(memory_format=torch.channels_last)


def forward(cnn, x):
    return torch.no_grad()(lambda: cnn(x))


def forward_vjp(cnn, x):
    def run():
        xg = x.detach().requires_grad_(True)
        y = cnn(xg)
        return torch.autograd.grad(y, xg, torch.ones_like(y))[0]
    return run


print(f"\n{'F_θ pass':24s} {'batch':>5s} {'weights as stored ms':>21s} {'channels-last ms':>17s} {'ratio':>6s} {'max diff':>9s}")
for batch in (1, 2, 4):
    x = torch.randn(batch, h, w, dtype=torch.complex64, generator=gen)
    for name, make in (("forward, no grad", forward), ("forward + VJP", forward_vjp)):
        f0, f1 = make(net, x), make(net_cl, x)
        diff = (f0() - f1()).abs().max().item()
        t = median_of({"stored": f0, "cl": f1})
        print(f"{name:24s} {batch:5d} {t['stored']:21.2f} {t['cl']:17.2f} {t['cl'] / t['stored']:6.2f} {diff:9.1e}")


def forward_convs(x, bf16: bool):
    """F_θ's conv stack on ``x``'s channels, its convs in fp32 or in bf16 (autocast; AMX or AVX-512
    BF16 where the CPU has them), output in fp32."""
    def run():
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return net.net(to_channels(x)).float()
    return run


x = torch.randn(2, h, w, dtype=torch.complex64, generator=gen)
f32, bf16 = forward_convs(x, bf16=False), forward_convs(x, bf16=True)
t = median_of({"fp32": f32, "bf16": bf16})
rel = float((f32() - bf16()).norm() / f32().norm())
print(f"\n{'F_θ forward, batch 2':24s} {'fp32 ms':>8s} {'bf16 ms':>8s} {'ratio':>6s} {'relative difference':>20s}")
print(f"{'':24s} {t['fp32']:8.2f} {t['bf16']:8.2f} {t['bf16'] / t['fp32']:6.2f} {rel:20.1e}")
print(f"\nF_θ forward FLOP per image: {2 * h * w * 9 * (2 * 64 + 3 * 64 * 64 + 64 * 2) / 1e9:.2f} G")
