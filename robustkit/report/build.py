"""Writing the pages: a run's ``report.html`` (+ ``tables/*.csv``), a suite's combined page, and
``index.html`` of a reports folder. Each page also leaves ``report.json`` (title, status, headline)
that the index reads."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any, Iterable

from robustkit.errors import RobustkitError
from robustkit.report.runs import SUITE, is_run, is_suite, load_run, run_folders

PAGE = "report.html"
SUMMARY = "report.json"
INDEX = "index.html"
TABLES = "tables"

_STAMP = re.compile(r"(\d{8}-\d{6})(?:-(\d+))?$")


class ReportIncomplete(RobustkitError):
    """Some of the runs asked for were unusable; ``built`` holds the pages written for the others."""

    def __init__(self, message: str, built: list[Path]):
        super().__init__(message)
        self.built = built


def _write_text(path: Path, text: str) -> None:
    from robustkit.io import write_text

    write_text(path, text)  # permissions from the umask, like any file the user writes


def _write_tables(tables, page_dir: Path) -> None:
    """Each table's frame to ``<page_dir>/tables/<name>.csv`` (full precision; the page links it)."""
    folder = page_dir / TABLES
    try:
        folder.mkdir(exist_ok=True)
    except OSError as exc:
        from robustkit.io import os_error

        raise os_error(exc, folder, "create") from None
    for t in tables:
        t.csv = folder / f"{t.name}.csv"
        _write_text(t.csv, t.frame.to_csv(index=False))


def _summary(path: Path, **fields: Any) -> None:
    _write_text(path / SUMMARY, json.dumps(fields, indent=2, default=str) + "\n")


def _run_report(run_dir: Path):
    from robustkit.report.sections import assemble

    report = assemble(load_run(run_dir))
    _write_tables(report.tables(), report.run.path)
    return report


def _write_run_page(report) -> Path:
    from robustkit.report import html

    run = report.run
    page = run.path / PAGE
    _write_text(page, html.run_page(report, run.path, index=run.path.parent / INDEX))
    _summary(run.path, kind=run.study, title=run.name, status=run.status, started=run.meta.get("started", ""),
             headline=report.conclusion[0] if report.conclusion else "", page=PAGE)
    return page


def build_run_page(run_dir: str | os.PathLike) -> Path:
    """Write ``<run_dir>/report.html`` and ``<run_dir>/tables/*.csv``; returns the page.

    Raises :class:`RobustkitError` naming the folder when it is missing, incomplete or of an
    unknown study. A run still running or interrupted gets a page with a warning banner.
    """
    return _write_run_page(_run_report(Path(run_dir)))


def build_suite_page(suite_dir: str | os.PathLike) -> Path:
    """Write ``<suite_dir>/report.html``: every study of a ``robustkit run`` suite on one page (and
    each study's own page). The run folders named in ``suite.json`` are siblings of ``suite_dir``.

    Unusable runs are shown on the page and then raised as :class:`ReportIncomplete` naming them.
    """
    return _build_suite(Path(suite_dir))[0]


def _build_suite(suite_dir: Path) -> tuple[Path, list[Path]]:
    """The suite page and the pages of its runs (raises :class:`ReportIncomplete` as above)."""
    from robustkit.report import figures, html
    from robustkit.report.sections import model_entries, tables_of, training

    if not suite_dir.is_dir():
        raise RobustkitError(f"suite folder {suite_dir} does not exist; check the path (robustkit run writes reports/<file>-<timestamp>/)")
    if not is_suite(suite_dir):
        raise RobustkitError(f"{suite_dir} is not a suite folder (no {SUITE}); pass a folder written by robustkit run")
    try:
        record = json.loads((suite_dir / SUITE).read_text())
    except json.JSONDecodeError as exc:
        raise RobustkitError(f"{suite_dir / SUITE} is not valid JSON ({exc.msg}); rerun the study file") from None
    runs = record.get("studies") or {}
    planned = list(dict.fromkeys([*(record.get("config") or {}), *runs]))
    items: list[tuple[str, Any]] = []
    built: list[Path] = []
    for study in planned:
        name = runs.get(study)
        if not name:
            items.append((study, None))
            continue
        try:
            report = _run_report(suite_dir.parent / str(name))
        except RobustkitError as exc:
            items.append((study, str(exc)))
            continue
        built.append(_write_run_page(report))
        items.append((study, report))
    reports = [it for _, it in items if not isinstance(it, (str, type(None)))]
    entries = list({e[0]: e for r in reports for e in model_entries(r.run)}.values())
    training_section = training(entries, f"suite {suite_dir.name}", figures.palette([e[1] for e in entries]))
    _write_tables(tables_of([training_section]), suite_dir)
    page = suite_dir / PAGE
    _write_text(page, html.suite_page(suite_dir.name, record, items, suite_dir, training_section,
                                      index=suite_dir.parent / INDEX))
    statuses = {r.run.status for r in reports}
    status = "complete" if statuses == {"complete"} and len(reports) == len(items) else "partial"
    heads = [f"{r.run.study}: {r.conclusion[0]}" for r in reports if r.conclusion]  # one line per study
    _summary(suite_dir, kind="suite", title=suite_dir.name, status=status,
             started=min((r.run.meta.get("started", "") for r in reports), default=""),
             headline=heads, page=PAGE)
    bad = [f"{s}: {it}" for s, it in items if isinstance(it, str)]
    if bad:
        raise ReportIncomplete(f"suite {suite_dir} has unusable runs (shown on its page): " + " | ".join(bad),
                               [page, *built])
    return page, built


def _order_key(path: Path) -> tuple[str, int, float]:
    m = _STAMP.search(path.name)
    mtime = path.stat().st_mtime
    stamp = m.group(1) if m else time.strftime("%Y%m%d-%H%M%S", time.localtime(mtime))
    return stamp, int(m.group(2) or 1) if m else 0, mtime


def _index_row(folder: Path) -> dict[str, Any]:
    row: dict[str, Any] = {"name": folder.name, "page": None}
    summary = folder / SUMMARY
    if (folder / PAGE).is_file() and summary.is_file():
        try:
            info = json.loads(summary.read_text())
            return {**row, **{k: info.get(k, "") for k in ("kind", "status", "started", "headline")}, "page": folder / PAGE}
        except json.JSONDecodeError:
            pass
    row["problem"] = f"no page yet; build it with: robustkit report {folder}"
    try:
        if is_suite(folder):
            row["kind"] = "suite"
        else:
            row["kind"] = json.loads((folder / "config.json").read_text()).get("study", "?")
            meta = folder / "meta.json"
            if meta.is_file():
                m = json.loads(meta.read_text())
                row["status"], row["started"] = m.get("status", ""), m.get("started", "")
    except (json.JSONDecodeError, OSError, AttributeError):
        row["problem"] = f"unreadable run folder; check {folder}"
    return row


def build_index(reports_root: str | os.PathLike) -> Path:
    """Write ``<reports_root>/index.html`` linking every run and suite page found there, newest first.
    An ``index.html`` there that robustkit did not write is left as it is (a :class:`RobustkitError`)."""
    from robustkit.io import check_replaceable
    from robustkit.report import html

    root = Path(reports_root)
    if not root.is_dir():
        raise RobustkitError(f"reports folder {root} does not exist; pass the folder holding the run folders (e.g. reports)")
    folders = sorted(run_folders(root), key=_order_key, reverse=True)
    page = root / INDEX
    check_replaceable(page, html.OWN_MARK, "move it, or pass another reports folder")
    _write_text(page, html.index_page(root, [_index_row(p) for p in folders]))
    return page


def contents(root: Path) -> list[Path]:
    """The run and suite folders of a reports folder (and any other sub-folder, reported unusable)."""
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def build_report(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Pages for each path — a run folder, a suite folder, or a reports folder (every run and suite in
    it) — then the ``index.html`` of each reports folder involved. Returns the pages written.

    Every usable run gets its page; the unusable ones are then raised together as
    :class:`ReportIncomplete` (a :class:`RobustkitError`) naming each, with ``built`` set.
    """
    paths = [Path(p) for p in paths]
    built: list[Path] = []
    bad: list[str] = []
    roots: list[Path] = []
    todo: list[tuple[Path, Path]] = []  # (folder, its reports root)
    for p in paths:
        if p.is_dir() and not is_run(p) and not is_suite(p) and any(is_run(c) or is_suite(c) for c in contents(p)):
            todo += [(c, p) for c in contents(p)]
            roots.append(p)
        else:
            todo.append((p, p.parent))
    todo.sort(key=lambda item: not is_suite(item[0]))  # suites first: they build their runs' pages too
    seen: set[Path] = set()
    for folder, root in todo:
        key = folder.resolve()
        if key in seen:
            continue
        seen.add(key)
        if (key / PAGE) in {p.resolve() for p in built}:
            roots.append(root)
            continue
        try:
            if is_suite(folder):
                page, runs = _build_suite(folder)
                built += [page, *runs]
            else:
                built.append(build_run_page(folder))
            roots.append(root)
        except ReportIncomplete as exc:
            built += exc.built
            bad.append(str(exc))
            roots.append(root)
        except RobustkitError as exc:  # not a run: its folder's index is not ours to write
            bad.append(str(exc))
    for root in dict.fromkeys(r.resolve() for r in roots):
        built.append(build_index(root))
    if bad:
        rest = "nothing was written" if len(bad) == len(seen) else "the others were built"
        raise ReportIncomplete(f"{len(bad)} of {len(seen)} folders unusable ({rest}): " + " | ".join(bad), built)
    return built
