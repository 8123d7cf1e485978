"""Small features and false negatives (docs/maths.md §11; FNAF, Cheng et al. MIDL 2020).

A small feature ``x_f`` (disc, Gaussian blob or cross; size in pixels; amplitude ``contrast`` ×
the local intensity; :mod:`robustkit.data.features`) is added to the ground truth ``x`` inside
the anatomy and measured through the same coils and mask: ``b_f = b + A x_f`` with ``A = M F S``
of the slice. Each model reconstructs ``b`` and ``b_f``; the difference ``d = f(b_f) − f(b)`` is what
the model made of the feature, and a matched filter decides whether it is there.

``random`` rows: ``positions`` random centres per feature × size × contrast (the same for every
model). ``adversarial`` rows (FNAF): per size × contrast, the candidate with the largest
``feature_loss`` among the random candidates of that size and contrast and ``budget`` further
random candidates (kind and centre drawn at random): a random search, so it is never better for
the model than the random rows it contains.

Schema of ``results.csv`` (one row per model × slice × feature × size × contrast × position for
``random``, per model × slice × size × contrast for ``adversarial``):

======================  =====================================================================
study, model            ``"features"``; the model
sample                  slice index
feature, size,          ``disc``, ``gaussian`` or ``cross``; size in pixels; amplitude relative to
contrast                the local intensity
search                  ``random`` or ``adversarial`` (the worst candidate of the search)
row, col                the feature's centre pixel
error_feature           ``‖R(f(b_f) − (x + x_f))‖ / ‖R(x + x_f)‖`` in the feature region ``R``
contrast_recovered      ``â / a``: least-squares amplitude of the template in ``d`` over the inserted one
detected,               the matched filter: ``â/a ≥ threshold`` and ``ρ ≥ threshold``; false_negative:
false_negative          not detected (every feature is there)
iterations, residual,   DEQ solves (NaN for unrolled models): iterations of the solve with the
converged               feature, the larger residual of the two solves, both converged
amplitude               the inserted amplitude ``a = max|x_f|``
feature_loss            ``‖R(d − x_f)‖ / ‖R x_f‖``: the part of the feature lost (the search objective)
correlation             ``ρ``: normalised correlation of ``d`` with the template in ``R``
candidates              candidates compared (1 for ``random`` rows)
threshold, budget,      the detector threshold, the search budget, the study seed
seed
======================  =====================================================================
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from robustkit.data.features import KINDS, Candidate, detect, draw_candidates, insert, region
from robustkit.errors import RobustkitError
from robustkit.studies.common import Cell, LoadedModel, StudyConfig, batches

#: its measure (contrast recovered in the reconstruction of an inserted feature) needs the target
SCORES_TARGET = True

SEARCHES = ("random", "adversarial")


@dataclass
class FeaturesConfig(StudyConfig):
    """features: kinds inserted (``disc``, ``gaussian``, ``cross``); sizes: in pixels; contrasts:
    amplitude relative to the local intensity (> 0); positions: random centres per feature × size ×
    contrast; searches: ``random`` and/or ``adversarial``; budget: further random candidates of the
    adversarial search per size × contrast; threshold: of the matched-filter detector (both
    ``â/a`` and ``ρ`` must reach it); support_level: the anatomy is ``|x| > support_level · max|x|``."""

    features: list[str] = field(default_factory=lambda: list(KINDS))
    sizes: list[int] = field(default_factory=lambda: [2, 4, 8])
    contrasts: list[float] = field(default_factory=lambda: [0.2, 0.5])
    positions: int = 2
    searches: list[str] = field(default_factory=lambda: list(SEARCHES))
    budget: int = 8
    threshold: float = 0.5
    support_level: float = 0.05

    def validate(self) -> None:
        super().validate()
        for name, values, allowed in (("feature", self.features, KINDS), ("search", self.searches, SEARCHES)):
            if not values:
                raise RobustkitError(f"no {name} given; choose from {', '.join(allowed)}")
            for v in values:
                if v not in allowed:
                    raise RobustkitError(f"unknown {name} {v!r}; choose from {', '.join(allowed)}")
        if not self.sizes or any(s < 1 for s in self.sizes):
            raise RobustkitError(f"sizes must be whole pixels >= 1, got {self.sizes}; e.g. sizes = [2, 4, 8]")
        if not self.contrasts or any(not (np.isfinite(c) and c > 0) for c in self.contrasts):
            raise RobustkitError(f"contrasts must be finite numbers > 0, got {self.contrasts}; e.g. contrasts = [0.2, 0.5]")
        if self.positions < 1 or self.budget < 0:
            raise RobustkitError(f"positions must be >= 1 and budget >= 0, got {self.positions} and {self.budget}")
        if not 0 < self.threshold <= 1:
            raise RobustkitError(f"threshold must be in (0, 1], got {self.threshold}")
        if not 0 <= self.support_level < 1:
            raise RobustkitError(f"support_level must be in [0, 1), got {self.support_level}")


def check_data(config: FeaturesConfig, dataset) -> None:
    """Refuse, before anything is written, a feature whose profile does not fit in the image."""
    from robustkit.data.features import kernel

    h, w = (int(n) for n in dataset[0]["target"].shape[-2:])
    for size in config.sizes:
        for kind in config.features:
            k = kernel(kind, size).shape[-1]
            if k > min(h, w):
                fits = max((s for s in range(1, min(h, w)) if kernel(kind, s).shape[-1] <= min(h, w)), default=0)
                raise RobustkitError(f"a {kind} of size {size} px spans {k} px, more than the {h}×{w} image; "
                                     f"give sizes up to {fits}, e.g. --size 4")


def candidates_of(x: torch.Tensor, sample: int, config: FeaturesConfig) -> dict[tuple[int, float], tuple[list, list]]:
    """Per ``(size, contrast)``: ``(random, extra)`` candidates of slice ``sample`` (ground truth ``x``,
    ``(H, W)``): ``positions`` per feature kind, and the adversarial search's ``budget`` extra ones.
    Drawn from ``(seed, sample, size, contrast)`` alone, so every model sees the same ones."""
    out = {}
    for i, size in enumerate(config.sizes):
        for j, contrast in enumerate(config.contrasts):
            rng = np.random.default_rng([config.seed, sample, i, j])
            random = [c for kind in config.features
                      for c in draw_candidates(x, [kind], size, contrast, config.positions, rng, config.support_level)]
            extra = draw_candidates(x, config.features, size, contrast, config.budget, rng, config.support_level) \
                if "adversarial" in config.searches else []
            out[(size, contrast)] = (random, extra)
    return out


def _stats(lm: LoadedModel, n: int) -> dict[str, list]:
    stats = lm.last_stats if lm.is_deq else None
    if stats is None:
        return {"iterations": [np.nan] * n, "residual": [np.nan] * n, "converged": [np.nan] * n}
    return {"iterations": stats.iterations.float().cpu().tolist(), "residual": stats.residual.float().cpu().tolist(),
            "converged": [bool(c) for c in stats.converged.cpu().tolist()]}


def measure(lm: LoadedModel, x: torch.Tensor, b: torch.Tensor, maps: torch.Tensor, mask: torch.Tensor,
            y0: torch.Tensor, stats0: dict[str, Any], cands: list[Candidate], config: FeaturesConfig,
            chunk: int) -> list[dict[str, Any]]:
    """Measurements of each candidate on one slice: ground truth ``x`` ``(H, W)``, k-space ``b``
    ``(C, H, W)``, maps ``(C, H, W)``, mask ``(1, H, W)``, the model's reconstruction ``y0`` of ``b``
    and its solve statistics ``stats0`` (one slice). Solved ``chunk`` candidates at a time."""
    from robustkit.physics.sense import SenseOperator

    out = []
    for start in range(0, len(cands), chunk):
        part = cands[start:start + chunk]
        feats = [insert(x, c) for c in part]
        x_f = torch.stack([f for f, _, _ in feats])
        n = len(part)
        op = SenseOperator(maps.expand(n, *maps.shape), mask.expand(n, *mask.shape))
        with torch.no_grad():
            y1 = lm(b.expand(n, *b.shape) + op(x_f), op)
        cols = _stats(lm, n)
        for k, (c, (xf, t, a)) in enumerate(zip(part, feats)):
            r = region(tuple(x.shape), c.row, c.col, c.size).to(x.device)
            d = y1[k] - y0
            det = detect(d, t, a, r, config.threshold)
            truth = x + xf
            conv = cols["converged"][k]
            out.append({
                "feature": c.kind, "size": c.size, "contrast": c.contrast, "row": c.row, "col": c.col,
                "error_feature": float(torch.linalg.vector_norm((y1[k] - truth) * r) / torch.linalg.vector_norm(truth * r)),
                "contrast_recovered": det.contrast_recovered, "detected": det.detected,
                "false_negative": not det.detected,
                "iterations": cols["iterations"][k],
                "residual": max(cols["residual"][k], stats0["residual"]) if lm.is_deq else np.nan,
                "converged": bool(conv and stats0["converged"]) if lm.is_deq else np.nan,
                "amplitude": a,
                "feature_loss": float(torch.linalg.vector_norm((d - xf) * r) / torch.linalg.vector_norm(xf * r)),
                "correlation": det.correlation,
            })
    return out


def features_cell(lm: LoadedModel, config: FeaturesConfig, dataset, device) -> tuple[pd.DataFrame, None]:
    """Rows of one model over the dataset: its random and adversarial candidates, slice by slice."""
    from robustkit.batch import operator_of

    rows = []
    for batch in batches(dataset, config.batch_size, device):
        op, b, target = operator_of(batch), batch["kspace"], batch["target"]
        with torch.no_grad():
            y0 = lm(b, op)
        stats0 = _stats(lm, b.shape[0])
        for j, sample in enumerate(batch["index"].cpu().tolist()):
            own = {k: v[j] for k, v in stats0.items()}
            for (size, contrast), (random, extra) in candidates_of(target[j], sample, config).items():
                found = measure(lm, target[j], b[j], batch["maps"][j], batch["mask"][j], y0[j], own,
                                random + extra, config, config.batch_size)
                base = {"study": "features", "model": lm.name, "sample": sample}
                if "random" in config.searches:
                    rows += [{**base, "search": "random", **m, "candidates": 1} for m in found[:len(random)]]
                if "adversarial" in config.searches:
                    worst = max(found, key=lambda m: m["feature_loss"])
                    rows.append({**base, "search": "adversarial", **worst, "candidates": len(found)})
    frame = pd.DataFrame(rows)
    frame["threshold"], frame["budget"], frame["seed"] = config.threshold, config.budget, config.seed
    return frame[list(COLUMNS)], None


def cells(config: FeaturesConfig, models: list[LoadedModel], dataset, device, run) -> list[Cell]:
    """One cell per model."""
    return [Cell(lm.name, lm.name, lambda lm=lm: features_cell(lm, config, dataset, device)) for lm in models]


#: the columns of ``results.csv`` (documented above).
COLUMNS = ("study", "model", "sample", "feature", "size", "contrast", "search", "row", "col", "error_feature",
           "contrast_recovered", "detected", "false_negative", "iterations", "residual", "converged", "amplitude",
           "feature_loss", "correlation", "candidates", "threshold", "budget", "seed")

SUMMARY_BY = ["model", "search", "size"]
SUMMARY_COLUMNS = ["false_negative", "contrast_recovered", "error_feature", "converged", "iterations", "residual"]
