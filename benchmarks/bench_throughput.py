"""Throughput on this machine: one process with 2 threads against 2 processes with 1 thread each.

Runs a study file (default: the main job, the shipped ``quick`` suite) twice, one right after the
other, each into its own empty reports folder:

1. ``robustkit --device cpu run SUITE`` with ``OMP_NUM_THREADS=2`` (one process, two threads);
2. ``torchrun --nproc_per_node 2 -m robustkit --device cpu run SUITE`` with ``OMP_NUM_THREADS=1``
   (two ranks, one thread each; the cells of every study are shared, docs/distributed.md).

It prints both wall-clocks, their ratio, and the largest relative difference of the numeric
result columns of every study between the two runs (the thread count changes the last bits of
some reductions, so the DEQ numbers agree to the solver tolerance, not bit for bit). On a noisy
machine run it more than once; the ratio, taken one run right after the other, is the measure.

Usage: python benchmarks/bench_throughput.py [--suite quick] [--order 1x2-first|2x1-first] [--keep DIR]
(``--keep DIR`` keeps both runs' reports in ``DIR/ranks1`` and ``DIR/ranks2``; else a temporary folder)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_suite(suite: str, reports: Path, ranks: int) -> float:
    """Wall-clock seconds of one run of ``suite`` into ``reports`` with ``ranks`` processes of
    ``2 / ranks`` threads each (exits on failure with the command's stderr)."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = str(2 // ranks)
    args = ["--device", "cpu", "run", suite, "--reports-dir", str(reports), "--no-report"]
    if ranks == 1:
        cmd = [sys.executable, "-m", "robustkit", *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(ranks),
               "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), "-m", "robustkit", *args]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return seconds


def largest_differences(one: Path, two: Path) -> dict[str, float]:
    """Per study, the largest relative difference of the numeric columns of ``results.csv``."""
    import numpy as np
    import pandas as pd

    out = {}
    for run_dir in sorted(p for p in one.iterdir() if (p / "results.csv").exists()):
        study = run_dir.name.rsplit("-", 2)[0]
        (other,) = [p for p in two.iterdir() if p.name.rsplit("-", 2)[0] == study and (p / "results.csv").exists()]
        a, b = pd.read_csv(run_dir / "results.csv"), pd.read_csv(other / "results.csv")
        num = [c for c in a.columns if pd.api.types.is_float_dtype(a[c]) and c in b.columns]
        if len(a) != len(b) or not num:
            out[study] = float("nan") if len(a) != len(b) else 0.0
            continue
        x, y = a[num].to_numpy(float), b[num].to_numpy(float)
        rel = np.abs(x - y) / np.maximum(np.abs(x), 1e-12)
        out[study] = float(np.nanmax(np.where(np.isnan(x) & np.isnan(y), 0.0, rel)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="quick", help="a shipped suite's name or a study file")
    parser.add_argument("--order", choices=["1x2-first", "2x1-first"], default="1x2-first")
    parser.add_argument("--keep", type=Path, help="keep both runs' reports here (a new or empty folder)")
    args = parser.parse_args()
    if args.keep is not None and args.keep.exists() and any(args.keep.iterdir()):
        sys.exit(f"{args.keep} is not empty; give a new folder to --keep")
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() if args.keep is None else contextlib.nullcontext(str(args.keep)) as tmp:
        layouts = [1, 2] if args.order == "1x2-first" else [2, 1]
        seconds = {}
        for ranks in layouts:
            seconds[ranks] = run_suite(args.suite, Path(tmp) / f"ranks{ranks}", ranks)
            print(f"{ranks} process(es) × {2 // ranks} thread(s): {seconds[ranks]:.1f} s", flush=True)
        diffs = largest_differences(Path(tmp) / "ranks1", Path(tmp) / "ranks2")
    print()
    print("| layout | wall-clock (s) | ratio to 1 × 2 |")
    print("|---|---|---|")
    print(f"| 1 process × 2 threads | {seconds[1]:.1f} | 1.00 |")
    print(f"| 2 processes × 1 thread (torchrun) | {seconds[2]:.1f} | {seconds[2] / seconds[1]:.2f} |")
    print()
    print("largest relative difference of numeric results, per study:")
    for study, d in diffs.items():
        print(f"  {study}: {d:.2e}")


if __name__ == "__main__":
    main()
