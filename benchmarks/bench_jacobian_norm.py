"""‖J_{H_θ}(x*)‖₂ by power iteration against the Lanczos process on a shipped DEQ model: steps, seconds,
the estimates, their convergence flags and Ritz/Rayleigh residuals, at the clean fixed point x* of the
first test slices (one batch), with the library defaults (cap 100 steps, tol 1e-4, window 5).

Usage: OMP_NUM_THREADS=1 python benchmarks/bench_jacobian_norm.py [--model mnmmol-4x] [--samples 2]
"""
import argparse
import time

import torch

from robustkit.analysis.lipschitz import jacobian_spectral_norm, plateaued
from robustkit.batch import operator_of
from robustkit.models.reuse import clean_solve
from robustkit.studies import make_config
from robustkit.studies.common import batches, load_models, study_dataset

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--model", default="mnmmol-4x")
parser.add_argument("--samples", type=int, default=2)
parser.add_argument("--iters", type=int, default=100)
args = parser.parse_args()

torch.set_num_threads(1)
cfg = make_config("audit", {"models": [args.model], "samples": args.samples})
ds = study_dataset(cfg)
(lm,) = load_models(cfg.models, ds, cfg.accel, torch.device("cpu"))
batch = next(batches(ds, args.samples, torch.device("cpu")))
op, b = operator_of(batch), batch["kspace"]
x_star, stats = clean_solve(lm, b, op)
print(f"{lm.name}: x* {tuple(x_star.shape)} {x_star.dtype}, clean solve converged {stats.converged.tolist()}")
H = lm.H_map(op)
results = {}
for method in ("power", "lanczos"):
    t = time.perf_counter()
    res = jacobian_spectral_norm(H, x_star, iters=args.iters, method=method, generator=torch.Generator().manual_seed(0))
    seconds = time.perf_counter() - t
    print(f"{method:8s} steps {res.iterations:3d}  {seconds:6.1f} s  ‖J‖₂ ≥ {[round(v, 6) for v in res.estimate.tolist()]}"
          f"  last trace {[round(v, 6) for v in res.trace[-1].tolist()]}  converged {res.converged.tolist()}"
          f"  residual {[f'{v:.1e}' for v in res.rayleigh_residual.tolist()]}")
    results[method] = res
power, lanczos = results["power"].trace, results["lanczos"].trace
for j in range(power.shape[1]):
    reach = (lanczos[:, j] >= power[-1, j]).nonzero()
    rise = [plateaued(lanczos[: k + 1, j : j + 1], 5, 1e-4).item() for k in range(lanczos.shape[0])]
    print(f"sample {j}: Lanczos passes power's {power.shape[0]}-step value at step "
          f"{int(reach[0]) + 1 if len(reach) else 'never'}; its rise over 5 steps is first < 1e-4 at step "
          f"{rise.index(True) + 1 if True in rise else 'never'}; traces at steps 10/20/40/100: power "
          f"{[round(power[min(k, power.shape[0]) - 1, j].item(), 5) for k in (10, 20, 40, 100)]}, Lanczos "
          f"{[round(lanczos[min(k, lanczos.shape[0]) - 1, j].item(), 5) for k in (10, 20, 40, 100)]}")
