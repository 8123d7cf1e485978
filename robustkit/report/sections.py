"""What a run's page shows, study by study: sections of figures, tables and notes, with captions that
name the study, its config and the number of slices. Rendering to HTML is :mod:`robustkit.report.html`."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Union

from robustkit.report import conclusions, figures, tables
from robustkit.report.runs import Run
from robustkit.report.tables import Table

STUDY_TITLES = {
    "attack": "Attack study",
    "init-test": "Initialisation test",
    "audit": "Audit",
    "sweep-delta": "δ sweep",
    "features": "Small-feature study",
    "bound": "Monotone bound",
    "shift": "Distribution shift",
}

#: config keys that a caption quotes, per study (the full config is on the page too).
CAPTION_KEYS = {
    "attack": ("eps", "kinds", "steps", "restarts", "optimizer", "target", "roi", "draws"),
    "init-test": ("starts", "radii", "delta", "cap_factor", "same_tol"),
    "audit": ("delta", "steps", "restarts", "slow_steps", "power_iters", "probe_eps"),
    "sweep-delta": ("common_delta", "steps", "restarts", "init_starts", "init_radii", "adv_eps", "adv_steps"),
    "features": ("features", "sizes", "contrasts", "positions", "searches", "budget", "threshold"),
    "bound": ("eps", "adv_steps", "adv_restarts", "delta", "steps", "restarts", "slow_steps", "power_iters"),
    "shift": ("axes", "accels", "masks", "noises", "coils", "anatomy"),
}


@dataclass
class Figure:
    """A PNG figure (base64) with its title and caption."""

    title: str
    png: str
    caption: str


@dataclass
class Note:
    """A line shown in a box: ``level`` is ``warning`` (something is missing) or ``info``."""

    text: str
    level: str = "warning"


Block = Union[Figure, Table, Note]


@dataclass
class Section:
    title: str
    blocks: list[Block] = field(default_factory=list)


@dataclass
class RunReport:
    """Everything a run's page shows."""

    run: Run
    conclusion: list[str]
    sections: list[Section]  # the study's own
    training: Section  # training curves of its zoo models

    def all_sections(self) -> list[Section]:
        return [*self.sections, self.training]

    def tables(self) -> list[Table]:
        return tables_of(self.all_sections())


def tables_of(sections: list[Section]) -> list[Table]:
    return [b for s in sections for b in s.blocks if isinstance(b, Table)]


def config_text(run: Run) -> str:
    """``data builtin (test split), 4× acceleration, seed 0; eps=[0.05], steps=3, …``."""
    c = run.config
    split = "all samples" if c.get("split") == "all" else f"{c.get('split', '?')} split"
    head = f"data {c.get('data', '?')} ({split}), {c.get('accel', '?')}× acceleration, seed {c.get('seed', '?')}"
    keys = [k for k in CAPTION_KEYS.get(run.study, ()) if k in c]
    return head + ("; " + ", ".join(f"{k}={json.dumps(c[k], default=str)}" for k in keys) if keys else "")


def caption(run: Run, what: str, n: int | None = None) -> str:
    n = run.n_samples() if n is None else n
    return f"{what} — {STUDY_TITLES[run.study]} run {run.name}; {config_text(run)}; n = {conclusions.slices(n)} per model."


def _draw(title: str, fn: Callable[..., str], *args: Any, caption: str) -> Block:
    """A figure, or a note saying why it could not be drawn (the rest of the page still renders)."""
    try:
        return Figure(title, fn(*args), caption)
    except Exception as exc:  # noqa: BLE001 - a broken figure must not lose the page
        return Note(f"figure “{title}” could not be drawn: {type(exc).__name__}: {exc}")


def _table(run: Run, name: str, title: str, frame, what: str, order: bool = True, **kw) -> Table:
    """A table whose rows follow the run's model order (``order=False`` keeps the frame's)."""
    frame = tables.model_order(frame, run.model_names()) if order and "model" in frame else frame
    return Table(name, title, frame, caption(run, what), labels=run.labels(), **kw)


# ------------------------------------------------------------------ studies
def attack(run: Run, colours: dict) -> list[Section]:
    r = run.results
    labels = run.labels()
    quality = Section("PSNR and SSIM vs ε", [
        _draw("PSNR and SSIM vs ε", figures.quality_vs_eps, r, labels, colours,
              caption=caption(run, "PSNR and SSIM vs ε per model, adversarial and Gaussian (mean ± std band; ε = 0 is the clean reconstruction)")),
        _table(run, "attack_summary", "Per model, kind and ε", tables.attack_summary(r),
               "Mean ± std over slices per model, kind and ε", counts=("converged",)),
    ])
    out = [quality]
    realistic = tables.realistic_summary(r)
    if len(realistic):
        out.append(Section("Realistic perturbations", [
            _table(run, "attack_realistic", "Spikes, motion and coil-map error: the worst candidate per slice",
                   realistic, "Per model, family and ε (docs/maths.md §14): ΔPSNR (mean ± std over slices), "
                   "the k-space change ‖γ‖/‖b‖ and objective of the most damaging candidate, the family's kept "
                   "parameters (means) and the converged count of DEQ solves", counts=("converged",)),
        ]))
    if run.examples:
        blocks: list[Block] = []
        order = {m: i for i, m in enumerate(run.model_names())}
        for kind in dict.fromkeys(k for _, k, _, _ in run.examples):
            mine = [e for e in run.examples if e[1] == kind]
            eps = conclusions.headline_eps([e[2] for e in mine]) or max(e[2] for e in mine)
            rows = sorted((e for e in mine if abs(e[2] - eps) < 1e-12), key=lambda e: order.get(e[0], len(order)))
            what = (f"Example slice, {kind} perturbation at ε = {conclusions.pct(eps)}: ground truth, clean and attacked "
                    "reconstructions, error maps on one colour scale, and the k-space perturbation |γ| (RSS over coils)")
            blocks.append(_draw(f"Examples: {kind}, ε = {conclusions.pct(eps)}", figures.examples,
                                [(run.label(m), p) for m, _, _, p in rows], f"{kind}, ε = {conclusions.pct(eps)}",
                                caption=caption(run, what, n=1)))
        out.append(Section("Example images", blocks))
    t = run.traces
    if t is not None and len(t) and {"model", "eps", "step", "loss"} <= set(t):
        out.append(Section("Attack convergence", [
            _draw("Adversarial objective per step", figures.attack_traces, t, labels, colours,
                  caption=caption(run, "The attack's own convergence: its objective per ascent step (mean ± std over slices and restarts)")),
        ]))
    return out


def init_test(run: Run, colours: dict) -> list[Section]:
    r, t, labels = run.results, run.traces, run.labels()
    summary = tables.init_summary(r, t)
    out = []
    if t is not None and len(t) and {"model", "sample", "start", "radius", "iteration", "residual"} <= set(t):
        out.append(Section("Residual traces", [
            _draw("Residual per iteration", figures.residual_traces, t, labels, colours,
                  caption=caption(run, "Relative residual ‖f(x) − x‖/‖f(x)‖ per iteration (log scale), one panel per start, one line per slice")),
        ]))
    out.append(Section("Same fixed point from every start?", [
        _draw("Fraction reaching x*", figures.same_point_bars, summary, labels, colours,
              caption=caption(run, "Fraction of slices whose iteration reaches the SENSE fixed point x* (relative distance ≤ same_tol)")),
        _table(run, "init_summary", "Per model and start", summary,
               "Per model and start: slices reaching x*, converged, hitting the cap; mean ± std iterations, distance to x*, PSNR; "
               "solver residual ratio = geometric mean of r_{k+1}/r_k of the solver's own iterates (Anderson-accelerated "
               "by default; not the plain iteration's contraction rate of the audit)", counts=("same_fixed_point", "converged", "hit_cap")),
    ]))
    return out


def audit(run: Run, colours: dict) -> list[Section]:
    r, t, labels = run.results, run.traces, run.labels()
    out = [Section("L[H_θ] per slice and end-to-end amplification", [
        _draw("L[H_θ], Jacobian norm, amplification", figures.audit_distributions, r, labels, colours,
              caption=caption(run, "Per slice (dots; bars: mean ± std): the largest lower bound of L[H_θ] of each DEQ model with the 1 − m line, ‖J_H(x*)‖₂, and the end-to-end amplification of every model")),
        _table(run, "audit_summary", "Per model", tables.audit_summary(r),
               "Per model: mean ± std of each lower bound of L[H_θ], the largest over slices and estimators, the slices with "
               "that bound ≤ T, the largest observed contraction rate of the plain iteration and the slices where it exceeds "
               "the largest bound (the estimates miss a direction), and the slices whose solve converged",
               counts=("passes", "jacobian_converged", "rate_exceeds_L", "converged")),
    ])]
    if t is not None and len(t) and {"model", "sample", "estimator", "step", "value"} <= set(t):
        out.append(Section("Estimator convergence", [
            _draw("Estimates per step", figures.audit_traces, t, labels, colours,
                  caption=caption(run, "L, L_slow, L_top after each ascent step, ‖J‖₂ after each Lanczos step and the residual of the plain iteration behind the rate, one line per slice")),
        ]))
    return out


def sweep_delta(run: Run, colours: dict) -> list[Section]:
    r = run.results
    return [Section("The δ trade-off", [
        _draw("Quality, constraint and init success vs δ", figures.sweep_tradeoff, r,
              caption=caption(run, "PSNR, fraction of slices with L[H_θ] ≤ T, init success and adversarial ΔPSNR vs the training δ (mean ± std)")),
        _table(run, "sweep_summary", "Per δ", tables.sweep_summary(r),
               "Per model (one δ each): mean ± std over slices; slices within the constraint", order=False, counts=("within", "sense_in_ball"),
               percent=("init_success",)),
    ])]


def features(run: Run, colours: dict) -> list[Section]:
    r = run.results
    return [Section("False negatives vs feature size", [
        _draw("False-negative rate and contrast recovered", figures.false_negatives, r, run.labels(), colours,
              caption=caption(run, "Per model and feature size: the fraction of inserted features the matched filter does not "
                                   "detect in f(b + A x_f) − f(b), and the contrast recovered â/a (mean ± std); solid: random "
                                   "positions, dashed: the worst candidate of the adversarial search (FNAF)")),
        _table(run, "features_summary", "Per model, search and size", tables.features_summary(r),
               "Per model, search and feature size: features missed (false negatives), their rate, mean ± std contrast "
               "recovered and relative error in the feature region, and the solves that converged (both solves of a row)",
               counts=("false_negative", "converged"), percent=("fn_rate",)),
    ])]


def bound(run: Run, colours: dict) -> list[Section]:
    r, labels = run.results, run.labels()
    return [Section("The monotone bound beside the measured attack", [
        _draw("Bound 1/(1 − L) per estimator vs measured amplification", figures.bound_vs_measured, r, labels,
              caption=caption(run, "Per model and ε, per slice: the measured ‖x*(b+γ) − x*(b)‖/‖Aᴴγ‖ of the PGD attack "
                                   "(crosses) and the bound 1/m_eff = 1/(1 − L) of each lower bound L of L[H](x*; δ) "
                                   "(dots; triangles: vacuous, L ≥ 1), log scale")),
        _table(run, "bound_summary", "Per model, ε and estimator", tables.bound_summary(r),
               "Per model, ε and L estimator: mean ± std of L, m_eff and the measured ratio, the median bound, and the "
               "slices where the bound holds, is vacuous or is violated (beyond the solves' slack), violated with both "
               "solves converged (a proof that L[H] ≤ L fails there), with x*(b+γ) inside B(x*, δ‖x*‖), and with "
               "converged clean and attacked solves",
               counts=("holds", "vacuous", "violated", "violated_converged", "in_ball", "converged", "adv_converged")),
    ])]


def shift(run: Run, colours: dict) -> list[Section]:
    r = run.results
    return [Section("PSNR and SSIM per condition", [
        _draw("PSNR and SSIM under each shift", figures.shift_panels, r, run.labels(), colours,
              caption=caption(run, "PSNR and SSIM per condition of each axis, one axis shifted at a time, the others nominal "
                                   "(mean ± std over slices)")),
        _table(run, "shift_summary", "Per model, axis and condition", tables.shift_summary(r),
               "Mean ± std over slices per model, axis and condition; ΔPSNR = nominal PSNR − PSNR (> 0: worse than "
               "nominal); DEQ solves that converged", counts=("converged",)),
    ])]


def model_entries(run: Run) -> list[tuple[str, str, str | None]]:
    """``(zoo folder, display label, weights sha256 recorded by the run)`` of each zoo model of the run
    (a plug-in or network object has no card, hence no training curves)."""
    models = [m for m in run.meta.get("models", []) if isinstance(m, dict)]
    recorded = {m.get("name"): m.get("weights_sha256") for m in models}
    outside = {m.get("name") for m in models if m.get("source", "zoo") != "zoo"}
    return [(name, run.label(name), recorded.get(name)) for name in run.model_names() if name not in outside]


def training(entries: list[tuple[str, str, str | None]], used_by: str, colours: dict) -> Section:
    """Training curves of zoo models ``(folder, label, recorded sha256)`` read from their cards;
    a missing card, a card without history or a retrained entry is noted on the page."""
    from robustkit.errors import RobustkitError
    from robustkit.models.zoo import read_card, resolve

    blocks: list[Block] = []
    histories: dict[str, list[dict]] = {}  # zoo folder → per-epoch history
    labels = {name: label for name, label, _ in entries}
    for name, _, recorded in entries:
        try:
            card = read_card(resolve(name))
        except RobustkitError as exc:
            blocks.append(Note(f"no training curves for {name}: {exc}", "info"))
            continue
        if recorded and card.get("weights_sha256") and recorded != card.get("weights_sha256"):
            blocks.append(Note(f"the zoo entry {name} was retrained after {used_by} (weights sha256 differ); "
                               "its curves are of the current weights"))
        if card.get("history"):
            histories[name] = card["history"]
            stages = card.get("lineage") or card.get("stages") or []
            total = sum(s.get("epochs", 0) or 0 for s in stages if isinstance(s, dict))
            if len(stages) > 1 and total > len(card["history"]):
                blocks.append(Note(f"{name} trained in {len(stages)} stages, {total} epochs in all; its card's history, "
                                   f"drawn here, is its last stage's {len(card['history'])} epochs "
                                   f"(every stage: robustkit models show {name})", "info"))
        else:
            blocks.append(Note(f"the card of {name} has no training history", "info"))
    if histories:
        blocks[:0] = [
            _draw("Training curves", figures.training_curves, {labels[n]: h for n, h in histories.items()}, colours,
                  caption=f"Training curves of the {len(histories)} zoo models used by {used_by} (from each model's card.json in the zoo)."),
            Table("training", "Training summary", tables.training_summary(histories),
                  f"Per zoo model used by {used_by}: epochs, final training loss, final and best validation PSNR/SSIM "
                  "(from its card).", labels=labels),
        ]
    return Section("Models: training curves", blocks)


SECTIONS = {"attack": attack, "init-test": init_test, "audit": audit, "sweep-delta": sweep_delta, "features": features,
            "bound": bound, "shift": shift}


#: what "converged" guarantees (measured in docs/convergence.md, "What a converged solve is worth").
TOLERANCE_NOTE = (
    "A fixed-point solve counts as converged when its relative residual ‖f(x) − x‖/‖f(x)‖ reaches the model's "
    "tolerance (1e-5 unless the model sets another). That leaves x about tolerance/(1 − ρ) from the fixed point, "
    "ρ the rate of the slowest mode: for the shipped MnM-MOL (ρ ≈ 0.996) about 2e-3 of ‖x*‖, up to ±0.15 dB of "
    "PSNR on one slice, while a mean over 10 slices moved by 0.01 dB (docs/convergence.md). Read a single "
    "slice's number of such a model to ±0.15 dB; compare models on means."
)


def assemble(run: Run) -> RunReport:
    """The conclusion and sections of a run's page (figures drawn, tables not yet written)."""
    labels = list(run.labels().values())
    colours = figures.palette(labels)
    sections: list[Section] = []
    if run.results.empty:
        sections.append(Section("Results", [Note("results.csv holds no finished cell yet")]))
    else:
        sections += SECTIONS[run.study](run, colours)
        if "converged" in run.results and run.results["converged"].notna().any():  # a DEQ was solved
            sections.append(Section("How close a converged solve is", [Note(TOLERANCE_NOTE, level="info")]))
    used_by = f"{STUDY_TITLES[run.study]} run {run.name}"
    return RunReport(run, conclusions.conclude(run), sections, training(model_entries(run), used_by, colours))


def raw_files(run: Run) -> list[Path]:
    """The run's own files the page links to (those that exist)."""
    return [run.path / n for n in ("results.csv", "traces.csv", "config.json", "meta.json") if (run.path / n).exists()]
