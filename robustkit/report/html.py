"""HTML of the report pages, written by hand: one self-contained file per page (inline CSS, figures
as ``data:image/png;base64`` URIs, a Content-Security-Policy that forbids any network request), every
user string (model names, paths, config values, messages) passed through :func:`esc`."""

from __future__ import annotations

import html
import json
import math
import numbers
import os
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import quote

from robustkit.report.conclusions import slices
from robustkit.report.sections import (
    STUDY_TITLES,
    Figure,
    Note,
    RunReport,
    Section,
    raw_files,
)
from robustkit.report.tables import HEADERS, Table, fmt

#: nothing may be fetched: images are data: URIs, styles inline, no scripts.
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1b1f24; margin: 0; background: #f6f7f9; }
main { max-width: 1250px; margin: 0 auto; padding: 1.2em 2em 3em; background: #fff; }
h1 { font-size: 1.6em; margin: .3em 0 .2em; } h2 { font-size: 1.3em; margin-top: 1.6em; border-bottom: 1px solid #dde; }
h3 { font-size: 1.1em; margin-top: 1.3em; } .sub { color: #57606a; margin: 0 0 1em; }
.conclusion { background: #eef6ee; border-left: 5px solid #2f855a; padding: .6em 1.2em; margin: 1em 0; }
.conclusion li { margin: .25em 0; }
.banner { padding: .6em 1em; margin: .6em 0; border-radius: 4px; }
.warning { background: #fff4ce; border: 1px solid #e0b400; } .error { background: #fde8e8; border: 1px solid #d33; }
.info { background: #eef3fb; border: 1px solid #9ab; }
figure { margin: 1em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #e3e5e8; }
figcaption, .caption { color: #444; font-size: .9em; margin: .3em 0 1em; }
table { border-collapse: collapse; font-size: .88em; margin: .5em 0; }
th, td { border: 1px solid #d8dbe0; padding: .25em .55em; } th { background: #f0f2f5; text-align: left; vertical-align: bottom; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.wide { overflow-x: auto; } pre { background: #f6f8fa; padding: .6em; overflow-x: auto; font-size: .85em; }
nav ul { columns: 2; } .nowrap { white-space: nowrap; } code { background: #f0f2f5; padding: 0 .25em; }
"""


def esc(value: Any) -> str:
    """Any user-supplied value as HTML text (``<``, ``>``, ``&``, quotes escaped)."""
    return html.escape(str(value), quote=True)


def href(target: Path, page_dir: Path) -> str:
    """A relative, URL-quoted and HTML-escaped link from a page in ``page_dir`` to ``target``."""
    rel = os.path.relpath(Path(target).resolve(), Path(page_dir).resolve())
    return esc(quote(Path(rel).as_posix(), safe="/"))


#: what every page robustkit writes carries in its head; a page without "robustkit" there is not
#: robustkit's, and is never replaced (:func:`robustkit.io.check_replaceable`).
OWN_MARK = "robustkit"
GENERATOR = f"<meta name=\"generator\" content=\"{OWN_MARK}\">\n"


def document(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"{GENERATOR}<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n{body}\n</main>\n</body>\n</html>\n"
    )


# ------------------------------------------------------------------ blocks
def _is_nan(v: Any) -> bool:
    return isinstance(v, float) and math.isnan(v)


def table_html(t: Table, page_dir: Path) -> str:
    """The frame as an HTML table: ``x_mean``/``x_std`` pairs as ``mean ± std``, counts as ``k/n``."""
    f = t.frame
    shown: list[tuple[str, str, str]] = []  # (stem, how, column)
    for c in f.columns:
        if c.endswith("_std") and f"{c[:-4]}_mean" in f:
            continue
        if c.endswith("_mean") and f"{c[:-5]}_std" in f:
            shown.append((c[:-5], "pm", c))
        else:
            shown.append((c, "count" if c in t.counts else "percent" if c in t.percent else "plain", c))
    head = "".join(
        f"<th>{esc(HEADERS.get(stem, stem))}{'<br><small>mean ± std</small>' if how == 'pm' else ''}</th>"
        for stem, how, _ in shown
    )
    body = []
    for _, row in f.iterrows():
        cells = []
        for stem, how, col in shown:
            v = row[col]
            if how == "pm":
                m, s = row[col], row[f"{stem}_std"]
                text = "—" if _is_nan(m) else fmt(m, stem) if _is_nan(s) else f"{fmt(m, stem)} ± {fmt(s, stem)}"
            elif how == "count":
                text = "—" if _is_nan(v) else f"{int(v)}/{int(row['n'])}" if "n" in row else fmt(v, stem)
            elif how == "percent":
                text = "—" if _is_nan(v) else f"{100 * float(v):.0f} %"
            elif stem == "model":
                text = t.labels.get(v, v)
            else:
                text = fmt(v, stem)
            numeric = how != "plain" or isinstance(v, numbers.Real) and not isinstance(v, bool)
            cells.append(f"<td class=\"num\">{esc(text)}</td>" if numeric else f"<td>{esc(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    link = f" <a href=\"{href(t.csv, page_dir)}\">CSV</a>" if t.csv is not None else ""
    return (
        f"<h3>{esc(t.title)}</h3>\n<div class=\"wide\"><table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n"
        + "\n".join(body)
        + f"\n</tbody></table></div>\n<p class=\"caption\">{esc(t.caption)}{link}</p>"
    )


def figure_html(fig: Figure) -> str:
    return (f"<figure>\n<img src=\"data:image/png;base64,{fig.png}\" alt=\"{esc(fig.title)}\">\n"
            f"<figcaption>{esc(fig.caption)}</figcaption>\n</figure>")


def note_html(note: Note) -> str:
    return f"<div class=\"banner {esc(note.level)}\">{esc(note.text)}</div>"


def block_html(block, page_dir: Path) -> str:
    if isinstance(block, Figure):
        return figure_html(block)
    if isinstance(block, Table):
        return table_html(block, page_dir)
    return note_html(block)


def conclusion_html(sentences: Iterable[str]) -> str:
    items = "".join(f"<li>{esc(s)}</li>" for s in sentences)
    return f"<div class=\"conclusion\"><strong>Conclusion</strong><ul>{items}</ul></div>"


def status_banner(report: RunReport) -> str:
    run = report.run
    out = []
    if run.status == "running":
        out.append(f"This run is still running (or stopped without finishing): the page shows the "
                   f"{len(run.results)} result rows written so far.")
    elif run.status == "interrupted":
        out.append(f"This run was interrupted: the page shows the {len(run.results)} result rows finished; "
                   f"continue it with --resume {run.path}.")
    out += run.notes
    return "\n".join(f"<div class=\"banner warning\">{esc(s)}</div>" for s in out)


def _kv_table(rows: Iterable[tuple[str, Any]]) -> str:
    return "<table>" + "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in rows) + "</table>"


def details_html(report: RunReport, page_dir: Path) -> str:
    """Provenance (command, revision, seed, device, times, versions, models) and the full config."""
    run, meta = report.run, report.run.meta
    versions = meta.get("versions") or {}
    rows = [("study", run.study), ("folder", run.path), ("status", run.status)]
    rows += [(k, meta[k]) for k in ("command", "git_revision", "seed", "device", "started", "finished", "platform") if k in meta]
    if versions:
        rows.append(("versions", ", ".join(f"{k} {v}" for k, v in versions.items())))
    for m in meta.get("models", []):
        if isinstance(m, dict):
            rows.append((f"model {m.get('name')}", f"{run.label(str(m.get('name')))}; weights sha256 {m.get('weights_sha256')}"))
    files = " · ".join(f"<a href=\"{href(p, page_dir)}\">{esc(p.name)}</a>" for p in raw_files(run))
    return (f"<h2>Run details</h2>\n<p>Files: {files}</p>\n{_kv_table(rows)}\n<h3>Config</h3>\n"
            f"<pre>{esc(json.dumps(run.config, indent=2, sort_keys=True, default=str))}</pre>")


def sections_html(sections: list[Section], page_dir: Path, prefix: str, level: int = 2) -> str:
    out = []
    for i, s in enumerate(sections):
        out.append(f"<section id=\"{prefix}s{i}\"><h{level}>{esc(s.title)}</h{level}>")
        out += [block_html(b, page_dir) for b in s.blocks]
        out.append("</section>")
    return "\n".join(out)


def toc_html(sections: list[Section], prefix: str) -> str:
    items = "".join(f"<li><a href=\"#{prefix}s{i}\">{esc(s.title)}</a></li>" for i, s in enumerate(sections))
    return f"<nav><ul>{items}</ul></nav>"


# ------------------------------------------------------------------ pages
def run_page(report: RunReport, page_dir: Path, index: Path | None = None) -> str:
    run = report.run
    title = f"{STUDY_TITLES[run.study]} — {run.name}"
    up = f"<a href=\"{href(index, page_dir)}\">all reports</a> · " if index is not None else ""
    sub = (f"{up}{esc(run.study)} study, status {esc(run.status)}, {slices(run.n_samples())}, models: "
           f"{esc(', '.join(run.labels().values()) or 'none')}")
    body = "\n".join([
        f"<h1>{esc(title)}</h1>", f"<p class=\"sub\">{sub}</p>", status_banner(report),
        conclusion_html(report.conclusion), toc_html(report.all_sections(), ""),
        sections_html(report.all_sections(), page_dir, ""), details_html(report, page_dir),
    ])
    return document(title, body)


def suite_page(name: str, record: dict[str, Any], items: list[tuple[str, RunReport | str | None]], page_dir: Path,
               training: Section, index: Path | None = None) -> str:
    """``items``: per study, its report, the reason it is unusable (str), or ``None`` (not run yet);
    ``training``: the curves of every zoo model of the suite (shown once, at the end)."""
    up = f"<a href=\"{href(index, page_dir)}\">all reports</a> · " if index is not None else ""
    out = [f"<h1>Suite {esc(name)}</h1>", f"<p class=\"sub\">{up}study file {esc(record.get('file', '?'))}, "
                                           f"{len(items)} studies</p>"]
    bad = [(s, it) for s, it in items if isinstance(it, str)]
    missing = [s for s, it in items if it is None]
    for study, reason in bad:
        out.append(f"<div class=\"banner error\">{esc(study)}: unusable run — {esc(reason)}</div>")
    if missing:
        out.append(f"<div class=\"banner warning\">not run yet: {esc(', '.join(missing))}</div>")
    concl = []
    for k, (study, it) in enumerate(items):
        if isinstance(it, RunReport):
            warn = "" if it.run.complete else f" <em>(status {esc(it.run.status)})</em>"
            concl.append(f"<li><a href=\"#r{k}\">{esc(STUDY_TITLES.get(study, study))}</a>{warn}<ul>"
                         + "".join(f"<li>{esc(s)}</li>" for s in it.conclusion) + "</ul></li>")
    out.append(f"<div class=\"conclusion\"><strong>Conclusion</strong><ul>{''.join(concl)}</ul></div>")
    for k, (study, it) in enumerate(items):
        if not isinstance(it, RunReport):
            continue
        run = it.run
        page = run.path / "report.html"
        out.append(f"<section id=\"r{k}\"><h2>{esc(STUDY_TITLES.get(study, study))} — {esc(run.name)}</h2>")
        out.append(f"<p class=\"sub\"><a href=\"{href(page, page_dir)}\">its own page</a> · {slices(run.n_samples())}, "
                   f"models: {esc(', '.join(run.labels().values()) or 'none')}</p>")
        out.append(status_banner(it))  # its conclusion is in the box at the top
        out.append(sections_html(it.sections, page_dir, f"r{k}", level=3))
        out.append("</section>")
    out.append(sections_html([training], page_dir, "t"))
    return document(f"Suite {name}", "\n".join(out))


def index_page(root: Path, rows: list[dict[str, Any]]) -> str:
    """``rows`` (newest first): ``name``, ``kind``, ``status``, ``started``, ``headline``, ``page``
    (path of the page or ``None``), ``problem`` (why there is no page)."""
    body = [f"<h1>robustkit reports</h1><p class=\"sub\">{esc(root)} · {len(rows)} runs and suites, newest first</p>"]
    if not rows:
        body.append("<div class=\"banner info\">No study run here yet; run e.g. robustkit attack, or robustkit run quick.</div>")
    else:
        trs = []
        for r in rows:
            name = (f"<a href=\"{href(r['page'], root)}\">{esc(r['name'])}</a>" if r.get("page") else esc(r["name"]))
            lines = r.get("headline") or ""
            headline = "<br>".join(esc(x) for x in ([lines] if isinstance(lines, str) else lines))
            if r.get("problem"):
                headline = f"<span class=\"banner warning\">{esc(r['problem'])}</span>"
            trs.append(f"<tr><td class=\"nowrap\">{name}</td><td>{esc(r.get('kind', ''))}</td><td>{esc(r.get('status', ''))}</td>"
                       f"<td class=\"nowrap\">{esc(str(r.get('started', '')).replace('T', ' '))}</td><td>{headline}</td></tr>")
        body.append("<table><thead><tr><th>page</th><th>study</th><th>status</th><th>started</th><th>headline</th></tr></thead>"
                    f"<tbody>{''.join(trs)}</tbody></table>")
    return document("robustkit reports", "\n".join(body))
