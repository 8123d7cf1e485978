"""The conclusion at the top of a page: sentences with the numbers, computed from the summary frames
of :mod:`robustkit.report.tables` (so the words and the tables cannot disagree)."""

from __future__ import annotations

import math

import pandas as pd

from robustkit.report import tables
from robustkit.report.runs import Run

#: the ε the attack headline quotes: the largest ε ≤ 5 % in the grid (docs/maths.md §7: --eps 0.05 means 5 %).
HEADLINE_EPS = 0.05


def pct(eps: float) -> str:
    """``0.05`` → ``5 %``; ``0.0025`` → ``0.25 %``."""
    return f"{eps * 100:.4g} %"


def headline_eps(values) -> float | None:
    """The largest ε ≤ 5 % among the positive ε of the run (the smallest positive ε if all exceed it)."""
    eps = sorted({float(e) for e in values if float(e) > 0})
    if not eps:
        return None
    below = [e for e in eps if e <= HEADLINE_EPS + 1e-12]
    return below[-1] if below else eps[0]


def _pm(mean: float, std: float, spec: str = "{:.2f}") -> str:
    if math.isnan(std):
        return spec.format(mean)
    return f"{spec.format(mean)} ± {spec.format(std)}"


def _slices(ns: pd.Series) -> str:
    ns = ns.astype(int)
    return f"{ns.iloc[0]} slices" if ns.nunique() == 1 else f"{ns.min()}–{ns.max()} slices"


def attack(run: Run) -> list[str]:
    r = run.results
    summary = tables.model_order(tables.attack_summary(r), run.model_names())
    out = []
    eps = headline_eps(r.loc[r["kind"] != "clean", "eps"])
    if eps is None:
        out.append("Only clean reconstructions are in this run (no ε > 0 yet).")
    for kind in ("adversarial", "gaussian"):
        rows = summary[(summary["kind"] == kind) & (summary["eps"].sub(eps or 0).abs() < 1e-12)]
        if eps is None or rows.empty:
            continue
        parts = [f"{run.label(m)} loses {_pm(a, s)} dB" for m, a, s in
                 zip(rows["model"], rows["psnr_drop_mean"], rows["psnr_drop_std"])]
        out.append(f"At ε = {pct(eps)} {kind}, " + ", ".join(parts)
                   + f" of PSNR (mean ± std over {_slices(rows['n'])}).")
        if kind == "adversarial" and rows["amplification_mean"].notna().any():
            amp = [f"{run.label(m)} {a:.3f}" for m, a in zip(rows["model"], rows["amplification_mean"]) if not math.isnan(a)]
            out.append(f"Amplification ‖f(b+γ) − f(b)‖/‖γ‖ of that attack: {', '.join(amp)}.")
    clean = summary[summary["kind"] == "clean"]
    if not clean.empty:
        out.append("Clean PSNR: " + ", ".join(f"{run.label(m)} {_pm(a, s)} dB" for m, a, s in
                                              zip(clean["model"], clean["psnr_mean"], clean["psnr_std"])) + ".")
    return out


def audit(run: Run) -> list[str]:
    summary = tables.model_order(tables.audit_summary(run.results), run.model_names())
    out = []
    deq = summary[summary["passes"].notna()]
    if deq.empty:
        out.append("No DEQ model (the ones constrained to L[H_θ] ≤ 1 − m) has audit results in this run.")
    else:
        parts = [f"{int(p)} of {int(n)} test slices for {run.label(m)} (T = {t:g}, largest estimate {lm:.4f}, δ = {d:g})"
                 for m, p, n, t, lm, d in zip(deq["model"], deq["passes"], deq["n"], deq["threshold"], deq["L_max"], deq["delta"])]
        out.append("L[H_θ](x*; δ) ≤ 1 − m holds on " + "; on ".join(parts) + ".")
    amp = summary[summary["amplification_mean"].notna()]
    if not amp.empty:
        out.append("End-to-end amplification ‖f(b+γ) − f(b)‖/‖γ‖ (probe): " + ", ".join(
            f"{run.label(m)} {_pm(a, s, '{:.3f}')}" for m, a, s in
            zip(amp["model"], amp["amplification_mean"], amp["amplification_std"])) + ".")
    return out


def init_test(run: Run) -> list[str]:
    summary = tables.model_order(tables.init_summary(run.results, run.traces), run.model_names())
    r = run.results
    out = []
    for model, rows in summary.groupby("model", sort=False):
        starts = ", ".join(f"{tables.start_label(s, rad)} {int(k)}/{int(n)}" for s, rad, k, n in
                           zip(rows["start"], rows["radius"], rows["same_fixed_point"], rows["n"]))
        mine = r[r["model"] == model]
        sentence = f"{run.label(model)} reaches the SENSE fixed point from {starts} slices"
        if "sense_in_ball" in mine:
            per_slice = tables.as_bool(mine.drop_duplicates("sample")["sense_in_ball"])
            sentence += f"; its SENSE start lies in B(x*, δ‖x*‖) on {int(per_slice.sum())}/{len(per_slice)} slices"
        conv = int(rows["converged"].sum())
        sentence += f"; {conv} of {int(rows['n'].sum())} solves converged"
        if rows["hit_cap"].notna().any():
            sentence += f" ({int(rows['hit_cap'].sum())} hit the iteration cap)"
        out.append(sentence + ".")
    return out


def sweep_delta(run: Run) -> list[str]:
    summary = tables.sweep_summary(run.results)
    out = []
    for _, row in summary.iterrows():
        s = (f"δ = {row['delta']:g}, {run.label(row['model'])}: PSNR {_pm(row['psnr_mean'], row['psnr_std'])} dB, "
             f"L[H_θ] ≤ T on {int(row['within']) if not math.isnan(row['within']) else 0}/{int(row['n'])} slices, "
             f"init success {100 * row['init_success']:.0f} %")
        if not math.isnan(row["adv_psnr_drop_mean"]):
            s += f", adversarial ε = {pct(row['adv_eps'])} costs {row['adv_psnr_drop_mean']:.2f} dB"
        out.append(s + ".")
    if len(summary) > 1:
        best = summary.loc[summary["psnr_mean"].idxmax()]
        out.append(f"Best quality at δ = {best['delta']:g} ({best['psnr_mean']:.2f} dB).")
    return out


CONCLUDE = {"attack": attack, "audit": audit, "init-test": init_test, "sweep-delta": sweep_delta}


def conclude(run: Run) -> list[str]:
    """The conclusion sentences of a run (one line if it has no results yet)."""
    if run.results.empty:
        return ["No cell of this run has finished yet; there is nothing to conclude."]
    return CONCLUDE[run.study](run)
