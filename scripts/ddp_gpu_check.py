"""One DistributedDataParallel rank around the shipped MnM-MOL on this machine's device (docs/gpu.md).

Usage: python scripts/ddp_gpu_check.py [STEPS]          (default 3)

Joins a one-rank process group (NCCL on CUDA, gloo on the CPU), wraps ``mnmmol-4x`` in
``DistributedDataParallel`` and runs STEPS training steps on one built-in test slice (120×104,
12 ring coils, 4× mask; ``benchmarks/bench_gpu.py``'s synthetic batch): the forward fixed-point
solve, the loss through the implicit backward, and the constraint term of ``robustkit train``.
Prints per step the loss, the constraint term, the gradient norm, the forward iterations and
whether the solve converged, and the time; on CUDA the peak memory. A check that the pieces run
together on a device, not a benchmark.
"""

import socket
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from robustkit.device import resolve_device
from robustkit.models.zoo import load_model
from robustkit.training import TrainConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_gpu import gradients, synthetic_batch  # noqa: E402

steps = int(sys.argv[1]) if len(sys.argv) > 1 else 3
device = resolve_device("auto")  # on CUDA also full fp32
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
dist.init_process_group("nccl" if device.type == "cuda" else "gloo", init_method=f"tcp://127.0.0.1:{port}",
                        rank=0, world_size=1)
print(f"backend {dist.get_backend()}, device {device}")
model, card = load_model("mnmmol-4x")
model = model.to(device).train()
config = TrainConfig(**card["training"])
ddp = DistributedDataParallel(model, device_ids=[device.index or 0] if device.type == "cuda" else None)
optimiser = torch.optim.Adam(ddp.parameters(), lr=1e-5)
batch, op = synthetic_batch((120, 104), 12, device)
for i in range(steps):
    t0 = time.perf_counter()
    optimiser.zero_grad(set_to_none=True)
    loss, term = gradients(ddp, model, batch, op, config)
    grad = torch.sqrt(sum(p.grad.detach().pow(2).sum() for p in model.parameters() if p.grad is not None))
    optimiser.step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    stats = model.last_stats
    print(f"step {i}: loss {loss.item():.3e}  term {term.item():.3e}  |grad| {grad.item():.3e}  "
          f"forward iterations {stats.iterations.tolist()}  converged {stats.converged.tolist()}  "
          f"{time.perf_counter() - t0:.3f} s")
if device.type == "cuda":
    print(f"peak memory {torch.cuda.max_memory_allocated(device) / 2**30:.3f} GB")
dist.destroy_process_group()
