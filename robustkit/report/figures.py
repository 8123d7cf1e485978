"""The report's figures (seaborn on matplotlib's Agg backend), each returned as a base64 PNG string.

matplotlib and seaborn are imported on first use so importing :mod:`robustkit.report` stays cheap.
Figures are plain :class:`matplotlib.figure.Figure` objects (no pyplot state), so building a report
never opens a window or changes an interactive session's backend.
"""

from __future__ import annotations

import base64
import io
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from robustkit.report.runs import as_bool

DPI = 85


def _libs():
    """``(Figure, seaborn)``, selecting the Agg backend unless pyplot is already in use."""
    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")
    from matplotlib.figure import Figure
    import seaborn as sns

    return Figure, sns


def palette(labels: list[str]) -> dict[str, Any]:
    """One colour per model label, the same in every figure of a page."""
    _, sns = _libs()
    colours = sns.color_palette("colorblind", max(len(labels), 1))
    return {label: colours[i % len(colours)] for i, label in enumerate(labels)}


def to_png(fig) -> str:
    """The figure as base64-encoded PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)  # constrained layout already fits the figure
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(rows: int, cols: int, width: float, height: float, **kw):
    Figure, sns = _libs()
    with sns.axes_style("whitegrid"):
        fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
        axes = fig.subplots(rows, cols, squeeze=False, **kw)
    return fig, axes, sns


def _wrapped(n: int, width: float, height: float, **kw):
    """``n`` panels wrapped in rows of at most 4: ``(fig, axes array, panels in order, seaborn)``."""
    cols = max(min(n, 4), 1)
    rows = max(-(-n // cols), 1)
    fig, axes, sns = _figure(rows, cols, width, height, **kw)
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, axes, flat[:n], sns


def _legend_once(axes, keep=(0, 0)) -> None:
    """Keep the model legend of one panel only (the palette is the same in all)."""
    for (i, j), ax in np.ndenumerate(axes):
        leg = ax.get_legend()
        if leg is None:
            continue
        if (i, j) != keep:
            leg.remove()
        else:
            leg.set_title("model")
            leg.get_frame().set_alpha(0.8)


def _percent_axis(ax) -> None:
    from matplotlib.ticker import FuncFormatter

    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v * 100:g} %"))


#: what ε means on the x-axis for the realistic families (docs/maths.md §14).
EPS_LABELS = {"spikes": "ε  (spike energy ‖γ‖ = ε‖b‖)", "motion": "ε  (|θ| ≤ ε rad, shift ε·W px)",
              "coil-map": "ε  (‖S̃ − S‖ = ε‖S‖)"}


def quality_vs_eps(results: pd.DataFrame, labels: dict[str, str], colours: dict[str, Any]) -> str:
    """PSNR and SSIM vs ε (rows) for each attack kind (columns), mean ± std band per model.
    The clean rows (ε = 0) start every curve."""
    r = results.assign(label=results["model"].map(lambda m: labels.get(m, m)))
    clean = r[r["kind"] == "clean"]
    kinds = [k for k in ("adversarial", "gaussian") if (r["kind"] == k).any()]
    kinds += [k for k in r["kind"].unique() if k not in kinds and k != "clean"]
    kinds = kinds or ["clean"]
    fig, axes, sns = _figure(2, len(kinds), 4.6, 3.2)
    for j, kind in enumerate(kinds):
        d = pd.concat([clean.assign(kind=kind), r[r["kind"] == kind]]) if kind != "clean" else clean
        for i, (metric, name) in enumerate((("psnr", "PSNR (dB)"), ("ssim", "SSIM"))):
            ax = axes[i, j]
            sns.lineplot(data=d, x="eps", y=metric, hue="label", palette=colours, errorbar="sd", marker="o", ax=ax)
            ax.set_title(f"{kind}: {name} vs ε")
            ax.set_xlabel(EPS_LABELS.get(kind, "ε  (‖γ‖ ≤ ε‖b‖)"))
            ax.set_ylabel(name)
            _percent_axis(ax)
    _legend_once(axes)
    return to_png(fig)


def examples(rows: list[tuple[str, Path]], title: str) -> str:
    """Example images, one row per model: ground truth, clean and attacked reconstruction, both error
    maps (one colour scale for the whole figure) and the k-space perturbation ``|γ|`` (RSS over coils)."""
    fig, axes, _ = _figure(len(rows), 6, 2.1, 2.2)
    loaded = []
    for label, path in rows:
        with np.load(path) as z:
            gt, clean, att = (np.abs(z[k][0]) for k in ("target", "clean", "attacked"))
            err_c, err_a = np.abs(z["clean"][0] - z["target"][0]), np.abs(z["attacked"][0] - z["target"][0])
            pert = np.asarray(z["perturbation"][0], float)
            sample = int(z["sample"][0]) if "sample" in z else 0
        loaded.append((label, sample, gt, clean, att, err_c, err_a, pert))
    err_max = max(float(max(e1.max(), e2.max())) for *_, e1, e2, _ in loaded) or 1.0
    pert_max = max(float(p.max()) for *_, p in loaded) or 1.0
    heads = ("ground truth", "clean recon.", "attacked recon.", "|clean − gt|", "|attacked − gt|", "|γ| (k-space)")
    for i, (label, sample, gt, clean, att, err_c, err_a, pert) in enumerate(loaded):
        vmax = float(gt.max()) or 1.0
        for j, img in enumerate((gt, clean, att)):
            axes[i, j].imshow(img, cmap="gray", vmin=0, vmax=vmax)
        for j, img in ((3, err_c), (4, err_a)):
            im = axes[i, j].imshow(img, cmap="inferno", vmin=0, vmax=err_max)
        fig.colorbar(im, ax=axes[i, 4], fraction=0.046, pad=0.02)
        imp = axes[i, 5].imshow(pert, cmap="viridis", vmin=0, vmax=pert_max)
        fig.colorbar(imp, ax=axes[i, 5], fraction=0.046, pad=0.02)
        for j, ax in enumerate(axes[i]):
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
            if i == 0:
                ax.set_title(heads[j], fontsize=9)
        axes[i, 0].set_ylabel(f"{label}\nslice {sample}", fontsize=8)
    fig.suptitle(title, fontsize=10)
    return to_png(fig)


def attack_traces(traces: pd.DataFrame, labels: dict[str, str], colours: dict[str, Any]) -> str:
    """The adversarial objective vs ascent step, mean ± std over slices and restarts, one panel per ε."""
    t = traces.assign(label=traces["model"].map(lambda m: labels.get(m, m)))
    if "kind" in t:
        t = t[t["kind"] == "adversarial"]
    eps = sorted(t["eps"].unique())
    fig, axes, panels, sns = _wrapped(len(eps), 4.2, 3.0)
    for ax, e in zip(panels, eps):
        sns.lineplot(data=t[t["eps"] == e], x="step", y="loss", hue="label", palette=colours, errorbar="sd", ax=ax)
        ax.set_title(f"adversarial objective, ε = {e * 100:g} %")
        ax.set_ylabel("‖f(b+γ) − x_ref‖² / ‖x_ref‖²")
    _legend_once(axes)
    return to_png(fig)


def residual_traces(traces: pd.DataFrame, labels: dict[str, str], colours: dict[str, Any]) -> str:
    """Relative residual ``‖f(x) − x‖/‖f(x)‖`` vs iteration (log scale), one panel per start,
    one line per model × slice."""
    from robustkit.report.tables import start_label

    t = traces.assign(label=traces["model"].map(lambda m: labels.get(m, m)),
                      start_label=[start_label(s, r) for s, r in zip(traces["start"], traces["radius"])])
    t = t[t["residual"] > 0]
    starts = list(dict.fromkeys(t["start_label"]))
    fig, axes, panels, sns = _wrapped(len(starts), 3.6, 2.8, sharey=True)
    for ax, s in zip(panels, starts):
        sns.lineplot(data=t[t["start_label"] == s], x="iteration", y="residual", hue="label", units="sample",
                     estimator=None, palette=colours, lw=1, alpha=0.8, ax=ax)
        ax.set_yscale("log")
        ax.set_title(f"start: {s}")
        ax.set_ylabel("relative residual")
    _legend_once(axes)
    return to_png(fig)


def same_point_bars(summary: pd.DataFrame, labels: dict[str, str], colours: dict[str, Any]) -> str:
    """Fraction of slices whose iteration reaches the SENSE fixed point, per start and model."""
    from robustkit.report.tables import start_label

    d = summary.assign(label=summary["model"].map(lambda m: labels.get(m, m)),
                       start_label=[start_label(s, r) for s, r in zip(summary["start"], summary["radius"])],
                       fraction=summary["same_fixed_point"] / summary["n"])
    fig, axes, sns = _figure(1, 1, 7.5, 3.0)
    ax = axes[0, 0]
    sns.barplot(data=d, x="start_label", y="fraction", hue="label", palette=colours, ax=ax)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("start")
    ax.set_ylabel("fraction reaching x*")
    _legend_once(axes)
    return to_png(fig)


def audit_distributions(results: pd.DataFrame, labels: dict[str, str], colours: dict[str, Any]) -> str:
    """Per slice (dots, with mean ± std bars): the largest lower bound of ``L[H_θ](x*; δ)`` per DEQ
    model with the ``1 − m`` line, ``‖J_H(x*)‖₂`` per DEQ model, and the end-to-end amplification of
    every model."""
    from robustkit.report.tables import largest_lower_bound

    r = results.assign(label=results["model"].map(lambda m: labels.get(m, m)), L_max=largest_lower_bound(results))
    deq = r[r["L_max"].notna()]
    panels = [("L_max", "largest lower bound of L[H_θ](x*; δ)", deq)]
    if "jacobian_norm" in r and r["jacobian_norm"].notna().any():
        panels.append(("jacobian_norm", "‖J_H(x*)‖₂ (Lanczos)", deq))
    if r["amplification"].notna().any():
        panels.append(("amplification", "‖f(b+γ) − f(b)‖/‖γ‖", r[r["amplification"].notna()]))
    fig, axes, sns = _figure(1, len(panels), 3.9, 3.2)
    for ax, (col, name, d) in zip(axes[0], panels):
        if d.empty:
            ax.set_visible(False)
            continue
        order = list(dict.fromkeys(d["label"]))
        sns.stripplot(data=d, x="label", y=col, order=order, hue="label", palette=colours, size=5, legend=False, ax=ax)
        sns.pointplot(data=d, x="label", y=col, order=order, errorbar="sd", color="0.2", marker="_", markersize=18,
                      linestyle="none", capsize=0.15, err_kws={"linewidth": 1}, ax=ax)  # mean ± std
        if col in ("L_max", "jacobian_norm"):
            for t in sorted(d["threshold"].dropna().unique()):
                ax.axhline(t, ls="--", color="crimson", lw=1.2, label=f"1 − m = {t:g}")
            if d["threshold"].notna().any():
                ax.legend(loc="best", fontsize=8)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("")
        ax.set_ylabel(col)
        ax.tick_params(axis="x", labelrotation=15, labelsize=8)
    return to_png(fig)


def bound_vs_measured(results: pd.DataFrame, labels: dict[str, str]) -> str:
    """Bound study: one panel per model × ε; per slice (x) the measured ``‖Δx*‖/‖Aᴴγ‖`` (black
    crosses) beside the bound ``1/(1 − L)`` of each L estimator (coloured dots; a triangle at the
    top where the bound is vacuous), log scale. A cross above a dot is a violation of that bound."""
    r = results.copy()
    groups = list(r.groupby(["model", "eps"], sort=False))
    fig, axes, panels, sns = _wrapped(len(groups), 4.2, 3.2)
    estimators = list(dict.fromkeys(r["estimator"]))
    colours = dict(zip(estimators, sns.color_palette("colorblind", len(estimators))))
    for ax, ((model, eps), d) in zip(panels, groups):
        samples = sorted(d["sample"].unique())
        pos = {s: i for i, s in enumerate(samples)}
        finite = d["bound"].replace(np.inf, np.nan)
        top = float(np.nanmax([finite.max(), d["measured"].max()]) * 3) if len(d) else 1.0
        for k, est in enumerate(estimators):
            e = d[d["estimator"] == est]
            x = e["sample"].map(pos).to_numpy() + (k - (len(estimators) - 1) / 2) * 0.08
            b = e["bound"].to_numpy(dtype=float)
            ok = np.isfinite(b)
            ax.scatter(x[ok], b[ok], color=colours[est], s=22, label=f"1/(1 − L_{est})", zorder=2)
            ax.scatter(x[~ok], np.full((~ok).sum(), top), color=colours[est], marker="^", s=26, zorder=2)
        m = d.drop_duplicates("sample")
        ax.scatter(m["sample"].map(pos), m["measured"], color="black", marker="x", s=40, label="measured", zorder=3)
        ax.set_yscale("log")
        ax.set_xticks(range(len(samples)), [str(s) for s in samples])
        ax.set_xlabel("slice")
        ax.set_ylabel("‖Δx*‖ / ‖Aᴴγ‖")
        ax.set_title(f"{labels.get(model, model)}, ε = {eps:g} (▲ vacuous)", fontsize=10)
    if panels:
        panels[0].legend(fontsize=7, loc="best")
    return to_png(fig)


def audit_traces(traces: pd.DataFrame, labels: dict[str, str], colours: dict[str, Any]) -> str:
    """The estimates after each ascent / power step, one panel per estimator, one line per model × slice."""
    t = traces.assign(label=traces["model"].map(lambda m: labels.get(m, m)))
    names = list(dict.fromkeys(t["estimator"]))
    fig, axes, sns = _figure(1, len(names), 3.8, 2.9)
    for ax, name in zip(axes[0], names):
        sns.lineplot(data=t[t["estimator"] == name], x="step", y="value", hue="label", units="sample",
                     estimator=None, palette=colours, lw=1, ax=ax)
        ax.set_title(f"{name} per step")
        if name == "rate_residual":  # a geometric decay: its slope is the rate
            ax.set_yscale("log")
    _legend_once(axes)
    return to_png(fig)


def sweep_tradeoff(results: pd.DataFrame) -> str:
    """The δ trade-off: PSNR, fraction of slices with ``L ≤ T``, init success and adversarial ΔPSNR vs δ."""
    from robustkit.report.runs import as_bool

    r = results.assign(within=as_bool(results["within"]))
    panels = [("psnr", "PSNR (dB) vs δ"), ("within", "fraction with L[H_θ] ≤ T vs δ"),
              ("init_success", "init success vs δ")]
    if "adv_psnr_drop" in r and r["adv_psnr_drop"].notna().any():
        panels.append(("adv_psnr_drop", "adversarial ΔPSNR (dB) vs δ"))
    fig, axes, sns = _figure(1, len(panels), 3.5, 2.9)
    for ax, (col, name) in zip(axes[0], panels):
        sns.lineplot(data=r, x="delta", y=col, errorbar="sd", marker="o", ax=ax)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("δ")
        if col in ("within", "init_success"):
            ax.set_ylim(-0.05, 1.05)
    return to_png(fig)


def false_negatives(results: pd.DataFrame, labels: dict[str, str], colours: dict[str, Any]) -> str:
    """False-negative rate and contrast recovered (mean ± std) vs feature size per model; solid lines
    for random positions, dashed for the adversarial search."""
    r = results.assign(label=results["model"].map(lambda m: labels.get(m, m)),
                       false_negative=results["false_negative"].astype(str).str.lower().eq("true").astype(float))
    fig, axes, sns = _figure(1, 2, 4.6, 3.2)
    for ax, (col, name, bars) in zip(axes[0], (("false_negative", "false-negative rate", None),
                                               ("contrast_recovered", "contrast recovered â/a", "sd"))):
        sns.lineplot(data=r, x="size", y=col, hue="label", style="search", palette=colours, errorbar=bars,
                     marker="o", ax=ax)
        ax.set_title(f"{name} vs feature size")
        ax.set_xlabel("feature size (px)")
        ax.set_xticks(sorted(r["size"].unique()))
        ax.set_ylabel(name)
    axes[0, 0].set_ylim(-0.05, 1.05)
    axes[0, 1].axhline(1.0, ls=":", color="0.4", lw=1)
    _legend_once(axes)
    return to_png(fig)


def shift_panels(results: pd.DataFrame, labels: dict[str, str], colours: dict[str, Any]) -> str:
    """PSNR and SSIM (rows) per condition of each shift axis (columns), mean ± std per model; the
    nominal condition is marked ``(nominal)`` on the axis."""
    r = results.assign(label=results["model"].map(lambda m: labels.get(m, m)))
    axes_order = list(dict.fromkeys(r["axis"]))
    fig, axes, sns = _figure(2, len(axes_order), 3.6, 3.0)
    for j, axis in enumerate(axes_order):
        d = r[r["axis"] == axis]
        nominal = set(d.loc[as_bool(d["nominal"]).fillna(False).astype(bool), "condition"])
        order = list(dict.fromkeys(d["condition"]))
        for i, (metric, name) in enumerate((("psnr", "PSNR (dB)"), ("ssim", "SSIM"))):
            ax = axes[i, j]
            sns.pointplot(data=d, x="condition", y=metric, hue="label", order=order, palette=colours,
                          errorbar="sd", dodge=0.3 if d["label"].nunique() > 1 else False, markersize=4, linewidth=1.2, ax=ax)
            ax.set_xticks(range(len(order)), [f"{c}\n(nominal)" if c in nominal else c for c in order])
            ax.set_title(f"{axis}: {name}")
            ax.set_xlabel(axis)
            ax.set_ylabel(name)
    _legend_once(axes)
    return to_png(fig)


def training_curves(histories: dict[str, list[dict]], colours: dict[str, Any]) -> str:
    """Per epoch: training loss (log), validation PSNR and SSIM and, for DEQ models, the training L[H_θ]."""
    frames = [pd.DataFrame(h).assign(label=label) for label, h in histories.items() if h]
    d = pd.concat(frames, ignore_index=True)
    panels = [(c, n) for c, n in (("train_loss", "training loss"), ("val_psnr", "validation PSNR (dB)"),
                                   ("val_ssim", "validation SSIM"), ("train_L", "training L[H_θ]"))
              if c in d and d[c].notna().any()]
    fig, axes, sns = _figure(1, len(panels), 3.6, 2.8)
    for ax, (col, name) in zip(axes[0], panels):
        sns.lineplot(data=d, x="epoch", y=col, hue="label", palette=colours, marker="o", ax=ax)
        ax.set_title(name, fontsize=10)
        if col == "train_loss":
            ax.set_yscale("log")
    _legend_once(axes)
    return to_png(fig)
