"""``robustkit report``: HTML pages of study runs and ``index.html`` of their reports folder."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("report")
@click.argument("run_dirs", nargs=-1, type=click.Path(path_type=Path), metavar="[RUN_DIR ...]")
@click.option("--reports-dir", type=click.Path(path_type=Path), default=Path("reports"), show_default=True,
              help="Reports folder used when no RUN_DIR is given: every run and suite in it gets its page.")
def report(run_dirs: tuple[Path, ...], reports_dir: Path) -> None:
    """Build report.html for each RUN_DIR — a study run folder (reports/<study>-<timestamp>/), a suite
    folder written by `robustkit run`, or a whole reports folder — then the index.html of its
    reports folder. Pages are single files (figures embedded) that open from disk with no network.

    Unusable folders (missing, incomplete, unknown study) are named at the end, after the pages of
    the others are built, and the command exits with status 2.
    """
    from robustkit.errors import RobustkitError
    from robustkit.report import ReportIncomplete, build_index, build_report
    from robustkit.report.runs import is_run, is_suite

    targets = list(run_dirs)
    if not targets:
        if not reports_dir.is_dir():
            raise RobustkitError(f"reports folder {reports_dir} does not exist; run a study first "
                                 "(e.g. robustkit attack) or pass RUN_DIR")
        if not any(p.is_dir() and (is_run(p) or is_suite(p)) for p in reports_dir.iterdir()):
            click.echo(f"no study runs in {reports_dir} yet; wrote {build_index(reports_dir)}")
            return
        targets = [reports_dir]
    try:
        pages = build_report(targets)
    except ReportIncomplete as exc:
        for page in exc.built:
            click.echo(f"wrote {page}")
        raise
    for page in pages:
        click.echo(f"wrote {page}")
