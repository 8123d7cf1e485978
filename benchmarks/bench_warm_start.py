"""Does a warm start save iterations? One Gaussian-perturbed solve (ε = 0.05) per shipped DEQ model,
from the SENSE start (cold) and from the clean fixed point (warm), on the first 2 test slices.

Prints per model: iterations of the clean solve, of the cold and warm perturbed solves (with their
final residuals and seconds), the relative distance between the cold and warm end points, and the
ratio of ‖x_warm − x_clean‖ to ‖x_cold − x_clean‖ (what an amplification would see).

Usage: python benchmarks/bench_warm_start.py
"""
import torch, time
from robustkit.studies import make_config
from robustkit.studies.common import load_models, study_dataset, batches
from robustkit.batch import operator_of
from robustkit.attacks import KSpaceGaussian, BoundReconstructor
cfg = make_config("attack", {"models": ["mol", "mnmmol"], "samples": 2})
ds = study_dataset(cfg)
for lm in load_models(cfg.models, ds, 4.0, torch.device("cpu")):
    batch = next(batches(ds, 2, torch.device("cpu")))
    op, b = operator_of(batch), batch["kspace"]
    with torch.no_grad():
        x, s = lm.solve(b, op)
        atk = KSpaceGaussian(BoundReconstructor(lm, op), op.mask, 0.05, seed=0)
        bn = atk(b)
        t=time.perf_counter(); xc, sc = lm.solve(bn, op); tc=time.perf_counter()-t
        t=time.perf_counter(); xw, sw = lm.solve(bn, op, x); tw=time.perf_counter()-t
    d = (torch.linalg.vector_norm((xw-xc).flatten(1),dim=1)/torch.linalg.vector_norm(xc.flatten(1),dim=1))
    amp_c = torch.linalg.vector_norm((xc-x).flatten(1),dim=1); amp_w = torch.linalg.vector_norm((xw-x).flatten(1),dim=1)
    print(lm.name, "clean its", s.iterations.tolist(), "| gaussian eps=0.05 cold its", sc.iterations.tolist(), sc.residual.tolist(), f"{tc:.1f}s",
          "| warm its", sw.iterations.tolist(), sw.residual.tolist(), f"{tw:.1f}s", "| rel dist warm-cold", d.tolist(), "| diff-norm ratio warm/cold", (amp_w/amp_c).tolist())
