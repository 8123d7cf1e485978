"""How far a "converged" DEQ solve stops from its fixed point (docs/convergence.md, "What a
converged solve is worth").

Usage: python scripts/tolerance_bias.py [MODEL] [SAMPLES] [TOL ...]
       (default: mnmmol-4x 10 1e-5 1e-6 1e-7)

On the first SAMPLES built-in test slices (4×), solves the model's fixed point from the SENSE
start with Anderson to each relative residual TOL (cap 4000 iterations), then prints per TOL the
iterations, residual, PSNR (magnitude, against the target, as ``robustkit models evaluate``) and
the relative distance ‖x_tol − x_ref‖ / ‖x_ref‖ to the tightest solve x_ref. Also the observed
contraction rate ρ of the plain iteration at x_ref and the estimate r / (1 − ρ) of that distance:
near x* the error of an iterate is about its residual divided by 1 − ρ.
"""

import sys

import torch

from robustkit.analysis.contraction import observed_contraction_rate, plain_map
from robustkit.batch import operator_of
from robustkit.metrics import psnr
from robustkit.models.zoo import load_model
from robustkit.solvers.fixed_point import solve
from robustkit.studies.attack import AttackConfig
from robustkit.studies.common import batches, study_dataset

name = sys.argv[1] if len(sys.argv) > 1 else "mnmmol-4x"
samples = int(sys.argv[2]) if len(sys.argv) > 2 else 10
tols = sorted((float(t) for t in sys.argv[3:]), reverse=True) or [1e-5, 1e-6, 1e-7]
model, _ = load_model(name)
model.eval()
dataset = study_dataset(AttackConfig(models=[name], samples=samples))
rows = []
for batch in batches(dataset, 1, torch.device("cpu")):
    op, b = operator_of(batch), batch["kspace"]
    with torch.no_grad():
        f = model.fixed_point_map(b, op)
        x0 = model.initial(b, op, None)
        solved = {t: solve(f, x0, method="anderson", tol=t, max_iter=4000) for t in tols}
        x_ref, ref_stats = solved[tols[-1]]
        rho = float(observed_contraction_rate(plain_map(model, b, op), x_ref).rate[0])
    index = int(batch["index"][0])
    for t, (x, stats) in solved.items():
        r = float(stats.residual[0])
        rows.append({"slice": index, "tol": t, "iterations": int(stats.iterations[0]), "converged": bool(stats.converged[0]),
                     "residual": r, "psnr": float(psnr(x, batch["target"])[0]),
                     "distance_to_ref": float((x - x_ref).flatten().norm() / x_ref.flatten().norm()),
                     "rate": rho, "estimate_r_over_1_minus_rate": r / (1 - rho)})
    print(*(f"slice {index} tol {row['tol']:g}: {row['iterations']} it, residual {row['residual']:.1e}, "
            f"PSNR {row['psnr']:.3f}, distance {row['distance_to_ref']:.1e}" for row in rows[-len(tols):]), sep="\n", flush=True)

import pandas as pd  # noqa: E402

table = pd.DataFrame(rows)
pd.set_option("display.width", 200)
print(f"\n{name}, {samples} test slices, SENSE start, Anderson; reference: tol {tols[-1]:g}")
print(table.groupby("tol").agg(psnr=("psnr", "mean"), iterations=("iterations", "mean"), converged=("converged", "sum"),
                                 distance=("distance_to_ref", "mean"), distance_max=("distance_to_ref", "max"),
                                 estimate=("estimate_r_over_1_minus_rate", "mean"), rate=("rate", "mean"))
      .sort_index(ascending=False).to_string(float_format=lambda v: f"{v:.4g}"))
