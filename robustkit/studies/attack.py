"""Attack study (docs/maths.md §7, §14): models × ε grid × {adversarial, gaussian, spikes, motion, coil-map}
on the measured k-space.

Schema of ``results.csv`` (one row per model × kind × ε × slice):

======================  =====================================================================
study, model            ``"attack"``; the zoo entry (e.g. ``mnmmol-4x``)
sample                  slice index in the split
kind, eps               ``clean`` (ε = 0), ``adversarial`` or ``gaussian``; relative radius ε
psnr, ssim, nmse        of the (attacked) reconstruction against the ground truth
psnr_clean, psnr_drop   PSNR of the clean reconstruction; ``psnr_clean − psnr`` (dB, > 0 = damage)
amplification           ``‖f(b+γ) − f(b)‖ / ‖γ‖`` (image norm per k-space norm)
perturbation            ``‖γ‖ / ‖b‖`` actually applied (≤ ε)
attack_loss             the attack objective ``‖f(b+γ) − x_ref‖² / ‖x_ref‖²`` (adversarial only)
iterations, residual,   DEQ solve at the (clean or perturbed) k-space (NaN for MoDL); for gaussian
converged               the mean iterations, the max residual and whether all draws converged
backward_residual,      adversarial rows of DEQ models with the implicit backward: the backward
backward_converged,     solve behind the attack's gradients — its largest final residual over the
backward_iterations     steps, the fraction of steps whose backward converged, its mean iterations
                        (NaN otherwise: clean, gaussian, MoDL, Jacobian-free or phantom gradients)
steps, restarts, ...    the attack settings (steps, restarts, step_size, optimizer, target, roi,
                        draws) and ``seed``
candidates              realistic kinds (``spikes``, ``motion``, ``coil-map``, docs/maths.md §14):
                        perturbations searched per slice; the row is the most damaging one, by
                        ``attack_loss`` (NaN for the other kinds)
spikes                  ``spikes``: the number of corrupted samples (NaN otherwise)
angle, shift_px,        ``motion``: the kept rotation (degrees), the translation along the
lines_fraction          phase-encode axis (pixels), the fraction of measured lines moved (NaN otherwise)
map_error               ``coil-map``: ``‖S̃ − S‖ / ‖S‖`` of the maps the model used (NaN otherwise)
======================  =====================================================================

For realistic kinds ``perturbation`` is ``‖γ‖ / ‖b‖`` of the k-space change actually applied
(``coil-map``: the data error ``M F((S − S̃) x)`` the wrong maps amount to), ``draws`` is 1 and
``attack_loss`` is the objective of the adversarial attack evaluated at the kept candidate.

``traces.csv``: ``model, kind, eps, sample, restart, step, loss`` (the adversarial objective at
every iterate). ``examples/<model>__<kind>__eps<ε>.npz``: ``sample``, ``target``, ``clean``,
``attacked`` (complex ``(n, H, W)``), ``perturbation`` (root-sum-of-squares ``|γ|`` over coils,
``(n, H, W)``) for the first ``examples`` slices.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from robustkit.choices import ATTACK_KINDS, PERTURBATION_FAMILIES
from robustkit.errors import RobustkitError, warn
from robustkit.studies.common import Cell, LoadedModel, StudyConfig, batches, check_eps

#: its measure (PSNR/SSIM against the target) needs slices with a target
SCORES_TARGET = True
KINDS = ATTACK_KINDS
DEFAULT_KINDS = ("adversarial", "gaussian")
#: family-specific columns of the realistic kinds (NaN in other rows).
FAMILY_COLUMNS = ("candidates", "spikes", "angle", "shift_px", "lines_fraction", "map_error")
TARGETS = ("clean", "ground_truth")
ROIS = ("none", "support")


@dataclass
class AttackConfig(StudyConfig):
    """eps: relative radii ε; kinds: ``adversarial``, ``gaussian`` and the realistic ``spikes``,
    ``motion``, ``coil-map`` (ε is each family's size, docs/maths.md §14); steps, restarts,
    step_size (relative to ε‖b‖, ``None`` = 2.5/steps), optimizer (``pgd`` or ``adam``): of the
    adversarial attack; target: what the attack pushes away from (``clean`` reconstruction or
    ``ground_truth``); roi: ``none`` or ``support`` (pixels where the ground truth exceeds 5 % of
    its maximum); draws: Gaussian draws averaged per slice; examples: slices saved as images;
    deq_backward: gradient of DEQ models during the attack (``implicit`` is the true gradient);
    candidates: realistic perturbations searched per slice, the most damaging kept (1 = no search);
    spikes: corrupted k-space samples of the ``spikes`` kind; motion_lines: fraction of the measured
    phase-encode lines acquired after the ``motion``.
    """

    eps: list[float] = field(default_factory=lambda: [0.01, 0.02, 0.05])
    kinds: list[str] = field(default_factory=lambda: list(DEFAULT_KINDS))
    steps: int = 10
    restarts: int = 1
    step_size: float | None = None
    optimizer: str = "pgd"
    target: str = "clean"
    roi: str = "none"
    draws: int = 4
    examples: int = 1
    deq_backward: str = "implicit"
    candidates: int = 5
    spikes: int = 4
    motion_lines: float = 0.5

    def validate(self) -> None:
        super().validate()
        self.eps = check_eps(self.eps, positive="ε = 0 is the clean solve, the 'clean' row every attack run reports")
        relative = [k for k in self.kinds if k in ("adversarial", "gaussian", "spikes")]
        if relative and max(self.eps) > 1:
            warn(f"ε = {max(self.eps):g} makes the {relative[0]} perturbation {100 * max(self.eps):g} % of ‖b‖ "
                 "(ε is relative: 0.05 is 5 %); the solves may not converge at that size")
        for name, value, allowed in (("kind", self.kinds, KINDS), ("target", [self.target], TARGETS),
                                     ("roi", [self.roi], ROIS), ("optimizer", [self.optimizer], ("pgd", "adam")),
                                     ("deq_backward", [self.deq_backward], ("implicit", "jfb", "phantom"))):
            for v in value:
                if v not in allowed:
                    raise RobustkitError(f"unknown {name} {v!r}; choose from {', '.join(allowed)}")
        if not self.kinds:
            raise RobustkitError(f"no attack kinds given; choose from {', '.join(KINDS)}")
        if self.steps < 1 or self.restarts < 1 or self.draws < 1:
            raise RobustkitError("steps, restarts and draws must be >= 1")
        if self.step_size is not None and not self.step_size > 0:
            raise RobustkitError(f"step_size must be > 0, got {self.step_size}")
        if self.candidates < 1 or self.spikes < 1:
            raise RobustkitError(f"candidates and spikes must be >= 1, got {self.candidates} and {self.spikes}")
        if not 0 < self.motion_lines <= 1:
            raise RobustkitError(f"motion_lines is the fraction of lines moved, in (0, 1]; got {self.motion_lines}")
        if "coil-map" in self.kinds and max(self.eps) > 2:
            raise RobustkitError(f"coil-map needs ε ≤ 2 (‖S̃ − S‖ = ε‖S‖ ≤ 2‖S‖), got ε = {max(self.eps)}; lower --eps")


def _norm(x: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(x.flatten(1), dim=1)


class CleanCache:
    """Clean reconstructions ``f(b)`` per (model, batch), computed once and shared by the cells
    (and, through :func:`robustkit.models.reuse.clean_solve`, by the other studies of the process)."""

    def __init__(self):
        self.cache: dict[tuple[str, int], tuple[torch.Tensor, object]] = {}

    def get(self, lm: LoadedModel, i: int, batch, op) -> torch.Tensor:
        """``f(b)`` ``(B, H, W)``; ``lm.last_stats`` is left at the clean solve's statistics."""
        from robustkit.models.reuse import clean_solve

        key = (lm.name, i)
        if key not in self.cache:
            self.cache[key] = clean_solve(lm, batch["kspace"], op)
        x, lm.last_stats = self.cache[key]
        return x


def _deq_columns(lm: LoadedModel, n: int) -> dict[str, list]:
    stats = lm.last_stats if lm.is_deq else None
    if stats is None:
        return {"iterations": [np.nan] * n, "residual": [np.nan] * n, "converged": [np.nan] * n}
    return {
        "iterations": stats.iterations.float().cpu().tolist(),
        "residual": stats.residual.float().cpu().tolist(),
        "converged": stats.converged.cpu().tolist(),
    }


def _backward_columns(trace, n: int) -> dict[str, list]:
    """The implicit backward's convergence behind an adversarial attack's gradients (NaN if none ran)."""
    if trace is None or trace.backward_residual is None:
        return {"backward_residual": [np.nan] * n, "backward_converged": [np.nan] * n, "backward_iterations": [np.nan] * n}
    return {
        "backward_residual": trace.backward_residual.float().tolist(),
        "backward_converged": trace.backward_converged.float().tolist(),
        "backward_iterations": trace.backward_iterations.float().tolist(),
    }


def _roi(config: AttackConfig, target: torch.Tensor) -> torch.Tensor | None:
    if config.roi == "none":
        return None
    mag = target.abs()
    return (mag > 0.05 * mag.flatten(1).amax(1).reshape(-1, 1, 1)).to(mag.dtype)


def _realistic(lm: LoadedModel, kind: str, eps: float, config: AttackConfig, batch, op, x_clean: torch.Tensor, seed: int):
    """The most damaging of ``config.candidates`` perturbations of family ``kind`` per slice (docs/maths.md §14):
    ``(x_attacked, γ, metrics, amplification, columns)``. Damage is the adversarial objective
    ``‖R ⊙ (f(b̃) − x_ref)‖² / ‖R ⊙ x_ref‖²`` with the attack's ``target`` and ``roi``."""
    from robustkit.attacks import relative_error
    from robustkit.attacks.realistic import candidates, pick, worst_case
    from robustkit.evaluate import score
    from robustkit.physics.sense import SenseOperator

    b, target = batch["kspace"], batch["target"]
    reference = x_clean if config.target == "clean" else target
    roi = _roi(config, target)
    generator = torch.Generator().manual_seed(seed)
    found = list(candidates(kind, b, op.maps, op.mask, target, eps, config.candidates, generator,
                            n_spikes=config.spikes, lines_fraction=config.motion_lines))
    images, stats = [], []

    def damage(c) -> torch.Tensor:
        with torch.no_grad():
            x = lm(c.kspace, op if c.maps is op.maps else SenseOperator(c.maps, op.mask))
        images.append(x)
        stats.append({k: torch.tensor(v, dtype=torch.float64) for k, v in _deq_columns(lm, b.shape[0]).items()})
        return relative_error(x, reference, roi)

    index, losses = worst_case(found, damage)
    x_attacked = pick(images, index)
    gamma = pick([c.gamma for c in found], index)
    n = b.shape[0]
    cols = {"draws": [1] * n, "attack_loss": losses.max(0).values.tolist(), **_backward_columns(None, n),
            **{k: pick([s[k] for s in stats], index).tolist() for k in ("iterations", "residual", "converged")},
            "candidates": [config.candidates] * n,
            **{k: pick([c.params[k] for c in found], index).tolist() for k in found[0].params}}
    if stats and not np.isnan(cols["converged"]).all():
        cols["converged"] = [bool(v) for v in cols["converged"]]
    metrics = {k: v.cpu() for k, v in score(x_attacked, target).items()}
    amplification = (_norm(x_attacked - x_clean) / _norm(gamma).clamp_min(1e-30)).cpu().tolist()
    return x_attacked, gamma, metrics, amplification, cols


def attack_cell(lm: LoadedModel, kind: str, eps: float, config: AttackConfig, dataset, device, clean: CleanCache, examples_dir):
    """Rows of one model × kind × ε over the dataset (``kind="clean"``: the unperturbed baseline),
    the adversarial loss traces, and the example images written to ``examples_dir``."""
    from robustkit.attacks import BoundReconstructor, KSpaceGaussian, KSpacePGD
    from robustkit.batch import operator_of
    from robustkit.evaluate import score
    from robustkit.models.reuse import SPEEDUPS, warm_start

    frames, traces, saved = [], [], {"sample": [], "target": [], "clean": [], "attacked": [], "perturbation": []}
    for i, batch in enumerate(batches(dataset, config.batch_size, device)):
        op, b, target = operator_of(batch), batch["kspace"], batch["target"]
        x_clean = clean.get(lm, i, batch, op)
        clean_psnr = score(x_clean, target)["psnr"]
        n = b.shape[0]
        samples = batch["index"].cpu().tolist()
        start = warm_start(lm, x_clean)  # perturbed solves start at the clean fixed point
        bound = BoundReconstructor(lm, op, start)
        seed = config.seed * 100_003 + i
        if kind == "clean":
            x_attacked, gamma_used = x_clean, torch.zeros_like(b)
            if not SPEEDUPS.cache:  # the old path solved the clean k-space again for its statistics
                with torch.no_grad():
                    lm(b, op)
            cols = {"draws": [0] * n, "attack_loss": [np.nan] * n, **_deq_columns(lm, n), **_backward_columns(None, n)}
            metrics = {k: v.cpu() for k, v in score(x_clean, target).items()}
            amplification = [np.nan] * n
        elif kind == "adversarial":
            atk = KSpacePGD(bound, op.mask, eps, steps=config.steps, step_size=config.step_size, restarts=config.restarts,
                            optimizer=config.optimizer, roi=_roi(config, target), seed=seed)
            reference = x_clean if config.target == "clean" else target
            b_adv = atk(b, reference)
            gamma_used = b_adv - b
            with torch.no_grad():
                x_attacked = lm(b_adv, op, start)
            cols = {"draws": [1] * n, "attack_loss": atk.last_trace.best_loss.tolist(), **_deq_columns(lm, n),
                    **_backward_columns(atk.last_trace, n)}
            metrics = {k: v.cpu() for k, v in score(x_attacked, target).items()}
            amplification = (_norm(x_attacked - x_clean) / _norm(gamma_used).clamp_min(1e-30)).cpu().tolist()
            loss = atk.last_trace.loss  # (restarts, steps + 1, B)
            for r in range(loss.shape[0]):
                for t in range(loss.shape[1]):
                    for j in range(n):
                        traces.append({"model": lm.name, "kind": kind, "eps": eps, "sample": samples[j],
                                       "restart": r, "step": t, "loss": float(loss[r, t, j])})
        elif kind in PERTURBATION_FAMILIES:
            x_attacked, gamma_used, metrics, amplification, cols = _realistic(lm, kind, eps, config, batch, op,
                                                                              x_clean, seed)
        else:
            atk = KSpaceGaussian(bound, op.mask, eps, seed=seed)
            per_draw, per_draw_deq = [], []
            for _ in range(config.draws):
                b_noisy = atk(b)
                with torch.no_grad():
                    x_noisy = lm(b_noisy, op, start)
                draw = {k: v.cpu() for k, v in score(x_noisy, target).items()}
                draw["amplification"] = (_norm(x_noisy - x_clean) / _norm(atk.last_gamma).clamp_min(1e-30)).cpu()
                per_draw.append(draw)
                per_draw_deq.append(_deq_columns(lm, n))
            x_attacked, gamma_used = x_noisy, atk.last_gamma
            stacked = {k: torch.stack([d[k] for d in per_draw]) for k in per_draw[0]}  # (draws, B)
            metrics = {k: stacked[k].mean(0) for k in ("psnr", "ssim", "nmse")}
            amplification = stacked["amplification"].mean(0).tolist()
            deq = {k: np.array([d[k] for d in per_draw_deq], dtype=float) for k in ("iterations", "residual", "converged")}
            cols = {  # NaN for MoDL; else mean iterations, worst residual, all draws converged
                "draws": [config.draws] * n,
                "attack_loss": [np.nan] * n,
                "iterations": deq["iterations"].mean(0).tolist(),
                "residual": deq["residual"].max(0).tolist(),
                "converged": [np.nan if np.isnan(c).any() else bool(c.all()) for c in deq["converged"].T],
                **_backward_columns(None, n),
            }
        frame = pd.DataFrame({
            "study": "attack", "model": lm.name, "sample": samples, "kind": kind, "eps": eps,
            "psnr": metrics["psnr"].tolist(), "ssim": metrics["ssim"].tolist(), "nmse": metrics["nmse"].tolist(),
            "psnr_clean": clean_psnr.cpu().tolist(),
            "amplification": amplification,
            "perturbation": (_norm(gamma_used) / _norm(b)).cpu().tolist(),
            **cols,
        })
        frame["psnr_drop"] = frame["psnr_clean"] - frame["psnr"]
        frames.append(frame)
        if kind != "clean" and len(saved["sample"]) < config.examples:
            take = min(n, config.examples - len(saved["sample"]))
            saved["sample"] += samples[:take]
            saved["target"].append(target[:take].cpu().numpy())
            saved["clean"].append(x_clean[:take].cpu().numpy())
            saved["attacked"].append(x_attacked[:take].detach().cpu().numpy())
            saved["perturbation"].append(gamma_used[:take].abs().pow(2).sum(1).sqrt().detach().cpu().numpy())
    rows = pd.concat(frames, ignore_index=True)
    settings = {"steps": config.steps, "restarts": config.restarts,
                "step_size": config.step_size if config.step_size is not None else 2.5 / config.steps,
                "optimizer": config.optimizer, "target": config.target, "roi": config.roi, "seed": config.seed}
    for k, v in settings.items():
        rows[k] = v
    rows = rows.reindex(columns=[c for c in rows if c not in FAMILY_COLUMNS] + list(FAMILY_COLUMNS))  # NaN if absent
    if saved["sample"]:
        from robustkit.io import atomic_path

        with atomic_path(examples_dir / f"{lm.name}__{kind}__eps{eps:g}.npz") as tmp, open(tmp, "wb") as fh:
            np.savez_compressed(fh, sample=np.asarray(saved["sample"]),
                                **{k: np.concatenate(v) for k, v in saved.items() if k != "sample"})
    return rows, (pd.DataFrame(traces) if traces else None)


def cells(config: AttackConfig, models: list[LoadedModel], dataset, device, run) -> list[Cell]:
    """Per model a ``clean`` cell, then one cell per kind × ε."""
    clean = CleanCache()
    out = []
    for lm in models:
        lm.set_backward(config.deq_backward)
        out.append(Cell(f"{lm.name}|clean|0", f"{lm.name} clean",
                        lambda lm=lm: attack_cell(lm, "clean", 0.0, config, dataset, device, clean, run.examples_dir())))
        for kind in config.kinds:
            for eps in config.eps:
                out.append(Cell(f"{lm.name}|{kind}|{eps:g}", f"{lm.name} {kind} ε={eps:g}",
                                lambda lm=lm, kind=kind, eps=eps: attack_cell(lm, kind, eps, config, dataset, device, clean, run.examples_dir())))
    return out


#: the columns of ``results.csv`` (documented above).
COLUMNS = ("study", "model", "sample", "kind", "eps", "psnr", "ssim", "nmse", "psnr_clean", "amplification",
           "perturbation", "draws", "attack_loss", "iterations", "residual", "converged", "backward_residual",
           "backward_converged", "backward_iterations", "psnr_drop", "steps",
           "restarts", "step_size", "optimizer", "target", "roi", "seed", *FAMILY_COLUMNS)

SUMMARY_BY = ["model", "kind", "eps"]
SUMMARY_COLUMNS = ["psnr", "ssim", "psnr_drop", "amplification", "iterations", "converged", "backward_residual"]
