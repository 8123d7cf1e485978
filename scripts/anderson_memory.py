"""Anderson's history length m from a far start (docs/convergence.md, "The solver's memory").

Usage: python scripts/anderson_memory.py [MODEL] [SAMPLES] [M ...]     (default: mnmmol-4x 2 5 10)

Solves the model's fixed point on the first SAMPLES built-in test slices from the init-test's
``noise`` start (‖x*‖·u, u a random complex unit direction; ‖·‖ of the SENSE start here) to
residual 1e-6, cap 400, once per m, and prints iterations and final residuals per slice.
"""

import sys

import torch

from robustkit.batch import operator_of
from robustkit.models.zoo import load_model
from robustkit.solvers.fixed_point import solve
from robustkit.studies.attack import AttackConfig
from robustkit.studies.common import batches, study_dataset

name = sys.argv[1] if len(sys.argv) > 1 else "mnmmol-4x"
samples = int(sys.argv[2]) if len(sys.argv) > 2 else 2
memories = [int(m) for m in sys.argv[3:]] or [5, 10]
model, _ = load_model(name)
model.eval()
dataset = study_dataset(AttackConfig(models=[name], samples=samples))
generator = torch.Generator().manual_seed(0)
for batch in batches(dataset, samples, torch.device("cpu")):
    op, b = operator_of(batch), batch["kspace"]
    with torch.no_grad():
        x0 = model.initial(b, op, None)
        norm = x0.flatten(1).norm(dim=1)[:, None, None]
        u = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
        start = norm * u / u.flatten(1).norm(dim=1)[:, None, None]
        for m in memories:
            _, stats = solve(model.fixed_point_map(b, op), start, method="anderson", tol=1e-6, max_iter=400, anderson_m=m)
            print(f"{name} noise start, Anderson m = {m}: iterations {stats.iterations.tolist()}, "
                  f"residual {[f'{r:.1e}' for r in stats.residual.tolist()]}, converged {stats.converged.tolist()}")
