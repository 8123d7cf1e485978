"""One study of the quick suite at two batch sizes, interleaved (A B A B), in one run.

Prints per run the wall-clock and the number of batched ``F_θ`` evaluations (a noise-free count of
the work; see bench_main_job.py), then a table of the medians and their ratio. The clean-solve
cache is emptied before every run, so each run does the same work.

Usage: python benchmarks/bench_batch_size.py [STUDY] [--sizes 2 4] [--models mnmmol mol] [--eps 0.05]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import tomllib

from bench_main_job import run_study


def main() -> None:
    from robustkit.locations import shipped_suites
    from robustkit.models.reuse import CLEAN_SOLVES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", nargs="?", default="attack")
    parser.add_argument("--sizes", type=int, nargs=2, default=[2, 4])
    parser.add_argument("--models", nargs="+", default=["mnmmol", "mol"])
    parser.add_argument("--eps", type=float, nargs="+", default=[0.05], help="attack only")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    suite = tomllib.loads(shipped_suites()["quick"].read_text(encoding="utf-8"))
    mapping = {**suite["defaults"], **suite[args.study], "models": args.models}
    if args.study == "attack":
        mapping["eps"] = args.eps
    seconds: dict[int, list[float]] = {s: [] for s in args.sizes}
    evals: dict[int, int] = {}
    for _ in range(args.repeats):
        for size in args.sizes:
            CLEAN_SOLVES.clear()
            _, sec, n = run_study(args.study, {**mapping, "batch_size": size}, tempfile.mkdtemp())
            seconds[size].append(sec)
            evals[size] = n
            print(f"{args.study} batch {size}: {sec:.1f} s, {n} batched F_θ evaluations", flush=True)
    a, b = args.sizes
    ma, mb = statistics.median(seconds[a]), statistics.median(seconds[b])
    print("\n| batch size | median s | batched F_θ evaluations |\n|---|---|---|")
    print(f"| {a} | {ma:.1f} | {evals[a]} |\n| {b} | {mb:.1f} | {evals[b]} |")
    print(f"\ntime ratio {b}/{a}: {mb / ma:.2f}")


if __name__ == "__main__":
    main()
