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
    folder written by `robustkit run`, or a whole reports folder — then the index.html and the
    leaderboard (leaderboard.html, leaderboard.csv) of its reports folder. Pages are single files (figures embedded) that open from disk with no network.

    Unusable folders (missing, incomplete, unknown study) are named at the end, after the pages of
    the others are built, and the command exits with status 2.
    """
    from robustkit.errors import RobustkitError
    from robustkit.report import ReportIncomplete, build_index, build_report
    from robustkit.report.build import contents
    from robustkit.report.runs import run_folders

    targets = list(run_dirs)
    if not targets:
        if not reports_dir.is_dir():
            raise RobustkitError(f"reports folder {reports_dir} does not exist; run a study first "
                                 "(e.g. robustkit attack) or pass RUN_DIR")
        if not run_folders(reports_dir):
            index = build_index(reports_dir)
            others = [p.name for p in contents(reports_dir)]
            if others:  # named, as they are next to a run (below)
                raise RobustkitError(f"no study runs in {reports_dir} (wrote {index}); not run folders (no config.json): "
                                     f"{', '.join(others)} — pass a run folder or a folder of runs")
            click.echo(f"no study runs in {reports_dir} yet; wrote {index}")
            return
        targets = [reports_dir]
    try:
        pages = build_report(targets)
    except ReportIncomplete as exc:
        for page in exc.built:
            click.echo(f"wrote {page}")
        _leaderboards(targets)
        raise
    for page in pages:
        click.echo(f"wrote {page}")
    _leaderboards(targets)


def _leaderboards(targets: list[Path]) -> None:
    """The leaderboard of each reports folder involved (a run or suite folder's parent)."""
    from robustkit.report.leaderboard import build_leaderboard
    from robustkit.report.runs import is_run, is_suite, run_folders

    roots = dict.fromkeys((t.parent if is_run(t) or is_suite(t) else t).resolve() for t in targets
                          if is_run(t) or is_suite(t) or run_folders(t))
    for root in roots:
        if root.is_dir():
            click.echo(f"wrote {build_leaderboard(root)[1]}")


@click.command("leaderboard")
@click.argument("reports_dir", required=False, default="reports", type=click.Path(path_type=Path), metavar="[REPORTS_DIR]")
def leaderboard(reports_dir: Path) -> None:
    """Write REPORTS_DIR/leaderboard.csv and leaderboard.html (a sortable table, no network): one row
    per model found in the stored runs of REPORTS_DIR (zoo, imported, plug-in, baselines) with clean
    PSNR/SSIM, the adversarial and Gaussian PSNR drops at the attack run's ε, shift drops, the
    false-negative rate, the converged fraction of clean solves and the largest L estimate. Nothing is
    recomputed: each number comes from the newest run holding it, named in the table; a study no run
    holds leaves empty cells. [default REPORTS_DIR: reports]

    \b
        robustkit leaderboard reports
    """
    from robustkit.report.leaderboard import build_leaderboard

    csv_path, html_path, frame = build_leaderboard(reports_dir)
    click.echo(f"{len(frame)} models; wrote {csv_path} and {html_path}")
