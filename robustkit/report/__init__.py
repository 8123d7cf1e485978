"""Self-contained HTML reports of study runs (docs/maths.md §7–§9 results): one page per run, one per suite
(``robustkit run``), and ``reports/index.html`` linking them.

========================  ==================================================================
``build_run_page(dir)``   ``<dir>/report.html`` + ``<dir>/tables/<name>.csv``; the page path
``build_suite_page(dir)`` the combined page of a suite folder (``suite.json``) and its runs
``build_index(root)``     ``<root>/index.html`` linking every run / suite page, newest first
``build_report(paths)``   any mix of run, suite and reports folders, then their indexes
========================  ==================================================================

A page opens from disk with no network: inline CSS, figures as base64 PNG, CSV links relative.
Unusable folders raise :class:`~robustkit.errors.RobustkitError` naming them
(:class:`ReportIncomplete`, with the pages built for the others, when several were asked for).
Modules: :mod:`.runs` (reading a run folder), :mod:`.tables` (summary frames),
:mod:`.conclusions` (the sentences at the top), :mod:`.figures` (seaborn), :mod:`.sections`
(what each study shows), :mod:`.html` (templates), :mod:`.build` (writing the pages).
"""

from robustkit.report.build import ReportIncomplete, build_index, build_report, build_run_page, build_suite_page

__all__ = ["ReportIncomplete", "build_index", "build_report", "build_run_page", "build_suite_page"]
