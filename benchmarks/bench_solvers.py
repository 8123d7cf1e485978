"""Evaluations of ``f`` to a relative fixed-point residual of 1e-3 on a contractive toy with one
slow mode (spectral radius 0.98, docs/maths.md §6): damped γ = 0.1 (the MnM-MOL reference), γ = 1, Anderson.

``f(x) = W x + c`` per sample, complex ``(B, N)``, ``W = U diag(λ) Uᴴ`` with λ spread in
[−0.3, 0.6] and one eigenvalue 0.98. Run: ``python benchmarks/bench_solvers.py``.
"""

from __future__ import annotations

import time

import torch

from robustkit.solvers import solve

N, BATCH, RHO, TOL = 256, 4, 0.98, 1e-3


def toy(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    a = torch.complex(torch.randn(N, N, generator=g, dtype=torch.float64), torch.randn(N, N, generator=g, dtype=torch.float64))
    u, _ = torch.linalg.qr(a)
    lam = torch.cat([torch.linspace(-0.3, 0.6, N - 1, dtype=torch.float64), torch.tensor([RHO], dtype=torch.float64)])
    w = ((u * lam.to(u.dtype)) @ u.mH).to(torch.complex64)
    c = torch.complex(torch.randn(BATCH, N, generator=g), torch.randn(BATCH, N, generator=g))
    return lambda x: x @ w.T + c, c


def main() -> None:
    f, c = toy()
    runs = {
        "damped γ=0.1": {"method": "damped", "damping": 0.1},
        "damped γ=1": {"method": "damped", "damping": 1.0},
        "anderson m=5": {"method": "anderson"},
    }
    rows = []
    for name, kwargs in runs.items():
        start = time.perf_counter()
        _, stats = solve(f, torch.zeros_like(c), tol=TOL, max_iter=20000, **kwargs)
        seconds = time.perf_counter() - start
        evals = (stats.iterations + 1).double().mean().item()  # per sample, incl. the evaluation at x₀
        rows.append((name, evals, int(stats.converged.sum()), seconds))
    best = min(r[1] for r in rows)
    print(f"contractive toy, N={N}, B={BATCH}, spectral radius {RHO}, residual tol {TOL:g}")
    print(f"{'solver':<14} {'f-evals':>8} {'× anderson':>11} {'converged':>10} {'seconds':>8}")
    for name, evals, conv, seconds in rows:
        print(f"{name:<14} {evals:>8.0f} {evals / best:>11.1f} {conv:>7}/{BATCH} {seconds:>8.3f}")


if __name__ == "__main__":
    main()
