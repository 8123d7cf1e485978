"""Bound study (docs/maths.md §12): the monotone bound ``‖x*(b+γ) − x*(b)‖ ≤ ‖Aᴴγ‖/m`` beside the
amplification an adversarial attack measures, per DEQ model, slice, ε and L estimator.

At the clean fixed point ``x₁ = x*(b)`` (SENSE start) each estimator of
:func:`robustkit.analysis.lower_bound.lipschitz_lower_bound` gives a lower bound ``L`` of
``L[H](x₁; δ)`` for the model's OWN equation ``x = H(x) + Aᴴb`` (MOL: its own ``H``, not the generic
``H_θ``; ``MOL.H``); ``m_eff = 1 − L`` and
``bound = 1/m_eff``. A PGD attack (``‖γ‖ ≤ ε‖b‖``, pushing ``x*(b+γ)`` away from ``x₁``) gives
``x₂ = x*(b+γ)`` and ``measured = ‖x₂ − x₁‖ / ‖Aᴴγ‖``.

Status: ``vacuous`` where ``m_eff ≤ 0`` (the estimate certifies nothing); ``violated`` where
``measured > bound·(1 + slack)`` — with both solves converged, this proves that ``L[H] ≤ L`` fails on
every set holding ``x₁`` and ``x₂`` (inside ``B(x₁, δ‖x₁‖)`` when ``in_ball``: the estimator missed
the local constant); from an unconverged solve it proves nothing; ``holds`` otherwise. A bound
that holds is no certificate either: ``L`` is a lower bound, so the true bound may be looser.

Schema of ``results.csv`` (one row per model × ε × slice × estimator):

=======================  ===================================================================
study, model, sample     ``"bound"``; the model; slice index
eps                      relative attack radius ε (``‖γ‖ ≤ ε‖b‖``)
estimator                ``ball``, ``slow``, ``top``, ``power`` or ``max`` (the largest of the four)
L                        that estimator's lower bound of ``L[H](x*; δ)`` (NaN if it did not run)
m_eff, bound             ``1 − L``; ``1/m_eff`` (``inf`` where ``m_eff ≤ 0``)
measured                 ``‖x*(b+γ) − x*(b)‖ / ‖Aᴴγ‖`` of the attack (the same on every estimator row)
status                   ``holds``, ``vacuous`` or ``violated`` (above)
slack                    ``(‖e₁‖ + ‖e₂‖)/‖Aᴴγ‖``, ``e_i`` the equation residuals of the two solves
shift, in_ball           ``‖x₂ − x₁‖/‖x₁‖``; whether it is ≤ δ (both points in the ball of the estimates)
delta                    ball radius δ of the estimates
perturbation             ``‖γ‖/‖b‖`` applied (≤ ε)
iterations, residual,    the clean DEQ solve at ``b``
converged
adv_iterations,          the attacked DEQ solve at ``b + γ``
adv_residual,
adv_converged
adv_steps, seed          PGD steps of the attack; the study seed
=======================  ===================================================================

``traces.csv``: ``model, eps, sample, restart, step, loss`` (the attack objective per iterate).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from robustkit import rng
from robustkit.errors import RobustkitError
from robustkit.studies.common import BallConfig, Cell, LoadedModel, batches, check_eps
from robustkit.studies.init_test import model_delta

#: the estimator rows per slice: the four of lipschitz_lower_bound and their maximum.
ESTIMATOR_ROWS: tuple[str, ...] = ("ball", "slow", "top", "power", "max")


@dataclass
class BoundConfig(BallConfig):
    """eps: attack radii ε; adv_steps, adv_restarts: of the PGD attack; delta: ball radius δ of the
    L estimates (``None`` = each model's own, 0.3 for models without one); steps, restarts: of the
    random-start ball ascent; slow_steps: of each seeded ascent (slow mode, top singular vector);
    power_iters, power_tol: cap and tolerance of the Jacobian-norm estimator (Lanczos)."""

    models: list[str] = field(default_factory=lambda: ["mol", "mnmmol"])
    eps: list[float] = field(default_factory=lambda: [0.01, 0.05])
    adv_steps: int = 10
    adv_restarts: int = 1

    def validate(self) -> None:
        super().validate()
        self.eps = check_eps(self.eps, positive="an attack of size 0 measures nothing")
        if min(self.adv_steps, self.adv_restarts) < 1:
            raise RobustkitError("adv_steps and adv_restarts must be >= 1")


def check_models(models: list[LoadedModel]) -> None:
    """Every model must be a DEQ with ``H_θ`` (the bound is about its equation)."""
    for lm in models:
        lm.require("H_map", "the bound study")


def _solve_columns(stats, n: int, prefix: str = "") -> dict[str, list]:
    if stats is None:
        return {f"{prefix}{k}": [np.nan] * n for k in ("iterations", "residual", "converged")}
    return {f"{prefix}iterations": stats.iterations.float().cpu().tolist(),
            f"{prefix}residual": stats.residual.float().cpu().tolist(),
            f"{prefix}converged": stats.converged.cpu().tolist()}


class CleanPoints:
    """Per (model, batch): the clean fixed point, its solve's columns and the L estimates, computed
    once and shared by the ε cells."""

    def __init__(self, config: BoundConfig):
        self.config = config
        self.cache: dict[tuple[str, int], tuple[torch.Tensor, dict[str, list], dict[str, list], float]] = {}

    def get(self, lm: LoadedModel, i: int, b, op, device):
        from robustkit.analysis.lower_bound import lipschitz_lower_bound

        key = (lm.name, i)
        if key not in self.cache:
            c = self.config
            with torch.no_grad():
                x1, stats = lm.solve(b, op)
            delta = model_delta(lm, c.delta)
            generator = rng.generator(c.seed * 100_003 + i)
            lb = lipschitz_lower_bound(lm.H_map(op), x1.detach(), delta, f=lm.fixed_point_map(b, op),
                                       steps=c.steps, restarts=c.restarts, seeded_steps=c.slow_steps,
                                       power_iters=c.power_iters, power_tol=c.power_tol, generator=generator)
            L = {k: v.cpu().tolist() for k, v in lb.by_estimator().items()}
            L["max"] = lb.estimate.cpu().tolist()
            self.cache[key] = (x1.detach(), _solve_columns(stats, b.shape[0]), L, delta)
        return self.cache[key]


def bound_cell(lm: LoadedModel, eps: float, config: BoundConfig, dataset, device, clean: CleanPoints):
    """Rows of one model × ε over the dataset, and the attack's loss traces."""
    from robustkit.analysis.monotone_bound import check_bound, measure_shift
    from robustkit.attacks import BoundReconstructor, KSpacePGD
    from robustkit.batch import operator_of

    lm.set_backward("implicit")
    rows: list[dict[str, Any]] = []
    traces: list[dict[str, Any]] = []
    for i, batch in enumerate(batches(dataset, config.batch_size, device)):
        op, b = operator_of(batch), batch["kspace"]
        samples = batch["index"].cpu().tolist()
        n = len(samples)
        x1, solve_cols, L, delta = clean.get(lm, i, b, op, device)
        atk = KSpacePGD(BoundReconstructor(lm, op), op.mask, eps, steps=config.adv_steps,
                        restarts=config.adv_restarts, seed=config.seed * 100_003 + i)
        b_adv = atk(b, x1).detach()
        with torch.no_grad():
            x2, adv_stats = lm.solve(b_adv, op)
        adv_cols = _solve_columns(adv_stats, n, "adv_")
        shift = measure_shift(lm.H_map(op), x1, x2, lm.drive(b, op), lm.drive(b_adv, op))
        perturbation = (torch.linalg.vector_norm((b_adv - b).flatten(1), dim=1)
                        / torch.linalg.vector_norm(b.flatten(1), dim=1)).cpu().tolist()
        for estimator in ESTIMATOR_ROWS:
            check = check_bound(torch.tensor(L[estimator]), shift.measured.cpu(), shift.slack.cpu())
            for j in range(n):
                rows.append({
                    "study": "bound", "model": lm.name, "sample": samples[j], "eps": eps, "estimator": estimator,
                    "L": L[estimator][j], "m_eff": float(check.m_eff[j]), "measured": float(shift.measured[j]),
                    "bound": float(check.bound[j]), "status": check.status[j], "slack": float(shift.slack[j]),
                    "shift": float(shift.shift[j]), "in_ball": bool(shift.shift[j] <= delta), "delta": delta,
                    "perturbation": perturbation[j],
                    **{k: v[j] for k, v in solve_cols.items()}, **{k: v[j] for k, v in adv_cols.items()},
                    "adv_steps": config.adv_steps, "seed": config.seed,
                })
        loss = atk.last_trace.loss  # (restarts, steps + 1, B)
        traces += [{"model": lm.name, "eps": eps, "sample": samples[j], "restart": r, "step": t, "loss": float(loss[r, t, j])}
                   for r in range(loss.shape[0]) for t in range(loss.shape[1]) for j in range(n)]
    return pd.DataFrame(rows, columns=list(COLUMNS)), pd.DataFrame(traces)


def cells(config: BoundConfig, models: list[LoadedModel], dataset, device, run) -> list[Cell]:
    clean = CleanPoints(config)
    return [Cell(f"{lm.name}|{eps:g}", f"{lm.name} ε={eps:g}",
                 lambda lm=lm, eps=eps: bound_cell(lm, eps, config, dataset, device, clean))
            for lm in models for eps in config.eps]


#: the columns of ``results.csv`` (documented above).
COLUMNS = ("study", "model", "sample", "eps", "estimator", "L", "m_eff", "measured", "bound", "status", "slack",
           "shift", "in_ball", "delta", "perturbation", "iterations", "residual", "converged", "adv_iterations",
           "adv_residual", "adv_converged", "adv_steps", "seed")

SUMMARY_BY = ["model", "eps", "estimator"]
SUMMARY_COLUMNS = ["L", "m_eff", "measured", "bound", "status", "in_ball", "converged", "adv_converged", "residual", "adv_residual"]
