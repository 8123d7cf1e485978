"""Seconds per attack cell: ``python scripts/time_attack_cells.py SAMPLES MODEL [MODEL ...]``.

Runs the attack study's cells (clean, adversarial, Gaussian at ε = 0.05; quick.toml's ``steps = 5``,
``draws = 2``, ``batch_size = 2``) on the first SAMPLES slices of the built-in test split at 4×
for each model (zoo names, baselines such as ``sense`` and ``l1-wavelet``, plug-ins) and prints the
wall-clock and CPU seconds of each cell with its mean PSNR, PSNR drop and largest perturbation
‖γ‖/‖b‖. Example images go to a temporary folder; nothing else is written.
"""

from __future__ import annotations

import pathlib
import sys
import tempfile
import time

import torch

from robustkit.studies import make_config
from robustkit.studies.attack import CleanCache, attack_cell
from robustkit.studies.common import load_models, study_data


def main(samples: int, refs: list[str]) -> None:
    config = make_config("attack", {"samples": samples, "batch_size": 2, "eps": [0.05], "steps": 5, "draws": 2})
    dataset, _ = study_data(config)
    device = torch.device("cpu")
    out = pathlib.Path(tempfile.mkdtemp())
    for lm in load_models(refs, dataset, config.accel, device):
        cache = CleanCache()
        for kind in ("clean", "adversarial", "gaussian"):
            wall, cpu = time.perf_counter(), time.process_time()
            rows, _ = attack_cell(lm, kind, 0.0 if kind == "clean" else 0.05, config, dataset, device, cache, out)
            print(f"{lm.name} {kind}: wall {time.perf_counter() - wall:.1f} s, cpu {time.process_time() - cpu:.1f} s, "
                  f"psnr {rows['psnr'].mean():.2f}, drop {rows['psnr_drop'].mean():.2f}, "
                  f"perturbation max {rows['perturbation'].max():.4f}", flush=True)


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit("usage: python scripts/time_attack_cells.py SAMPLES MODEL [MODEL ...]  (e.g. 2 sense l1-wavelet)")
    main(int(sys.argv[1]), sys.argv[2:])
