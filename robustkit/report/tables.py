"""Summary frames of each study's tidy results, and how their columns are shown.

Every table on a page is one of these frames: the same frame is written to ``tables/<name>.csv``
(numbers as numbers, full precision) and rendered to HTML, where a ``<col>_mean`` / ``<col>_std``
pair becomes one ``mean ± std`` cell and a count column becomes ``k/n``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from robustkit.report.runs import as_bool


@dataclass
class Table:
    """A frame to show: ``name`` (CSV file stem), ``title``, ``caption``; ``counts``: columns shown as
    ``k/n`` against column ``n``; ``percent``: columns shown as percentages (values in [0, 1]);
    ``labels``: model folder → display name for the ``model`` column."""

    name: str
    title: str
    frame: pd.DataFrame
    caption: str = ""
    counts: tuple[str, ...] = ()
    percent: tuple[str, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)  # model folder → display name
    csv: Path | None = None  # where the frame was written (set by the page builder)


#: column stem → header text.
HEADERS = {
    "model": "model", "kind": "kind", "eps": "ε", "n": "slices", "psnr": "PSNR (dB)", "ssim": "SSIM",
    "nmse": "NMSE", "psnr_drop": "ΔPSNR (dB)", "amplification": "amplification", "perturbation": "‖γ‖/‖b‖",
    "iterations": "iterations", "converged": "converged", "start": "start", "radius": "radius r",
    "same_fixed_point": "same fixed point", "hit_cap": "hit the cap", "residual": "final residual",
    "distance": "‖x_end − x*‖/‖x*‖", "contraction": "solver residual ratio per iteration", "delta": "δ", "threshold": "T = 1 − m",
    "L": "L[H_θ] (ascent)", "L_slow": "L[H_θ] (slow mode)", "L_max": "largest lower bound of L[H_θ]",
    "passes": "L ≤ T", "L_top": "L[H_θ] (top-singular pair)", "rate_max": "largest observed rate",
    "rate_exceeds_L": "rate > largest L",
    "jacobian_norm": "‖J_H(x*)‖₂", "jacobian_converged": "power it. converged", "L_own": "L[H_θ](x*; δ)",
    "L_common": "L[H_θ](x*; common δ)", "common_delta": "common δ", "within": "L ≤ T",
    "init_success": "init success", "sense_in_ball": "SENSE start in ball", "adv_eps": "adv. ε",
    "adv_psnr_drop": "adv. ΔPSNR (dB)", "attack_loss": "attack loss", "epochs": "epochs",
    "train_loss": "final train loss", "val_psnr": "final val. PSNR (dB)", "val_psnr_best": "best val. PSNR (dB)",
    "val_ssim": "final val. SSIM", "train_L": "final train L[H_θ]",
    "search": "search", "size": "size (px)", "false_negative": "false negatives", "fn_rate": "false-negative rate",
    "contrast_recovered": "contrast recovered", "error_feature": "error in feature region",
    "estimator": "L estimator", "m_eff": "m_eff = 1 − L", "measured": "measured ‖Δx*‖/‖Aᴴγ‖",
    "bound_median": "bound 1/m_eff (median)", "holds": "holds", "vacuous": "vacuous", "violated": "violated",
    "violated_converged": "violated, both solves converged", "in_ball": "x*(b+γ) in the ball",
    "adv_converged": "attacked solve converged",
    "candidates": "candidates searched", "spikes": "spikes", "angle": "worst |angle| (°)",
    "shift_px": "shift (px)", "lines_fraction": "lines moved", "map_error": "‖S̃ − S‖/‖S‖",
    "axis": "axis", "condition": "condition",
    "nominal": "nominal",
}

#: column stem → format of one number.
FORMATS = {
    "psnr": "{:.2f}", "psnr_drop": "{:.2f}", "adv_psnr_drop": "{:.2f}", "ssim": "{:.4f}", "nmse": "{:.2e}",
    "residual": "{:.2e}", "distance": "{:.2e}", "attack_loss": "{:.3g}", "amplification": "{:.3f}",
    "L": "{:.4f}", "L_slow": "{:.4f}", "L_max": "{:.4f}", "L_top": "{:.4f}", "rate_max": "{:.4f}", "L_own": "{:.4f}", "L_common": "{:.4f}",
    "jacobian_norm": "{:.4f}", "threshold": "{:.6g}", "contraction": "{:.3f}", "iterations": "{:.1f}",
    "perturbation": "{:.3g}", "eps": "{:g}", "delta": "{:g}", "radius": "{:g}", "adv_eps": "{:g}",
    "common_delta": "{:g}", "train_loss": "{:.3e}", "val_psnr": "{:.2f}", "val_psnr_best": "{:.2f}",
    "val_ssim": "{:.4f}", "train_L": "{:.4f}", "init_success": "{:.2f}",
    "contrast_recovered": "{:.3f}", "error_feature": "{:.3f}",
    "m_eff": "{:.4f}", "measured": "{:.3f}", "bound_median": "{:.3g}",
    "angle": "{:.3g}", "shift_px": "{:.3g}", "lines_fraction": "{:.3g}", "map_error": "{:.3g}",
}


def fmt(value, column: str) -> str:
    """One number as shown in a table cell (``—`` for missing)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        spec = FORMATS.get(column)
        if spec is None:
            return str(int(value)) if float(value).is_integer() else f"{value:.4g}"
        return spec.format(float(value))
    return str(value)


def _mean_std(groups, columns: list[str]) -> pd.DataFrame:
    parts = []
    for c in columns:
        parts.append(groups[c].mean().rename(f"{c}_mean"))
        parts.append(groups[c].std(ddof=1).rename(f"{c}_std"))
    return pd.concat(parts, axis=1)


def _n(groups) -> pd.Series:
    return groups.size().rename("n")


def model_order(frame: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    """Rows sorted by the run's model order (then as they are), index reset."""
    rank = {m: i for i, m in enumerate(order)}
    key = frame["model"].map(lambda m: rank.get(m, len(rank)))
    return frame.assign(_rank=key).sort_values("_rank", kind="stable").drop(columns="_rank").reset_index(drop=True)


def attack_summary(results: pd.DataFrame) -> pd.DataFrame:
    """Per model × kind × ε: ``n``, ``psnr``, ``ssim``, ``nmse``, ``psnr_drop``, ``amplification``
    (mean and sample std, ddof = 1, over slices; NaN for one slice), mean ``perturbation`` and ``iterations``, count ``converged``."""
    r = results.copy()
    for c in ("nmse", "amplification", "perturbation", "iterations", "converged"):
        if c not in r:
            r[c] = np.nan
    r["converged"] = as_bool(r["converged"])
    g = r.groupby(["model", "kind", "eps"], sort=False)
    out = pd.concat(
        [_n(g), _mean_std(g, ["psnr", "ssim", "nmse", "psnr_drop", "amplification"]),
         g["perturbation"].mean(), g["iterations"].mean(), g["converged"].sum(min_count=1)],
        axis=1,
    ).reset_index()
    return out.sort_values(["eps", "kind"], kind="stable").reset_index(drop=True)


def realistic_summary(results: pd.DataFrame) -> pd.DataFrame:
    """Per model × realistic kind (spikes, motion, coil-map) × ε: ``n``, ``psnr_drop`` (mean and std),
    the mean applied ``perturbation`` ``‖γ‖/‖b‖`` and ``attack_loss`` of the kept candidates, the mean of
    the family's parameters (``angle`` as ``|angle|``), ``candidates`` and the count ``converged``."""
    from robustkit.choices import PERTURBATION_FAMILIES

    r = results[results["kind"].isin(PERTURBATION_FAMILIES)].copy()
    params = ["candidates", "spikes", "angle", "shift_px", "lines_fraction", "map_error"]
    for c in ("perturbation", "attack_loss", "converged", *params):
        if c not in r:
            r[c] = np.nan
    r["angle"] = r["angle"].abs()
    r["converged"] = as_bool(r["converged"])
    g = r.groupby(["model", "kind", "eps"], sort=False)
    out = pd.concat([_n(g), _mean_std(g, ["psnr_drop"]), g[["perturbation", "attack_loss", *params]].mean(),
                     g["converged"].sum(min_count=1)], axis=1).reset_index()
    return out.sort_values(["eps", "kind"], kind="stable").reset_index(drop=True)


def start_label(start: str, radius: float) -> str:
    """``ball r=0.5`` for ball starts, the start's name otherwise."""
    return f"ball r={radius:g}" if start == "ball" and not pd.isna(radius) else str(start)


def contraction_rates(traces: pd.DataFrame) -> pd.DataFrame:
    """Per model × slice × start × radius: the geometric mean of ``r_{k+1}/r_k`` over the residual trace."""
    t = traces.copy()
    t["radius"] = t["radius"].astype(float)
    keys = ["model", "sample", "start", "radius"]

    def rate(s: pd.DataFrame) -> float:
        r = s.sort_values("iteration")["residual"].to_numpy(float)
        r = r[np.isfinite(r) & (r > 0)]
        return float(np.exp(np.mean(np.diff(np.log(r))))) if len(r) > 1 else float("nan")

    rows = [(*k, rate(s)) for k, s in t.groupby(keys, dropna=False, sort=False)]
    return pd.DataFrame(rows, columns=[*keys, "contraction"])


def init_summary(results: pd.DataFrame, traces: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per model × start × radius: ``n``, counts ``same_fixed_point``, ``converged``, ``hit_cap``
    (iterations ≥ cap), mean ± std ``iterations``, ``distance``, ``psnr``, max ``residual`` and the
    mean ``contraction`` rate from the traces."""
    r = results.copy()
    r["radius"] = r["radius"].astype(float)
    for c in ("same_fixed_point", "converged"):
        r[c] = as_bool(r[c])
    r["hit_cap"] = (r["iterations"] >= r["cap"]).astype(float) if "cap" in r else np.nan
    for c in ("distance", "psnr"):
        if c not in r:
            r[c] = np.nan
    if traces is not None and len(traces) and {"model", "sample", "start", "radius", "iteration", "residual"} <= set(traces):
        r = r.merge(contraction_rates(traces), on=["model", "sample", "start", "radius"], how="left")
    else:
        r["contraction"] = np.nan
    g = r.groupby(["model", "start", "radius"], sort=False, dropna=False)
    out = pd.concat(
        [_n(g), g["same_fixed_point"].sum(), g["converged"].sum(), g["hit_cap"].sum(min_count=1),
         _mean_std(g, ["iterations", "distance", "psnr"]), g["residual"].max(), g["contraction"].mean()],
        axis=1,
    ).reset_index()
    return out


def largest_lower_bound(results: pd.DataFrame) -> pd.Series:
    """Per row, the largest lower bound of ``L[H_θ]`` the run stored: ``L_max`` (every estimator),
    or for runs written before it existed the larger of ``L`` and ``L_slow``."""
    if "L_max" in results:
        return results["L_max"].astype(float)
    return results[[c for c in ("L", "L_slow") if c in results]].max(axis=1)


def audit_summary(results: pd.DataFrame) -> pd.DataFrame:
    """Per model: ``n``, δ, ``threshold``, mean ± std ``L``, ``L_slow``, ``L_top``,
    ``jacobian_norm``, ``amplification``; ``L_max`` (the largest lower bound over slices, see
    :func:`largest_lower_bound`); ``rate_max`` (largest observed contraction rate); counts
    ``passes`` (NaN for models without the constraint), ``jacobian_converged``, ``rate_exceeds_L``
    and ``converged`` (the solve at ``x*``)."""
    r = results.copy()
    for c in ("delta", "jacobian_norm", "jacobian_converged", "L_top", "rate", "rate_exceeds_L", "converged"):
        if c not in r:
            r[c] = np.nan
    for c in ("passes", "jacobian_converged", "rate_exceeds_L", "converged"):
        r[c] = as_bool(r[c])
    r["L_max"] = largest_lower_bound(r)
    g = r.groupby("model", sort=False)
    out = pd.concat(
        [_n(g), g["delta"].first(), g["threshold"].first(),
         _mean_std(g, ["L", "L_slow", "L_top"]), _mean_std(g, ["jacobian_norm"]), g["jacobian_converged"].sum(min_count=1),
         g["L_max"].max(), g["passes"].sum(min_count=1), g["rate"].max().rename("rate_max"),
         g["rate_exceeds_L"].sum(min_count=1), g["converged"].sum(min_count=1), _mean_std(g, ["amplification"])],
        axis=1,
    ).reset_index()
    return out


def sweep_summary(results: pd.DataFrame) -> pd.DataFrame:
    """Per model (one δ each): ``n``, δ, mean ± std ``psnr``, ``ssim``, ``L_own``, ``L_common``,
    ``adv_psnr_drop``; counts ``within`` and ``sense_in_ball``; mean ``init_success``; sorted by δ."""
    r = results.copy()
    for c in ("L_own", "L_common", "adv_psnr_drop", "sense_in_ball", "threshold", "common_delta", "adv_eps"):
        if c not in r:
            r[c] = np.nan
    r["within"] = as_bool(r["within"])
    r["sense_in_ball"] = as_bool(r["sense_in_ball"])
    g = r.groupby(["model", "delta"], sort=False)
    out = pd.concat(
        [_n(g), g["threshold"].first(), _mean_std(g, ["psnr", "ssim", "L_own"]), g["common_delta"].first(),
         _mean_std(g, ["L_common"]), g["within"].sum(min_count=1), g["init_success"].mean(),
         g["sense_in_ball"].sum(min_count=1), g["adv_eps"].first(), _mean_std(g, ["adv_psnr_drop"])],
        axis=1,
    ).reset_index()
    return out.sort_values("delta", kind="stable").reset_index(drop=True)


def features_summary(results: pd.DataFrame) -> pd.DataFrame:
    """Per model × search × size: ``n`` features, ``false_negative`` (count) and ``fn_rate`` (fraction),
    ``contrast_recovered`` and ``error_feature`` (mean and std over features), mean ``iterations``,
    count ``converged`` (NaN for unrolled models)."""
    r = results.copy()
    r["false_negative"] = as_bool(r["false_negative"]).astype(float)
    r["converged"] = as_bool(r["converged"])
    g = r.groupby(["model", "search", "size"], sort=False)
    out = pd.concat([_n(g), g["false_negative"].sum(), g["false_negative"].mean().rename("fn_rate"),
                     _mean_std(g, ["contrast_recovered", "error_feature"]), g["iterations"].mean(),
                     g["converged"].sum(min_count=1)], axis=1).reset_index()
    return out


def shift_summary(results: pd.DataFrame) -> pd.DataFrame:
    """Per model × axis × condition (in the run's order): ``n``, ``nominal``, mean ± std ``psnr``,
    ``ssim``, ``psnr_drop``; mean ``iterations``; count ``converged`` (NaN for unrolled models)."""
    r = results.copy()
    for c in ("iterations", "converged"):
        if c not in r:
            r[c] = np.nan
    r["converged"] = as_bool(r["converged"])
    r["nominal"] = as_bool(r["nominal"]).fillna(False).astype(bool)
    g = r.groupby(["model", "axis", "condition"], sort=False)
    return pd.concat(
        [_n(g), g["nominal"].first(), _mean_std(g, ["psnr", "ssim", "psnr_drop"]), g["iterations"].mean(),
         g["converged"].sum(min_count=1)],
        axis=1,
    ).reset_index()


def training_summary(histories: dict[str, list[dict]]) -> pd.DataFrame:
    """Per zoo model: epochs, final train loss, final and best validation PSNR/SSIM (from card histories)."""
    rows = []
    for name, hist in histories.items():
        h = pd.DataFrame(hist)
        if h.empty:
            continue
        last = h.iloc[-1]
        rows.append({
            "model": name,
            "epochs": int(h["epoch"].max()) if "epoch" in h else len(h),
            "train_loss": float(last.get("train_loss", np.nan)),
            "val_psnr": float(last.get("val_psnr", np.nan)),
            "val_psnr_best": float(h["val_psnr"].max()) if "val_psnr" in h else np.nan,
            "val_ssim": float(last.get("val_ssim", np.nan)),
            "train_L": float(last.get("train_L", np.nan)),
        })
    return pd.DataFrame(rows)


def bound_summary(results: pd.DataFrame) -> pd.DataFrame:
    """Per model × ε × estimator (bound study): ``n``, δ, mean ± std ``L``, ``m_eff`` and
    ``measured``, the median ``bound`` (``inf`` where vacuous), counts ``holds``, ``vacuous``,
    ``violated``, ``violated_converged`` (violated with both solves converged: a proof), ``in_ball``,
    ``converged`` and ``adv_converged``."""
    r = results.copy()
    for c in ("in_ball", "converged", "adv_converged"):
        r[c] = as_bool(r[c]) if c in r else np.nan
    for status in ("holds", "vacuous", "violated"):
        r[status] = r["status"] == status
    r["violated_converged"] = r["violated"] & (r["converged"] == True) & (r["adv_converged"] == True)  # noqa: E712 - NaN-safe
    g = r.groupby(["model", "eps", "estimator"], sort=False)
    out = pd.concat(
        [_n(g), g["delta"].first(), _mean_std(g, ["L", "m_eff", "measured"]), g["bound"].median().rename("bound_median"),
         g[["holds", "vacuous", "violated", "violated_converged", "in_ball"]].sum(),
         g["converged"].sum(min_count=1), g["adv_converged"].sum(min_count=1)],
        axis=1,
    ).reset_index()
    return out
