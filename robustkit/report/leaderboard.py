"""The leaderboard: one row per model, built ONLY from the stored runs of a reports folder
(``results.csv`` of complete or partial runs; nothing is recomputed), written as
``leaderboard.csv`` and a sortable ``leaderboard.html`` (docs/studies.md, "Leaderboard").

For each study the newest COMPLETE run holding rows of a model gives that model's numbers, and the
row names the run (``<study>_run`` columns); a failed or interrupted run is used only when no
complete one holds the model, and its name then carries its status, e.g. ``attack-… (interrupted)``.
For the attack columns the newest run that attacked the model adversarially is preferred, so that a
later Gaussian-only run does not blank its adversarial drop.
A study that no run holds leaves its cells empty.

A model is its name AND its weights (``weights_sha256`` in each run's meta.json): runs of two
different networks under one name (``./models/modl-4x`` trained after runs of the shipped
``modl-4x``) are never mixed in one row. The newest weights keep the name; rows of older weights
are labelled ``NAME (weights 1a2b3c4d)``.

=====================  ====================================================================
model, source          model name as the runs stored it; ``zoo``, ``plug-in``, ``imported``,
                       ``baseline`` (``sense``, ``l1-wavelet``) … as the run's meta.json says
psnr, ssim             clean PSNR/SSIM, mean over the attack run's clean slices
slices                 how many slices those means are over (a banner says so when rows differ)
eps                    the attack run's headline ε (largest ≤ 5 %) of the two drops below
adv_psnr_drop          mean PSNR drop of the adversarial attack at ``eps`` (dB)
gauss_psnr_drop        mean PSNR drop of the Gaussian perturbation at ``eps`` (dB)
converged_clean        converged fraction of the clean DEQ solves (attack run; else audit run)
converged_attacked     converged fraction of the adversarial solves at ``eps`` (attack run)
shift_<axis>_drop      ``shift`` run: the largest mean ``psnr_drop`` over the axis' non-nominal
                       conditions (one column per axis found, e.g. ``shift_acceleration_drop``)
false_negative_rate    ``features`` run: mean of ``false_negative`` over its rows
L                      the largest L estimate stored by the newest audit (``L_max``) and bound
                       (estimator ``max``) runs — a lower bound of L[H](x*; δ)
attack_run, …          the run folder each group of numbers comes from (``attack_run``,
                       ``shift_run``, ``features_run``, ``L_run``; ``convergence_run``)
data                   the data of those runs, ``builtin (4×)``; several, ``;``-separated, when
                       the row's runs read different data (a banner then says so)
=====================  ====================================================================
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from robustkit.errors import RobustkitError

CSV = "leaderboard.csv"
HTML = "leaderboard.html"
#: models that are classical reconstructions, not networks.
BASELINES = ("sense", "l1-wavelet")
#: the fixed columns, in order (``shift_<axis>_drop`` columns are inserted before ``false_negative_rate``).
HEAD = ("model", "source", "psnr", "ssim", "slices", "eps", "adv_psnr_drop", "gauss_psnr_drop", "converged_clean",
        "converged_attacked")
TAIL = ("false_negative_rate", "L", "attack_run", "convergence_run", "shift_run", "features_run", "L_run", "data")


def _flag_mean(values: pd.Series) -> float:
    from robustkit.studies.flags import as_bool

    flags = as_bool(values).dropna()
    return float(flags.astype(float).mean()) if len(flags) else math.nan


@dataclass
class StoredRun:
    """What the leaderboard reads of a run folder: its name, study, meta.json and committed results."""

    name: str
    study: str
    meta: dict[str, Any]
    results: pd.DataFrame


def _read_stored(folder: Path) -> StoredRun | None:
    """A run folder as :class:`StoredRun` (``None`` if unusable). Studies the report knows are read
    by :func:`~robustkit.report.runs.load_run` (which checks them); a study it does not know (a
    newer study's run) is read plainly, its rows cut to the committed cells."""
    from robustkit.report.runs import _committed, _read_csv, load_run
    from robustkit.studies import STUDIES

    try:
        config = json.loads((folder / "config.json").read_text())
        study = config.get("study") if isinstance(config, dict) else None
        if study in STUDIES:
            run = load_run(folder)
            return StoredRun(folder.name, study, run.meta, run.results)
        meta = json.loads((folder / "meta.json").read_text())
        results = _committed(folder, folder / "results.csv", _read_csv(folder / "results.csv"), [])
        return StoredRun(folder.name, str(study), meta if isinstance(meta, dict) else {}, results)
    except (RobustkitError, OSError, ValueError, AttributeError, pd.errors.ParserError, UnicodeDecodeError):
        return None


def _stored_runs(root: Path) -> list[StoredRun]:
    """Every usable run of ``root`` with results, newest first (unusable folders are skipped)."""
    from robustkit.report.build import _order_key
    from robustkit.report.runs import is_run

    runs = []
    for folder in sorted((p for p in root.iterdir() if p.is_dir() and is_run(p)), key=_order_key, reverse=True):
        run = _read_stored(folder)
        if run is not None and len(run.results) and "model" in run.results:
            runs.append(run)
    return runs


def _model_meta(run: Any, model: str) -> dict[str, Any] | None:
    """What a run's meta.json recorded of ``model`` (``None`` when it recorded nothing)."""
    return next((m for m in run.meta.get("models", []) if isinstance(m, dict) and m.get("name") == model), None)


def _weights(run: Any, model: str) -> str | None:
    """The weights' sha256 a run recorded for ``model`` (``None`` when it recorded none)."""
    return (_model_meta(run, model) or {}).get("weights_sha256")


def _status(run: Any) -> str:
    return str(run.meta.get("status", "complete"))


def _newest(runs: list[Any], study: str, model: str, weights: str | None = None, prefer=None):
    """``(run, rows of model)`` of the newest complete run of ``study`` holding the model with these
    weights (else the newest such run of any status), else ``(None, None)``; among them, those whose
    rows satisfy ``prefer(rows)`` first when it is given."""
    found = [(run, run.results[run.results["model"].astype(str) == model]) for run in runs
             if run.study == study and _weights(run, model) == weights]
    found = [(run, rows) for run, rows in found if len(rows)]
    if prefer is not None:
        found = sorted(found, key=lambda item: not prefer(item[1]))  # stable: newest first within each group
    for run, rows in found:
        if _status(run) == "complete":
            return run, rows
    return found[0] if found else (None, None)


def _attacked(rows: pd.DataFrame) -> bool:
    """Whether an attack run's rows of a model hold the adversarial attack."""
    return bool((rows["kind"] == "adversarial").any()) if "kind" in rows else False


def _data_label(run: Any) -> str:
    """``builtin (4×)``: the data a run read and its acceleration, from its meta.json."""
    data = run.meta.get("data")
    if not isinstance(data, dict):
        return "?"
    accel = data.get("accel")
    return f"{data.get('name', '?')}" + (f" ({accel:g}×)" if isinstance(accel, (int, float)) else "")


def _run_name(run: Any) -> str:
    """The run's folder name, with its status when it did not complete."""
    return run.name if _status(run) == "complete" else f"{run.name} ({_status(run)})"


def _source(runs: list[Any], model: str) -> str:
    if model in BASELINES:
        return "baseline"
    for run in runs:
        m = _model_meta(run, model)
        if m is not None:
            return str(m.get("source", "zoo"))
    return ""


def _attack(run, rows: pd.DataFrame) -> dict[str, Any]:
    from robustkit.report.conclusions import headline_eps

    out: dict[str, Any] = {"attack_run": _run_name(run)}
    clean = rows[rows["kind"] == "clean"]
    if len(clean):
        out.update(psnr=float(clean["psnr"].mean()), ssim=float(clean["ssim"].mean()))
    if "sample" in rows:
        out["slices"] = int(rows["sample"].nunique())
    elif "psnr_clean" in rows:
        out["psnr"] = float(rows["psnr_clean"].mean())
    if "converged" in clean and len(clean):
        out["converged_clean"] = _flag_mean(clean["converged"])
    eps = headline_eps(rows.loc[rows["kind"] != "clean", "eps"])
    if eps is not None:
        at = rows[(rows["eps"] - eps).abs() < 1e-12]
        out["eps"] = eps
        for kind, column in (("adversarial", "adv_psnr_drop"), ("gaussian", "gauss_psnr_drop")):
            k = at[at["kind"] == kind]
            if len(k):
                out[column] = float(k["psnr_drop"].mean())
        adv = at[at["kind"] == "adversarial"]
        if "converged" in adv and len(adv):
            out["converged_attacked"] = _flag_mean(adv["converged"])
    return out


def _shift(run, rows: pd.DataFrame) -> dict[str, Any]:
    from robustkit.studies.flags import as_bool

    out: dict[str, Any] = {"shift_run": _run_name(run)}
    nominal = as_bool(rows["nominal"]).fillna(False).astype(bool) if "nominal" in rows else pd.Series(False, index=rows.index)
    off = rows[~nominal]
    for axis, a in off.groupby("axis", sort=False):
        out[f"shift_{axis}_drop"] = float(a.groupby("condition")["psnr_drop"].mean().max())
    return out


def _largest_L(runs: list[Any], model: str, weights: str | None) -> tuple[dict[str, Any], list[Any]]:
    """``({"L", "L_run"}, the runs read)``: the largest stored L estimate of the newest audit and bound runs."""
    from robustkit.report.tables import largest_lower_bound

    best, where, read = math.nan, [], []
    for study in ("audit", "bound"):
        run, rows = _newest(runs, study, model, weights)
        if run is None:
            continue
        values = largest_lower_bound(rows) if study == "audit" else rows.loc[rows["estimator"] == "max", "L"]
        values = values.astype(float).dropna()
        if len(values):
            best = float(values.max()) if math.isnan(best) else max(best, float(values.max()))
            where.append(_run_name(run))
            read.append(run)
    return ({"L": best, "L_run": " ".join(where)} if where else {}), read


def leaderboard_frame(root: str | Path) -> pd.DataFrame:
    """One row per model found in the runs of ``root`` (columns in the module docstring)."""
    root = Path(root)
    runs = _stored_runs(root)
    # one entry per (name, weights), first seen oldest first; the newest weights of a name keep the name
    keys = list(dict.fromkeys((str(m), _weights(run, str(m))) for run in reversed(runs) for m in run.results["model"].unique()))
    newest = {name: weights for name, weights in keys}  # later (newer) entries overwrite
    rows, unfinished = [], []
    for model, weights in keys:
        label = model if newest[model] == weights else f"{model} (weights {str(weights)[:8]})"
        row: dict[str, Any] = {"model": label, "source": _source(runs, model)}
        used = []  # the runs whose numbers the row shows
        run, r = _newest(runs, "attack", model, weights, prefer=_attacked)
        if run is not None:
            row.update(_attack(run, r))
            used.append(run)
            if "converged_clean" in row:
                row["convergence_run"] = _run_name(run)
        if not isinstance(row.get("converged_clean"), float) or math.isnan(row["converged_clean"]):
            run, r = _newest(runs, "audit", model, weights)
            if run is not None and "converged" in r and not math.isnan(_flag_mean(r["converged"])):
                row.update(converged_clean=_flag_mean(r["converged"]), convergence_run=_run_name(run))
                used.append(run)
        run, r = _newest(runs, "shift", model, weights)
        if run is not None and {"axis", "condition", "psnr_drop"} <= set(r):
            row.update(_shift(run, r))
            used.append(run)
        run, r = _newest(runs, "features", model, weights)
        if run is not None and "false_negative" in r:
            row.update(false_negative_rate=_flag_mean(r["false_negative"]), features_run=_run_name(run))
            used.append(run)
        found, read = _largest_L(runs, model, weights)
        row.update(found)
        row["data"] = "; ".join(sorted({_data_label(run) for run in used + read}))
        rows.append(row)
        if any(_status(run) != "complete" for run in used + read):  # named in a banner
            unfinished.append(label)
    shift_cols = sorted({c for row in rows for c in row if c.startswith("shift_") and c.endswith("_drop")})
    frame = pd.DataFrame(rows, columns=[*HEAD, *shift_cols, *TAIL])
    frame.attrs["unfinished"] = unfinished  # rows with numbers from a run that did not complete
    # models whose card, as a run recorded it, holds a failed convergence gate (a banner names them)
    # and MnM-MOL models that leak towards a frozen MoDL, whose robustness is about that MoDL's
    recorded = [(str(m), _model_meta(run, str(m)) or {}) for run in runs for m in run.results["model"].unique()]
    frame.attrs["gate_failed"] = sorted({m for m, meta in recorded if meta.get("gate_failed")})
    frame.attrs["modl_anchor"] = sorted({m for m, meta in recorded if meta.get("anchor") == "modl"})
    return frame


# ------------------------------------------------------------------ HTML

#: sorts the table by the clicked column (numbers numerically, empty cells last); no network, no library.
SCRIPT = """
document.querySelectorAll('table.sortable th').forEach(function (th, col) {
  th.addEventListener('click', function () {
    var table = th.closest('table'), body = table.tBodies[0], rows = Array.from(body.rows);
    var up = th.getAttribute('aria-sort') !== 'ascending';
    table.querySelectorAll('th').forEach(function (h) { h.removeAttribute('aria-sort'); });
    th.setAttribute('aria-sort', up ? 'ascending' : 'descending');
    function key(row) { var v = row.cells[col].getAttribute('data-value'); return v === '' ? null : v; }
    rows.sort(function (a, b) {
      var x = key(a), y = key(b);
      if (x === null || y === null) { return (x === null) - (y === null); }
      var nx = parseFloat(x), ny = parseFloat(y), c;
      c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
      return up ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
"""

HEADERS = {
    "model": "model", "source": "source", "psnr": "clean PSNR (dB)", "ssim": "clean SSIM", "slices": "slices", "eps": "ε",
    "adv_psnr_drop": "adversarial ΔPSNR (dB)", "gauss_psnr_drop": "Gaussian ΔPSNR (dB)",
    "converged_clean": "clean solves converged", "converged_attacked": "adversarial solves converged",
    "false_negative_rate": "false-negative rate", "L": "largest L estimate",
    "attack_run": "attack run", "convergence_run": "convergence from", "shift_run": "shift run",
    "features_run": "features run", "L_run": "L from", "data": "data",
}


def _cell(value: Any, column: str) -> tuple[str, str]:
    """``(data-value, shown text)`` of one cell; empty for a missing number."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "", "—"
    if isinstance(value, float):
        if column in ("converged_clean", "converged_attacked", "false_negative_rate"):
            return repr(value), f"{100 * value:.0f} %"
        if column == "eps":
            return repr(value), f"{100 * value:.4g} %"
        if column == "slices":
            return repr(value), f"{value:.0f}"
        return repr(value), f"{value:.4f}" if column in ("ssim", "L") else f"{value:.2f}"
    return str(value), str(value)


def leaderboard_html(frame: pd.DataFrame, root: Path) -> str:
    from robustkit.report.html import CSS, GENERATOR, esc

    script_hash = base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()
    csp = f"default-src 'none'; style-src 'unsafe-inline'; script-src 'sha256-{script_hash}'"
    head = "".join(f"<th title=\"{esc(c)} — click to sort\">{esc(HEADERS.get(c, c.replace('_', ' ')))}</th>"
                   for c in frame.columns)
    body = []
    for _, row in frame.iterrows():
        cells = []
        for c in frame.columns:
            value, text = _cell(row[c], c)
            cls = ' class="num"' if isinstance(row[c], float) else ""
            cells.append(f"<td{cls} data-value=\"{esc(value)}\">{esc(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    eps = sorted({float(e) for e in frame["eps"].dropna()}) if len(frame) else []
    note = (f"Drops at the attack run's ε = {', '.join(f'{100 * e:.4g} %' for e in eps)}. " if eps else "")
    empty = "" if len(frame) else "<p class=\"banner info\">No stored study run with results in this folder yet.</p>"
    unconverged = [str(row["model"]) for _, row in frame.iterrows()
                   if any(isinstance(row.get(c), float) and row[c] < 1 for c in ("converged_clean", "converged_attacked"))]
    if unconverged:  # the numbers of such a row are not all of fixed points: say so above the table
        empty += ("<p class=\"banner warning\">Not all solves converged for " + esc(", ".join(unconverged)) + ": some of "
                  "their numbers are not of a fixed point (see the converged columns and the runs' reports).</p>")
    counts = sorted({int(n) for n in frame["slices"].dropna()}) if "slices" in frame else []
    if len(counts) > 1:
        empty += ("<p class=\"banner warning\">The rows' attack numbers are means over different numbers of slices ("
                  + esc(", ".join(map(str, counts))) + "; the slices column): compare rows of equal slices.</p>")
    if frame.attrs.get("gate_failed"):
        empty += ("<p class=\"banner warning\">" + esc(", ".join(frame.attrs["gate_failed"])) + " failed the convergence "
                  "gate when trained (their cards say gate.passed = false): read the converged columns.</p>")
    if frame.attrs.get("modl_anchor"):
        empty += ("<p class=\"banner info\">" + esc(", ".join(frame.attrs["modl_anchor"])) + " leak towards a frozen MoDL "
                  "(their anchor): where F_θ does not act their fixed point takes the MoDL's image, so their robustness "
                  "numbers are about that MoDL's (docs/training.md).</p>")
    mixed = [str(row["model"]) for _, row in frame.iterrows() if ";" in str(row.get("data", ""))]
    if mixed:
        empty += ("<p class=\"banner warning\">The numbers of " + esc(", ".join(mixed)) + " come from runs on different "
                  "data (the data column): they are not one measurement.</p>")
    partial = frame.attrs.get("unfinished", [])
    if partial:
        empty += ("<p class=\"banner warning\">Numbers from runs that did not complete (their status is in the run "
                  "column) for " + esc(", ".join(partial)) + ".</p>")
    html = (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<meta http-equiv=\"Content-Security-Policy\" content=\"{csp}\">\n"
        f"{GENERATOR}<title>robustkit leaderboard — {esc(root.name)}</title>\n<style>{CSS} th {{ cursor: pointer; }}</style>\n"
        "</head>\n<body>\n<main>\n"
        f"<h1>Leaderboard</h1>\n<p class=\"sub\">Built only from the stored runs in {esc(root)}; each number's run is named "
        f"in the run columns. {esc(note)}Empty cells: no run of that study holds the model. L is the largest stored "
        "lower bound of L[H](x*; δ). Click a header to sort; the same numbers are in "
        f"<a href=\"{CSV}\">{CSV}</a>.</p>\n{empty}"
        f"<div class=\"wide\"><table class=\"sortable\">\n<thead><tr>{head}</tr></thead>\n<tbody>\n"
        + "\n".join(body) + "\n</tbody></table></div>\n"
        f"<script>{SCRIPT}</script>\n</main>\n</body>\n</html>\n"
    )
    return html


def build_leaderboard(reports_root: str | Path) -> tuple[Path, Path, pd.DataFrame]:
    """Write ``leaderboard.csv`` and ``leaderboard.html`` into ``reports_root``; returns both paths and
    the frame. A missing folder, a file, a folder without study runs, or a ``leaderboard.*`` that
    robustkit did not write is a :class:`RobustkitError`, and nothing is written."""
    from robustkit.io import write_text

    root = Path(reports_root)
    if not root.exists():
        raise RobustkitError(f"reports folder {root} does not exist; pass the folder holding the run folders (e.g. reports)")
    if not root.is_dir():
        raise RobustkitError(f"{root} is a file, not a reports folder; pass the folder holding the run folders (e.g. reports)")
    from robustkit.io import check_replaceable
    from robustkit.report.html import OWN_MARK
    from robustkit.report.runs import run_folders

    if not run_folders(root):
        raise RobustkitError(f"no study runs in {root}; run a study first (e.g. robustkit attack) or pass the folder "
                             "holding the run folders (e.g. reports)")
    csv_path, html_path = root / CSV, root / HTML
    fix = "move it, or pass another reports folder"
    check_replaceable(csv_path, ",".join(HEAD[:3]), fix)
    check_replaceable(html_path, OWN_MARK, fix)
    frame = leaderboard_frame(root)
    write_text(csv_path, frame.to_csv(index=False))
    write_text(html_path, leaderboard_html(frame, root))
    return csv_path, html_path, frame

