"""Initialisation test (docs/maths.md §8): does a DEQ model reach the same fixed point from every start?

For each slice the reference is ``x*``, the fixed point solved from the SENSE start. The model's
update map ``f`` is then iterated (its own solver, to residual ``tol``, cap ``cap_factor`` ×
its training cap) from: ``sense``, ``zero_filled`` (``Aᴴb``), ``zeros``, ``ball`` (``x* + r·δ‖x*‖·u``
for a random unit ``u`` at each radius ``r`` of ``radii``) and ``noise`` (complex Gaussian with
``‖·‖ = ‖x*‖``).

``x*`` and every end point are solved to ``tol`` = 1e-6, not the models' evaluation tolerance 1e-5:
along a slow mode with contraction rate ``q`` an iterate with residual ``t`` lies ``≈ t / (1 − q)``
from the fixed point, so with ``q ≈ 0.99`` two solves stopped at 1e-5 sit ≈ 1e-3 apart — the
``same_tol`` — even when they converge to one point.

Schema of ``results.csv`` (one row per model × slice × start):

==================  =================================================================
study, model        ``"init-test"``; the zoo entry
sample              slice index
start, radius       start name; ``r`` for ``ball`` starts (NaN otherwise)
delta               the ball radius δ used (the model's own, or the study's ``delta``)
start_distance      ``‖x₀ − x*‖ / ‖x*‖``
iterations,         updates applied, final relative residual ``‖f(x) − x‖/‖f(x)‖``, whether it
residual, converged met ``tol`` within the cap
distance            ``‖x_end − x*‖ / ‖x*‖``; same_fixed_point: ``distance ≤ same_tol``
psnr                of the point reached
sense_in_ball       whether the SENSE start lies in ``B(x*, δ‖x*‖)`` (per slice)
cap, seed           iteration cap used; the study seed
==================  =================================================================

``traces.csv``: ``model, sample, start, radius, iteration, residual`` (every iterate's residual).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from robustkit.analysis.checks import rel_distance
from robustkit.errors import RobustkitError
from robustkit.studies.common import DEFAULT_DEQ_MODELS, Cell, LoadedModel, StudyConfig, batches

STARTS = ("sense", "zero_filled", "zeros", "ball", "noise")


@dataclass
class InitTestConfig(StudyConfig):
    """starts: which starts (``sense``, ``zero_filled``, ``zeros``, ``ball``, ``noise``); radii: of
    the ``ball`` starts, in units of ``δ‖x*‖``; delta: ball radius δ (``None`` = each model's own,
    0.3 for models without one); cap_factor: iteration cap as a multiple of the model's training
    cap; tol: residual every solve is run to (well below ``same_tol·(1 − q)``, see the module
    docstring); same_tol: relative distance under which two fixed points count as the same."""

    models: list[str] = field(default_factory=lambda: list(DEFAULT_DEQ_MODELS))
    starts: list[str] = field(default_factory=lambda: list(STARTS))
    radii: list[float] = field(default_factory=lambda: [0.1, 0.5, 1.0])
    delta: float | None = None
    cap_factor: float = 3.0
    tol: float = 1e-6
    same_tol: float = 1e-3

    def validate(self) -> None:
        super().validate()
        for s in self.starts:
            if s not in STARTS:
                raise RobustkitError(f"unknown start {s!r}; choose from {', '.join(STARTS)}")
        if "ball" in self.starts and (not self.radii or any(not r >= 0 for r in self.radii)):
            raise RobustkitError("ball starts need radii >= 0, e.g. radii = [0.1, 0.5, 1.0]")
        if self.delta is not None and not self.delta > 0:
            raise RobustkitError(f"delta must be > 0, got {self.delta}")
        if not self.cap_factor > 0 or not self.same_tol > 0 or not self.tol > 0:
            raise RobustkitError("cap_factor, tol and same_tol must be > 0")


def model_delta(lm: LoadedModel, delta: float | None) -> float:
    """δ of a study: the given one, else the model's own (MnM-MOL), else 0.3 (docs/studies.md, init-test)."""
    if delta is not None:
        return float(delta)
    return lm.delta if lm.delta is not None else 0.3


def require_deq(lm: LoadedModel, study: str) -> None:
    """A one-line error unless ``lm`` is a fixed-point model (use `robustkit audit` for the others)."""
    lm.require("fixed_point_map", study)


def _unit(shape, generator, device, dtype) -> torch.Tensor:
    z = torch.complex(torch.randn(shape, generator=generator), torch.randn(shape, generator=generator)).to(device=device, dtype=dtype)
    return z / torch.linalg.vector_norm(z.flatten(1), dim=1).reshape(-1, *([1] * (len(shape) - 1)))


def starts_of(config: InitTestConfig, x_star, sense, zero_filled, delta: float, generator) -> list[tuple[str, float, torch.Tensor]]:
    """``(name, radius, x0)`` for each configured start."""
    norm = torch.linalg.vector_norm(x_star.flatten(1), dim=1).reshape(-1, 1, 1)
    out = []
    for s in config.starts:
        if s == "sense":
            out.append((s, np.nan, sense))
        elif s == "zero_filled":
            out.append((s, np.nan, zero_filled))
        elif s == "zeros":
            out.append((s, np.nan, torch.zeros_like(x_star)))
        elif s == "noise":
            out.append((s, np.nan, norm * _unit(x_star.shape, generator, x_star.device, x_star.dtype)))
        else:
            for r in config.radii:
                out.append((s, float(r), x_star + r * delta * norm * _unit(x_star.shape, generator, x_star.device, x_star.dtype)))
    return out


def solve_from(lm: LoadedModel, b, op, x0, cap: int, tol: float | None = None):
    """Iterate the model's map from ``x0`` with its own solver; ``(x, stats)``."""
    from robustkit.solvers import solve

    s = lm.settings
    return solve(lm.fixed_point_map(b, op), x0, method=s.method, tol=s.tol if tol is None else tol, max_iter=cap)


def init_batch(lm: LoadedModel, batch, config: InitTestConfig, generator) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Rows and trace rows of one batch."""
    from robustkit.batch import operator_of
    from robustkit.evaluate import score
    from robustkit.models.reuse import SPEEDUPS
    from robustkit.physics.sense import sense_init

    op, b, target = operator_of(batch), batch["kspace"], batch["target"]
    samples = batch["index"].cpu().tolist()
    delta = model_delta(lm, config.delta)
    cap = max(1, int(round(config.cap_factor * lm.settings.train_max_iter)))
    rows, traces = [], []
    with torch.no_grad():
        sense = sense_init(op, b)
        x_star, star_stats = solve_from(lm, b, op, sense, cap, config.tol)
        norm = torch.linalg.vector_norm(x_star.flatten(1), dim=1)
        sense_in = (torch.linalg.vector_norm((sense - x_star).flatten(1), dim=1) <= delta * norm).cpu().tolist()
        for name, radius, x0 in starts_of(config, x_star, sense, op.adjoint(b), delta, generator):
            if name == "sense" and SPEEDUPS.cache:  # the very solve that gave x* (deterministic): reuse it
                x, stats = x_star, star_stats
            else:
                x, stats = solve_from(lm, b, op, x0, cap, config.tol)
            dist = rel_distance(x, x_star).cpu().tolist()
            start_dist = rel_distance(x0, x_star).cpu().tolist()
            psnr = score(x, target)["psnr"].cpu().tolist()
            trace = stats.trace.cpu()
            for j, sample in enumerate(samples):
                it = int(stats.iterations[j])
                rows.append({
                    "study": "init-test", "model": lm.name, "sample": sample, "start": name, "radius": radius,
                    "delta": delta, "start_distance": start_dist[j], "iterations": it,
                    "residual": float(stats.residual[j]), "converged": bool(stats.converged[j]),
                    "distance": dist[j], "same_fixed_point": dist[j] <= config.same_tol, "psnr": psnr[j],
                    "sense_in_ball": bool(sense_in[j]), "cap": cap, "seed": config.seed,
                })
                traces += [{"model": lm.name, "sample": sample, "start": name, "radius": radius, "iteration": k,
                            "residual": float(trace[k, j])} for k in range(min(it + 1, trace.shape[0]))]
    return rows, traces


def _model_cell(lm: LoadedModel, config: InitTestConfig, dataset, device):
    generator = torch.Generator().manual_seed(config.seed)
    rows, traces = [], []
    for batch in batches(dataset, config.batch_size, device):
        r, t = init_batch(lm, batch, config, generator)
        rows += r
        traces += t
    return pd.DataFrame(rows), pd.DataFrame(traces)


def check_models(models: list[LoadedModel]) -> None:
    for lm in models:
        require_deq(lm, "init-test")


def cells(config: InitTestConfig, models: list[LoadedModel], dataset, device, run) -> list[Cell]:
    return [Cell(lm.name, lm.name, lambda lm=lm: _model_cell(lm, config, dataset, device)) for lm in models]


#: the columns of ``results.csv`` (documented above).
COLUMNS = ("study", "model", "sample", "start", "radius", "delta", "start_distance", "iterations", "residual",
           "converged", "distance", "same_fixed_point", "psnr", "sense_in_ball", "cap", "seed")

SUMMARY_BY = ["model", "start", "radius"]
SUMMARY_COLUMNS = ["same_fixed_point", "converged", "iterations", "distance", "psnr", "sense_in_ball"]
