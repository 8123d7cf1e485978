"""Audit (docs/maths.md §6): per slice, how contractive is each model where it is used?

DEQ models, at the fixed point ``x*`` from the SENSE start, LOWER bounds of ``L[H_θ](x*; δ)``
(:func:`robustkit.analysis.lower_bound.lipschitz_lower_bound`, docs/certificates.md): the two-point
ascent in ``B(x*, δ‖x*‖)`` (random starts, restarts), the ascents seeded on the slow mode and on
the top singular vector of ``J_{H_θ}(x*)``, and ``‖J_{H_θ}(x*)‖₂`` by the Lanczos process with its
convergence; pass/fail of the LARGEST of them ``L_max ≤ 1 − m``; next to them the observed
contraction rate of the plain iteration ``x⁺ = H_θ(x) + Aᴴb`` near ``x*``, flagged when it exceeds
``L_max`` (the estimates miss a direction). Every model (MoDL too): the end-to-end amplification
``‖f(b+γ) − f(b)‖/‖γ‖`` found by a small adversarial probe (``‖γ‖ ≤ probe_eps‖b‖``), the k-space
analogue of a local Lipschitz constant.

Schema of ``results.csv`` (one row per model × slice):

========================  ==============================================================
study, model, sample      ``"audit"``; zoo entry; slice index
delta, threshold          δ used; ``T = 1 − m``
L, L_change               two-point ascent estimate (a lower bound) and its last relative change
L_slow, L_slow_change     the slow-mode seeded estimate and its last relative change
L_top                     the pair seeded on the Lanczos Ritz (top singular) vector
jacobian_norm,            ``‖J_{H_θ}(x*)‖₂`` by Lanczos (a lower bound); steps run;
jacobian_iterations,      whether it stopped on its rule (rise < ``power_tol`` over 5 iterations
jacobian_converged        and a small Rayleigh residual; False at the cap)
L_max, L_source           the largest of the four lower bounds and which one gave it
passes                    ``L_max ≤ T`` (NaN for MoDL)
rate, rate_exceeds_L      observed contraction rate of ``x⁺ = H_θ(x) + Aᴴb`` near ``x*`` (geometric
                          mean of ``r_{k+1}/r_k`` over the last 50 of 200 plain iterations from
                          ``x* + 0.1‖x*‖·r``); whether ``rate > L_max + 0.005``
amplification             end-to-end ``‖f(b+γ) − f(b)‖/‖γ‖`` from the probe (NaN if skipped)
iterations, residual,     the DEQ solve at ``x*`` (NaN for MoDL)
converged
probe_iterations,         the DEQ solve at the probe's perturbed k-space (NaN for MoDL or without
probe_residual,           the probe)
probe_converged
steps, restarts, seed     ascent settings and the study seed
========================  ==============================================================

``traces.csv``: ``model, sample, estimator, step, value`` (``L``, ``L_slow`` and ``L_top`` after
each ascent step, ``jacobian_norm`` after each Lanczos step, ``rate_residual`` the residual of
each plain iteration behind ``rate``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from robustkit import rng
from robustkit.errors import RobustkitError
from robustkit.studies.common import BallConfig, Cell, LoadedModel, batches
from robustkit.studies.init_test import model_delta


@dataclass
class AuditConfig(BallConfig):
    """delta: ball radius δ (``None`` = each model's own, 0.3 for models without one); steps,
    restarts: of the two-point ascent (*ref* 20, 2); slow_steps: of each seeded ascent (slow mode,
    top singular vector); power_iters, power_tol: cap and tolerance of the Jacobian-norm estimator (Lanczos); probe_eps,
    probe_steps: the end-to-end amplification probe (``probe_steps = 0`` skips it)."""

    probe_eps: float = 0.01
    probe_steps: int = 5

    def validate(self) -> None:
        super().validate()
        if self.probe_steps < 0 or not self.probe_eps > 0:
            raise RobustkitError("probe_steps must be >= 0 and probe_eps > 0")


def model_threshold(lm: LoadedModel) -> float:
    """``T = 1 − m`` (the model's m, else 0.02)."""
    return 1.0 - (lm.m if lm.m is not None else 0.02)


def amplification_probe(lm: LoadedModel, b, op, x_clean, eps: float, steps: int, seed: int) -> dict[str, list]:
    """``amplification`` per slice and the perturbed solve's ``probe_iterations``, ``probe_residual``,
    ``probe_converged`` (NaN for unrolled models)."""
    from robustkit.attacks import BoundReconstructor, KSpacePGD
    from robustkit.models.reuse import warm_start

    start = warm_start(lm, x_clean)  # perturbed solves start at the clean fixed point
    atk = KSpacePGD(BoundReconstructor(lm, op, start), op.mask, eps, steps=steps, seed=seed)
    b_adv = atk(b, x_clean)
    with torch.no_grad():
        x = lm(b_adv, op, start)
    num = torch.linalg.vector_norm((x - x_clean).flatten(1), dim=1)
    den = torch.linalg.vector_norm((b_adv - b).flatten(1), dim=1).clamp_min(1e-30)
    n = len(num)
    stats = lm.last_stats if lm.is_deq else None
    return {
        "amplification": (num / den).cpu().tolist(),
        "probe_iterations": stats.iterations.cpu().tolist() if stats is not None else [np.nan] * n,
        "probe_residual": stats.residual.cpu().tolist() if stats is not None else [np.nan] * n,
        "probe_converged": stats.converged.cpu().tolist() if stats is not None else [np.nan] * n,
    }


def audit_batch(lm: LoadedModel, batch, config: AuditConfig, generator, seed: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    from robustkit.analysis.checks import certificate_at
    from robustkit.batch import operator_of
    from robustkit.models.reuse import clean_solve

    op, b = operator_of(batch), batch["kspace"]
    samples = batch["index"].cpu().tolist()
    n = len(samples)
    x_star, stats = clean_solve(lm, b, op)
    cols: dict[str, list] = {k: [np.nan] * n for k in (
        "delta", "threshold", "L", "L_change", "L_slow", "L_slow_change", "L_top", "jacobian_norm",
        "jacobian_iterations", "jacobian_converged", "L_max", "L_source", "passes", "rate", "rate_exceeds_L",
        "iterations", "residual", "converged")}
    traces: list[dict[str, Any]] = []
    if lm.is_deq:  # a fixed-point model without H_θ gets its solve's columns only
        cols.update(iterations=stats.iterations.cpu().tolist(), residual=stats.residual.cpu().tolist(),
                    converged=stats.converged.cpu().tolist())
    if lm.is_deq and lm.has_H:
        delta, threshold = model_delta(lm, config.delta), model_threshold(lm)
        bound, rate, disagree = certificate_at(lm, x_star, b, op, delta, steps=config.steps,
                                               restarts=config.restarts, seeded_steps=config.slow_steps,
                                               power_iters=config.power_iters, power_tol=config.power_tol,
                                               generator=generator)
        ball, slow, power = bound.ball, bound.slow, bound.power
        cols.update(
            delta=[delta] * n, threshold=[threshold] * n,
            L=ball.estimate.cpu().tolist(), L_change=ball.last_rel_change.cpu().tolist(),
            L_slow=slow.estimate.cpu().tolist(), L_slow_change=slow.last_rel_change.cpu().tolist(),
            L_top=bound.top.estimate.cpu().tolist(),
            jacobian_norm=power.estimate.cpu().tolist(), jacobian_iterations=[power.iterations] * n,
            jacobian_converged=power.converged.cpu().tolist(),
            L_max=bound.estimate.cpu().tolist(), L_source=bound.source,
            passes=(bound.estimate.cpu() <= threshold).tolist(),
            rate=rate.rate.cpu().tolist(), rate_exceeds_L=disagree.cpu().tolist(),
        )
        for estimator, trace in (("L", ball.trace), ("L_slow", slow.trace), ("L_top", bound.top.trace),
                                 ("jacobian_norm", power.trace), ("rate_residual", rate.trace)):
            trace = trace.detach().cpu()
            traces += [{"model": lm.name, "sample": samples[j], "estimator": estimator, "step": k, "value": float(trace[k, j])}
                       for k in range(trace.shape[0]) for j in range(n)]
    if config.probe_steps > 0:
        cols.update(amplification_probe(lm, b, op, x_star, config.probe_eps, config.probe_steps, seed))
    else:
        cols.update({k: [np.nan] * n for k in ("amplification", "probe_iterations", "probe_residual", "probe_converged")})
    rows = [{"study": "audit", "model": lm.name, "sample": samples[j], **{k: v[j] for k, v in cols.items()},
             "steps": config.steps, "restarts": config.restarts, "seed": config.seed} for j in range(n)]
    return rows, traces


def _model_cell(lm: LoadedModel, config: AuditConfig, dataset, device):
    generator = rng.generator(config.seed)
    rows, traces = [], []
    lm.set_backward("implicit")
    for i, batch in enumerate(batches(dataset, config.batch_size, device)):
        r, t = audit_batch(lm, batch, config, generator, config.seed * 100_003 + i)
        rows += r
        traces += t
    return pd.DataFrame(rows), (pd.DataFrame(traces) if traces else None)


def cells(config: AuditConfig, models: list[LoadedModel], dataset, device, run) -> list[Cell]:
    return [Cell(lm.name, lm.name, lambda lm=lm: _model_cell(lm, config, dataset, device)) for lm in models]


#: the columns of ``results.csv`` (documented above).
COLUMNS = ("study", "model", "sample", "delta", "threshold", "L", "L_change", "L_slow", "L_slow_change", "L_top",
           "jacobian_norm", "jacobian_iterations", "jacobian_converged", "L_max", "L_source", "passes", "rate",
           "rate_exceeds_L", "iterations", "residual", "converged", "amplification", "probe_iterations",
           "probe_residual", "probe_converged", "steps", "restarts", "seed")

SUMMARY_BY = ["model"]
SUMMARY_COLUMNS = ["L", "L_slow", "L_top", "jacobian_norm", "jacobian_converged", "L_max", "passes", "rate",
                   "rate_exceeds_L", "converged", "probe_converged", "amplification"]
