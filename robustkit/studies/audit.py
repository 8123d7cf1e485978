"""Audit (docs/maths.md §6): per slice, how contractive is each model where it is used?

DEQ models, at the fixed point ``x*`` from the SENSE start: ``L[H_θ](x*; δ)`` by the two-point
ascent in ``B(x*, δ‖x*‖)`` (random starts, restarts) and by the slow-mode seeded ascent (docs/maths.md §6),
each with its last relative change; the spectral norm of the Jacobian ``‖J_{H_θ}(x*)‖₂`` by power
iteration with its convergence; pass/fail of ``max(L, L_slow) ≤ 1 − m``. Every model (MoDL too):
the end-to-end amplification ``‖f(b+γ) − f(b)‖/‖γ‖`` found by a small adversarial probe
(``‖γ‖ ≤ probe_eps‖b‖``), the k-space analogue of a local Lipschitz constant.

Schema of ``results.csv`` (one row per model × slice):

========================  ==============================================================
study, model, sample      ``"audit"``; zoo entry; slice index
delta, threshold          δ used; ``T = 1 − m``
L, L_change               two-point ascent estimate (a lower bound) and its last relative change
L_slow, L_slow_change     the slow-mode seeded estimate and its last relative change
jacobian_norm,            ``‖J_{H_θ}(x*)‖₂`` by power iteration; iterations run; whether the
jacobian_iterations,      estimate changed by less than ``power_tol`` at the end
jacobian_converged
passes                    ``max(L, L_slow) ≤ T`` (NaN for MoDL)
amplification             end-to-end ``‖f(b+γ) − f(b)‖/‖γ‖`` from the probe (NaN if skipped)
iterations, residual      the DEQ solve at ``x*`` (NaN for MoDL)
steps, restarts, seed     ascent settings and the study seed
========================  ==============================================================

``traces.csv``: ``model, sample, estimator, step, value`` (``L`` and ``L_slow`` after each
ascent step, ``jacobian_norm`` after each power iteration).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from robustkit.errors import RobustkitError
from robustkit.studies.common import Cell, LoadedModel, StudyConfig, batches
from robustkit.studies.init_test import model_delta


@dataclass
class AuditConfig(StudyConfig):
    """delta: ball radius δ (``None`` = each model's own, 0.3 for models without one); steps,
    restarts: of the two-point ascent (*ref* 20, 2); slow_steps: of the slow-mode ascent;
    power_iters, power_tol: Jacobian power iteration; probe_eps, probe_steps: the end-to-end
    amplification probe (``probe_steps = 0`` skips it)."""

    delta: float | None = None
    steps: int = 20
    restarts: int = 2
    slow_steps: int = 10
    power_iters: int = 30
    power_tol: float = 1e-3
    probe_eps: float = 0.01
    probe_steps: int = 5

    def validate(self) -> None:
        super().validate()
        if self.delta is not None and not self.delta > 0:
            raise RobustkitError(f"delta must be > 0, got {self.delta}")
        if self.steps < 1 or self.restarts < 1 or self.power_iters < 1 or self.slow_steps < 1:
            raise RobustkitError("steps, restarts, slow_steps and power_iters must be >= 1")
        if self.probe_steps < 0 or not self.probe_eps > 0:
            raise RobustkitError("probe_steps must be >= 0 and probe_eps > 0")


def model_threshold(lm: LoadedModel) -> float:
    """``T = 1 − m`` (m of the model's config, else 0.02)."""
    return 1.0 - float(getattr(lm.model.config, "m", 0.02))


def amplification_probe(lm: LoadedModel, b, op, x_clean, eps: float, steps: int, seed: int) -> list[float]:
    from robustkit.attacks import BoundReconstructor, KSpacePGD

    atk = KSpacePGD(BoundReconstructor(lm.model, op), op.mask, eps, steps=steps, seed=seed)
    b_adv = atk(b, x_clean)
    with torch.no_grad():
        x = lm.model(b_adv, op)
    num = torch.linalg.vector_norm((x - x_clean).flatten(1), dim=1)
    den = torch.linalg.vector_norm((b_adv - b).flatten(1), dim=1).clamp_min(1e-30)
    return (num / den).cpu().tolist()


def audit_batch(lm: LoadedModel, batch, config: AuditConfig, generator, seed: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    from robustkit.analysis.checks import lipschitz_at
    from robustkit.analysis.lipschitz import jacobian_spectral_norm
    from robustkit.batch import operator_of

    op, b = operator_of(batch), batch["kspace"]
    samples = batch["index"].cpu().tolist()
    n = len(samples)
    with torch.no_grad():
        x_star = lm.model(b, op)
    stats = lm.model.last_stats if lm.is_deq else None
    cols: dict[str, list] = {k: [np.nan] * n for k in (
        "delta", "threshold", "L", "L_change", "L_slow", "L_slow_change", "jacobian_norm",
        "jacobian_iterations", "jacobian_converged", "passes", "iterations", "residual")}
    traces: list[dict[str, Any]] = []
    if lm.is_deq:
        delta, threshold = model_delta(lm, config.delta), model_threshold(lm)
        with torch.no_grad():
            ball, slow = lipschitz_at(lm.model, x_star, b, op, delta, config.steps, config.restarts, config.slow_steps, generator)
        power = jacobian_spectral_norm(lm.model.H_map(op), x_star, iters=config.power_iters,
                                       tol=config.power_tol, generator=generator)
        L, Ls = ball.estimate.cpu(), slow.estimate.cpu()
        cols.update(
            delta=[delta] * n, threshold=[threshold] * n,
            L=L.tolist(), L_change=ball.last_rel_change.cpu().tolist(),
            L_slow=Ls.tolist(), L_slow_change=slow.last_rel_change.cpu().tolist(),
            jacobian_norm=power.estimate.cpu().tolist(), jacobian_iterations=[power.iterations] * n,
            jacobian_converged=power.converged.cpu().tolist(),
            passes=(torch.maximum(L, Ls) <= threshold).tolist(),
            iterations=stats.iterations.cpu().tolist(), residual=stats.residual.cpu().tolist(),
        )
        for estimator, trace in (("L", ball.trace), ("L_slow", slow.trace), ("jacobian_norm", power.trace)):
            trace = trace.detach().cpu()
            traces += [{"model": lm.name, "sample": samples[j], "estimator": estimator, "step": k, "value": float(trace[k, j])}
                       for k in range(trace.shape[0]) for j in range(n)]
    cols["amplification"] = (amplification_probe(lm, b, op, x_star, config.probe_eps, config.probe_steps, seed)
                             if config.probe_steps > 0 else [np.nan] * n)
    rows = [{"study": "audit", "model": lm.name, "sample": samples[j], **{k: v[j] for k, v in cols.items()},
             "steps": config.steps, "restarts": config.restarts, "seed": config.seed} for j in range(n)]
    return rows, traces


def _model_cell(lm: LoadedModel, config: AuditConfig, dataset, device):
    generator = torch.Generator(device=device).manual_seed(config.seed)
    rows, traces = [], []
    if lm.is_deq:
        lm.model.config.backward = "implicit"
    for i, batch in enumerate(batches(dataset, config.batch_size, device)):
        r, t = audit_batch(lm, batch, config, generator, config.seed * 100_003 + i)
        rows += r
        traces += t
    return pd.DataFrame(rows), (pd.DataFrame(traces) if traces else None)


def cells(config: AuditConfig, models: list[LoadedModel], dataset, device, run) -> list[Cell]:
    return [Cell(lm.name, lm.name, lambda lm=lm: _model_cell(lm, config, dataset, device)) for lm in models]


#: the columns of ``results.csv`` (documented above).
COLUMNS = ("study", "model", "sample", "delta", "threshold", "L", "L_change", "L_slow", "L_slow_change",
           "jacobian_norm", "jacobian_iterations", "jacobian_converged", "passes", "iterations", "residual",
           "amplification", "steps", "restarts", "seed")

SUMMARY_BY = ["model"]
SUMMARY_COLUMNS = ["L", "L_slow", "jacobian_norm", "passes", "amplification"]
