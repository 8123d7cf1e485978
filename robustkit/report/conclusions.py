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


def slices(n: int) -> str:
    """``1 slice``, ``2 slices``."""
    return f"{n} slice" if n == 1 else f"{n} slices"


def _slices(ns: pd.Series) -> str:
    ns = ns.astype(int)
    return slices(int(ns.iloc[0])) if ns.nunique() == 1 else f"{ns.min()}–{ns.max()} slices"


def _converged_on(rows: pd.DataFrame, column: str = "converged") -> tuple[int, int]:
    """``(k, n)``: rows whose flag ``column`` holds, rows with a value (NaN rows: unrolled models)."""
    if column not in rows:
        return 0, 0
    flags = tables.as_bool(rows[column]).dropna()
    return int(flags.sum()), len(flags)


def convergence(run: Run, column: str = "converged", what: str = "solve", where: pd.Series | None = None,
                consequence: str = "the numbers below are not of a fixed point") -> list[str]:
    """One sentence per model with an unconverged DEQ solve among the rows selected by ``where``, e.g.
    "MnM-MOL: clean solve converged on 0 of 1 slice; the robustness numbers below are not of a fixed point"."""
    r = run.results if where is None else run.results[where]
    out = []
    for model in run.model_names():
        k, n = _converged_on(r[r["model"] == model], column)
        if n and k < n:
            out.append(f"{run.label(model)}: {what} converged on {k} of {slices(n)}; {consequence}.")
    return out


def attack(run: Run) -> list[str]:
    r = run.results
    summary = tables.model_order(tables.attack_summary(r), run.model_names())
    out = convergence(run, what="clean solve", where=r["kind"] == "clean",
                      consequence="the robustness numbers below are not of a fixed point")
    out += convergence(run, what="attacked or perturbed solve", where=r["kind"] != "clean",
                       consequence="the damage below is measured at points that are not fixed points")
    if "backward_converged" in r:
        adv = r[(r["kind"] == "adversarial") & r["backward_converged"].notna()]
        for model, rows in adv.groupby("model", sort=False):
            share = float(rows["backward_converged"].mean())
            if share < 1:
                out.append(f"{run.label(model)}: the implicit backward behind the attack's gradients converged on "
                           f"{100 * share:.0f} % of steps (largest residual {rows['backward_residual'].max():.1e}): "
                           "the attack followed an approximate gradient, so its damage is a lower estimate.")
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
    if eps is not None:
        out += _families(run, eps)
    clean = summary[summary["kind"] == "clean"]
    if not clean.empty:
        out.append("Clean PSNR: " + ", ".join(f"{run.label(m)} {_pm(a, s)} dB" for m, a, s in
                                              zip(clean["model"], clean["psnr_mean"], clean["psnr_std"])) + ".")
    return out


def _family_what(kind: str, rows: pd.DataFrame) -> str:
    """What the perturbation of a realistic family was (docs/maths.md §14), from its rows' parameters."""
    gamma = f"‖γ‖/‖b‖ = {rows['perturbation'].mean():.3g}"
    if kind == "spikes":
        return f"{rows['spikes'].max():.0f} spiked samples, {gamma}"
    if kind == "motion":
        return (f"rotation up to {rows['angle'].abs().max():.2g}° and a {rows['shift_px'].max():.3g} px shift on "
                f"{100 * rows['lines_fraction'].mean():.0f} % of the lines, {gamma}")
    return f"coil maps off by ‖S̃ − S‖/‖S‖ = {rows['map_error'].mean():.3g}, data error {gamma}"


def _families(run: Run, eps: float) -> list[str]:
    """One sentence per realistic family at the headline ε: the PSNR each model loses to the worst
    candidate, and, where a DEQ solve did not converge, that fact."""
    from robustkit.choices import PERTURBATION_FAMILIES

    r = run.results
    out = []
    for kind in PERTURBATION_FAMILIES:
        rows = r[(r["kind"] == kind) & (r["eps"].sub(eps).abs() < 1e-12)]
        if rows.empty:
            continue
        parts = []
        for model in run.model_names():
            mine = rows[rows["model"] == model]
            if mine.empty:
                continue
            part = f"{run.label(model)} loses {_pm(mine['psnr_drop'].mean(), mine['psnr_drop'].std(ddof=1))} dB"
            k, n = _converged_on(mine)
            if n and k < n:
                part += f" (solve converged on {k} of {slices(n)}: not a fixed point)"
            parts.append(part)
        searched = int(rows["candidates"].max()) if "candidates" in rows and rows["candidates"].notna().any() else 1
        worst = f"the worst of {searched} candidates per slice" if searched > 1 else "one candidate per slice"
        out.append(f"At ε = {pct(eps)} {kind} ({_family_what(kind, rows)}; {worst}), " + ", ".join(parts)
                   + f" of PSNR (mean ± std over {_slices(rows.groupby('model').size())}).")
    return out


def audit(run: Run) -> list[str]:
    summary = tables.model_order(tables.audit_summary(run.results), run.model_names())
    out = convergence(run, what="solve at x*", consequence="its L estimates below are not at a fixed point")
    deq = summary[summary["passes"].notna()]
    if deq.empty:
        out.append("No DEQ model (the ones constrained to L[H_θ] ≤ 1 − m) has audit results in this run.")
    else:
        parts = [f"{int(p)} of {int(n)} test slices for {run.label(m)} (T = {t:g}, largest lower bound {lm:.4f}, δ = {d:g})"
                 for m, p, n, t, lm, d in zip(deq["model"], deq["passes"], deq["n"], deq["threshold"], deq["L_max"], deq["delta"])]
        out.append("Under the largest lower bound found, L[H_θ](x*; δ) ≤ 1 − m holds on " + "; on ".join(parts)
                   + " (a lower bound: the true constant may be larger).")
        for m, k, n, rate, lm in zip(deq["model"], deq["rate_exceeds_L"], deq["n"], deq["rate_max"], deq["L_max"]):
            if not math.isnan(k) and k > 0:
                out.append(f"{run.label(m)}: the observed contraction rate of the plain iteration (up to {rate:.4f}) exceeds "
                           f"the largest L estimate on {int(k)} of {int(n)} slices: the estimates miss a direction.")
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
    out = convergence(run, what="solve from SENSE", consequence="its numbers below are not of a fixed point")
    out += convergence(run, column="adv_converged", what="attacked solve",
                       consequence="its adversarial ΔPSNR below is not measured at a fixed point")
    for _, row in summary.iterrows():
        s = (f"δ = {row['delta']:g}, {run.label(row['model'])}: PSNR {_pm(row['psnr_mean'], row['psnr_std'])} dB, "
             f"largest lower bound of L[H_θ] ≤ T on {int(row['within']) if not math.isnan(row['within']) else 0}/{int(row['n'])} slices, "
             f"init success {100 * row['init_success']:.0f} %")
        if not math.isnan(row["adv_psnr_drop_mean"]):
            s += f", adversarial ε = {pct(row['adv_eps'])} costs {row['adv_psnr_drop_mean']:.2f} dB"
        out.append(s + ".")
    if len(summary) > 1:
        best = summary.loc[summary["psnr_mean"].idxmax()]
        out.append(f"Best quality at δ = {best['delta']:g} ({best['psnr_mean']:.2f} dB).")
    return out


def features(run: Run) -> list[str]:
    r = run.results
    summary = tables.model_order(tables.features_summary(r), run.model_names())
    out = convergence(run, what="solve with or without the feature",
                      consequence="its false-negative rate below is not measured at fixed points")
    for model, rows in summary.groupby("model", sort=False):
        parts = []
        for search, part in rows.groupby("search", sort=False):
            sizes = ", ".join(f"{s:g} px {int(k)}/{int(n)} ({100 * k / n:.0f} %)"
                              for s, k, n in zip(part["size"], part["false_negative"], part["n"]))
            parts.append(f"{search} {sizes}")
        mine = r[(r["model"] == model) & (r["search"] == "random")]
        sentence = f"{run.label(model)} misses (false negatives by search and feature size): " + "; ".join(parts)
        if len(mine):
            sentence += (f"; at random positions it recovers {_pm(mine['contrast_recovered'].mean(), mine['contrast_recovered'].std(), '{:.3f}')} "
                         "of the inserted contrast")
        out.append(sentence + ".")
    adv = r[r["search"] == "adversarial"]
    if len(adv):
        budget = int(adv["candidates"].max())
        worst = adv.loc[adv["contrast_recovered"].idxmin()]
        out.append(f"The adversarial search (FNAF, up to {budget} candidates per slice, size and contrast) found the "
                   f"least-recovered feature for {run.label(worst['model'])}: a {worst['size']:g}-px {worst['feature']} of "
                   f"contrast {worst['contrast']:g} at ({int(worst['row'])}, {int(worst['col'])}) on slice {int(worst['sample'])}, "
                   f"{worst['contrast_recovered']:.3f} of its contrast recovered.")
    return out


def bound(run: Run) -> list[str]:
    """The monotone bound: per model and ε the measured amplification beside the bound of the largest
    L estimate; per estimator the violations, as proofs only where both solves converged."""
    r = run.results
    per_slice = r["estimator"] == "max"
    out = convergence(run, what="clean solve", where=per_slice & (r["eps"] == r["eps"].min()),
                      consequence="its L estimates and bounds are not at a fixed point")
    out += convergence(run, column="adv_converged", what="attacked solve", where=per_slice,
                       consequence="its measured amplification is not between fixed points")
    summary = tables.model_order(tables.bound_summary(r), run.model_names())
    for _, row in summary[summary["estimator"] == "max"].iterrows():
        n, label = int(row["n"]), run.label(row["model"])
        out.append(f"{label} at ε = {pct(row['eps'])}: measured ‖x*(b+γ) − x*(b)‖/‖Aᴴγ‖ = "
                   f"{_pm(row['measured_mean'], row['measured_std'], '{:.3f}')}; under the largest L estimate "
                   f"({_pm(row['L_mean'], row['L_std'], '{:.4f}')}, δ = {row['delta']:g}) the bound 1/m_eff "
                   f"(median {row['bound_median']:.3g}) holds on {int(row['holds'])}, is vacuous (m_eff ≤ 0) on "
                   f"{int(row['vacuous'])} and is violated on {int(row['violated'])} of {slices(n)}.")
    for _, row in summary[summary["violated"] > 0].iterrows():
        k, proved, label = int(row["violated"]), int(row["violated_converged"]), run.label(row["model"])
        s = (f"{label} at ε = {pct(row['eps'])}: the measured ratio exceeds the {row['estimator']} bound on {k} of "
             f"{int(row['n'])} slices")
        if proved:
            s += (f"; with both solves converged on {proved} of them, this proves that L[H] ≤ L_{row['estimator']} "
                  "(the local constraint at that m_eff) does not hold on any set containing x*(b) and x*(b+γ)")
        if proved < k:
            s += f"; on {k - proved} a solve did not converge, so those violations are flagged, not proofs"
        out.append(s + ".")
    out.append("A bound that holds is not a certificate: each L is a lower bound of L[H](x*; δ), so the true "
               "bound 1/(1 − L[H]) may be larger, and it applies only while x*(b+γ) stays where L was measured.")
    return out


def _accel(label: str) -> float:
    return float(str(label).rstrip("x"))


def more_samples(summary: pd.DataFrame, run: Run) -> list[str]:
    """Antun et al.'s check on the ``accel`` axis: a model whose mean PSNR at an acceleration below
    the nominal one (more samples) is lower than at the nominal one gets worse with more samples."""
    acc = summary[summary["axis"] == "accel"]
    out, lower_seen = [], False
    for model, rows in acc.groupby("model", sort=False):
        nominal = rows[rows["nominal"]]
        if nominal.empty:
            continue
        a0, p0 = _accel(nominal["condition"].iloc[0]), float(nominal["psnr_mean"].iloc[0])
        for cond, p in zip(rows["condition"], rows["psnr_mean"]):
            if _accel(cond) < a0:
                lower_seen = True
                if p < p0:
                    out.append(f"{run.label(model)} gets worse with more samples: {p:.2f} dB at {cond} against "
                               f"{p0:.2f} dB at its nominal {a0:g}x.")
    if lower_seen and not out:
        out.append("No model gets worse with more samples: below the nominal acceleration every model's mean PSNR "
                   "is at least its nominal one.")
    return out


def shift(run: Run) -> list[str]:
    r = run.results
    summary = tables.model_order(tables.shift_summary(r), run.model_names())
    nominal = tables.as_bool(r["nominal"]).fillna(False).astype(bool)
    out = convergence(run, what="nominal solve", where=nominal & (r["axis"] == r["axis"].iloc[0]),  # once per slice
                      consequence="its nominal numbers below are not of a fixed point")
    for axis in dict.fromkeys(r["axis"]):
        out += convergence(run, what=f"solve under the {axis} shift", where=(r["axis"] == axis) & ~nominal,
                           consequence="those numbers below are not of a fixed point")
    out += more_samples(summary, run)
    for axis, rows in summary[~summary["nominal"]].groupby("axis", sort=False):
        parts = []
        for model, mine in rows.groupby("model", sort=False):
            worst = mine.loc[mine["psnr_drop_mean"].idxmax()]
            part = f"{run.label(model)} {_pm(worst['psnr_drop_mean'], worst['psnr_drop_std'])} dB at {worst['condition']}"
            if not math.isnan(worst["converged"]) and worst["converged"] < worst["n"]:
                part += f" (solve converged on {int(worst['converged'])} of {int(worst['n'])})"
            parts.append(part)
        nominal_label = summary.loc[(summary["axis"] == axis) & summary["nominal"], "condition"]
        head = f"{axis} (nominal {nominal_label.iloc[0]})" if len(nominal_label) else axis
        out.append(f"{head}: the largest PSNR drop from nominal is " + ", ".join(parts)
                   + f" (mean ± std over {_slices(rows['n'])}).")
    return out


CONCLUDE = {"attack": attack, "audit": audit, "init-test": init_test, "sweep-delta": sweep_delta, "features": features,
            "bound": bound, "shift": shift}


def conclude(run: Run) -> list[str]:
    """The conclusion sentences of a run (one line if it has no results yet)."""
    if run.results.empty:
        return ["No cell of this run has finished yet; there is nothing to conclude."]
    return CONCLUDE[run.study](run)
