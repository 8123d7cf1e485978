"""The main job (``robustkit run quick``) before and after the speed-ups, per study, in ONE run.

Runs each study of the quick suite (or of ``--suite FILE``) twice in this process: first with
the old code paths (no warm starts, no shared clean solves: ``robustkit.models.reuse.speedups(
warm_start=False, cache=False)``), then with both levers on, as a suite would (the clean-solve
cache is filled by the studies before it, in file order). For each study it prints the wall-clock
of both, their ratio, and the number of ``F_θ`` evaluations (forward passes of the CNN through
any model, counting a batch as one; a noise-free measure of the work on a shared machine), and
checks that both runs gave the same rows (numbers within ``--rtol``; the DEQ solves stop at
residual 1e-5, so results may differ at that level).

Usage: python benchmarks/bench_main_job.py [--samples 1] [--studies attack audit] [--suite quick]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import tomllib

import torch


def count_cnn_calls(models) -> list[int]:
    """Attach a forward hook to every ``ScoreCNN`` of ``models``; the returned one-item list counts calls."""
    from robustkit.models.cnn import ScoreCNN

    counter = [0]

    def hook(*_):
        counter[0] += 1

    for m in models:
        for module in m.modules():
            if isinstance(module, ScoreCNN) and not getattr(module, "_bench_hooked", False):
                module.register_forward_hook(hook)
                module._bench_hooked = True
    return counter


def run_study(name: str, mapping: dict, reports: str):
    """``(frame, seconds, F_θ evaluations)`` of one study run (progress off)."""
    from robustkit.studies import common, make_config

    counters: list[list[int]] = []
    original = common.load_models

    def load_and_count(*args, **kwargs):
        models = original(*args, **kwargs)
        counters.append(count_cnn_calls(models))
        return models

    common.load_models = load_and_count
    try:
        from robustkit.studies import run

        config = make_config(name, dict(mapping))
        t0 = time.perf_counter()
        frame = run(name, config, device="cpu", reports_dir=reports, progress=False)
        seconds = time.perf_counter() - t0
    finally:
        common.load_models = original
    return frame, seconds, sum(c[0] for c in counters)


#: columns that describe how a solve ran (from another start they differ by design), not its result.
SOLVE_STATS = ("iterations", "residual", "backward_residual", "backward_converged", "backward_iterations",
               "probe_iterations", "probe_residual", "adv_residual", "jacobian_iterations")


def compare(before, after) -> tuple[int, float, str]:
    """``(rows, largest relative difference, its column)`` over the numeric result columns both share."""
    import numpy as np
    import pandas as pd

    worst, where = 0.0, "-"
    for c in before.columns:
        if c in SOLVE_STATS or c not in after.columns or not pd.api.types.is_numeric_dtype(before[c]) \
                or pd.api.types.is_bool_dtype(before[c]):
            continue
        a, b = before[c].to_numpy(float), after[c].to_numpy(float)
        both = np.isfinite(a) & np.isfinite(b)
        if both.any():
            d = float((np.abs(a - b)[both] / np.maximum(np.abs(a[both]), 1e-12)).max())
            if d > worst:
                worst, where = d, c
    return len(before), worst, where


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="quick", help="a shipped suite's name or a TOML study file")
    parser.add_argument("--samples", type=int, default=1, help="test slices per study (the suite's own: 4)")
    parser.add_argument("--studies", nargs="*", default=None, help="only these studies of the suite")
    parser.add_argument("--rtol", type=float, default=1e-2, help="flag result columns that differ by more than this")
    args = parser.parse_args()

    from robustkit.models.reuse import CLEAN_SOLVES, speedups
    from robustkit.studies.suite import study_file

    data = tomllib.loads(study_file(args.suite).read_text(encoding="utf-8"))
    defaults = data.pop("defaults", {})
    names = [n for n in data if args.studies is None or n in args.studies]
    mappings = {n: {**defaults, **data[n], "samples": args.samples} for n in names}
    print(f"suite {args.suite}, {args.samples} slice(s), torch threads {torch.get_num_threads()}")
    rows = []
    with tempfile.TemporaryDirectory() as reports:
        before = {}
        with speedups(warm_start=False, cache=False):
            for n in names:
                before[n] = run_study(n, mappings[n], reports)
        CLEAN_SOLVES.clear()
        with speedups(warm_start=True, cache=True):
            for n in names:
                frame, seconds, evals = run_study(n, mappings[n], reports)
                old_frame, old_seconds, old_evals = before[n]
                count, worst, column = compare(old_frame, frame)
                rows.append((n, old_seconds, seconds, old_evals, evals, count, worst, column))
    print(f"{'study':<12} {'before s':>9} {'after s':>9} {'time ratio':>10} {'F evals before':>15} "
          f"{'after':>8} {'eval ratio':>10} {'rows':>5} {'max rel diff':>12} column")
    for n, t0, t1, e0, e1, count, worst, column in rows:
        flag = "  (> rtol)" if worst > args.rtol else ""
        print(f"{n:<12} {t0:9.1f} {t1:9.1f} {t1 / t0:10.2f} {e0:15d} {e1:8d} {e1 / max(e0, 1):10.2f} "
              f"{count:5d} {worst:12.2e} {column}{flag}")
    t0, t1 = sum(r[1] for r in rows), sum(r[2] for r in rows)
    e0, e1 = sum(r[3] for r in rows), sum(r[4] for r in rows)
    print(f"{'total':<12} {t0:9.1f} {t1:9.1f} {t1 / t0:10.2f} {e0:15d} {e1:8d} {e1 / max(e0, 1):10.2f}")
    print(f"clean-solve cache: {CLEAN_SOLVES.hits} hits, {CLEAN_SOLVES.misses} misses")


if __name__ == "__main__":
    main()
