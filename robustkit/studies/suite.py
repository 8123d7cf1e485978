"""A study file (a TOML path, or a shipped suite by name: ``quick``, ``paper``): several studies
run one after the other as a suite. The shipped suites are package data, ``robustkit/suites/*.toml``.

File format: one table per study (``[attack]``, ``[init-test]``, ``[audit]``, ``[sweep-delta]``, ``[features]``,
``[bound]``, ``[shift]``)
holding that study's config keys, and an optional ``[defaults]`` table whose keys apply to every
study (a study's own table wins). Unknown tables and keys are errors naming them, reported before
anything runs. The suite folder ``<reports>/<file stem>-<timestamp>/suite.json`` records the file,
its parsed contents and each study's run folder (a sibling in ``<reports>``).
"""

from __future__ import annotations

import time
import tomllib
from pathlib import Path
from typing import Any, Callable

from robustkit.errors import RobustkitError, StudyInterrupted
from robustkit.io import os_error, read_json
from robustkit.studies import STUDIES, make_config, run

SUITE = "suite.json"


def study_file(ref: str | Path) -> Path:
    """The TOML file of ``ref``: an existing path, else the shipped suite of that name (``quick``)."""
    from robustkit.locations import shipped_suites

    path = Path(ref)
    if path.is_file():
        return path
    suites = shipped_suites()
    if str(ref) in suites:
        return suites[str(ref)]
    names = ", ".join(suites) or "none"
    if path.is_dir():
        raise RobustkitError(f"{path} is a folder, not a TOML study file; give a file or a shipped suite: {names}")
    if path.suffix or len(path.parts) > 1:
        raise RobustkitError(f"study file {path} does not exist; give an existing TOML file or a shipped suite: {names} "
                             "(e.g. robustkit run quick)")
    raise RobustkitError(f"no shipped suite {str(ref)!r} and no file of that name; shipped suites: {names} "
                         "(or give a TOML study file)")


def read_study_file(path: str | Path, overrides: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """``{study: config mapping}`` in file order, defaults merged, then ``overrides`` (e.g. the
    command line's ``data``, ``split``) over every study; validated (unknown keys raise).
    ``path`` is a TOML file or a shipped suite's name (:func:`study_file`)."""
    path = study_file(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise RobustkitError(f"{path} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    except OSError as exc:
        from robustkit.io import os_error

        raise os_error(exc, path, "read") from None
    except tomllib.TOMLDecodeError as exc:
        raise RobustkitError(f"{path} is not valid TOML ({exc}); fix the line it names") from None
    defaults = data.pop("defaults", {})
    if not isinstance(defaults, dict):
        raise RobustkitError(f"[defaults] in {path} must be a table")
    unknown = [k for k in data if k not in STUDIES]
    if unknown:
        raise RobustkitError(f"unknown study {unknown[0]!r} in {path}; known: defaults, {', '.join(STUDIES)}")
    if not data:
        raise RobustkitError(f"{path} names no study; add a table such as [attack]")
    keys = {name: _config_keys(name) for name in data}
    unused = [k for k in defaults if not any(k in known for known in keys.values())]
    if unused:
        raise RobustkitError(f"key {unused[0]!r} in [defaults] of {path} belongs to none of its studies "
                             f"({', '.join(data)}); remove it or move it into the table of a study that has it")
    out = {}
    for name, table in data.items():
        if not isinstance(table, dict):
            raise RobustkitError(f"{name} in {path} must be a table ([{name}])")
        # a default applies to every study that has the key ([defaults] train = true: sweep-delta only)
        mapping = {**{k: v for k, v in defaults.items() if k in keys[name]}, **table, **(overrides or {})}
        where = f"[{name}] of {path}" + (" with its [defaults]" if defaults else "")
        make_config(name, dict(mapping), where=where)  # validate now
        out[name] = mapping
    return out


def _config_keys(name: str) -> set[str]:
    """The keys study ``name``'s config takes."""
    import dataclasses

    from robustkit.studies import STUDIES, study_module

    return {f.name for f in dataclasses.fields(getattr(study_module(name), STUDIES[name][1]))}


def run_suite(path: str | Path, obj: dict[str, Any], reports_dir: str | Path = "reports", resume: str | Path | None = None,
              on_study: Callable[[Path], None] | None = None, progress: bool = True,
              overrides: dict[str, Any] | None = None) -> Path:
    """Run every study of the file (a path or a shipped suite's name; ``overrides`` replace keys of
    every study, see :func:`read_study_file`); returns the suite folder."""
    from robustkit.distributed import dist_context
    from robustkit.studies.shards import on_main

    given, path = path, study_file(path)
    studies = read_study_file(path, overrides)
    seed, device = obj.get("seed", 0), obj.get("device", "auto")
    ctx = dist_context(device)  # under torchrun: rank 0 writes the suite folder, every rank runs each study
    reports_dir = Path(reports_dir)
    if resume is not None:
        suite_dir = Path(resume)
        if not (suite_dir / SUITE).exists():
            raise RobustkitError(f"{suite_dir} is not a suite folder (no {SUITE}); check the --resume path")
        record = read_json(suite_dir / SUITE, "the suite record", "the suite folder is damaged: start a new run without --resume")
        if not isinstance(record, dict) or not isinstance(record.get("studies"), dict):
            raise RobustkitError(f"{suite_dir / SUITE} is not a suite record; start a new run without --resume")
        if record.get("config") != studies:
            given_options = "".join(f" --{k.replace('_', '-')} {v}" for k, v in (overrides or {}).items())
            what = f"{path} with{given_options}" if given_options else str(path)
            raise RobustkitError(f"{what} differs from what the suite in {suite_dir} ran (file and options); resume with the "
                                 "same file and options, or start a new run without --resume")
        reports_dir = suite_dir.parent
    else:
        record = {"file": str(path), "config": studies, "studies": {}}
    _preflight(path, studies, record, reports_dir, seed, ctx.device)
    if resume is None:
        new_root = not reports_dir.exists()
        suite_dir = on_main(ctx, lambda: _create(reports_dir, path, record))
    try:
        _run_studies(given, path, studies, record, suite_dir, reports_dir, seed, device, on_study, progress, ctx.is_main)
    except BaseException:
        if ctx.is_main and resume is None and not record["studies"]:  # nothing ran: leave no empty suite folder
            (suite_dir / SUITE).unlink(missing_ok=True)
            suite_dir.rmdir()
            if new_root and not any(reports_dir.iterdir()):
                reports_dir.rmdir()
        raise
    return suite_dir


def _preflight(path: Path, studies: dict[str, dict[str, Any]], record: dict[str, Any], reports_dir: Path, seed: int,
               device) -> None:
    """Check every study still to run as its run would (models, data, what the study needs of
    them) before the first one starts, so that a bad model in the last study does not surface
    after the others have run. A study that trains its own models (sweep-delta, ``train = true``)
    is checked at its turn: its models may not exist yet, and checking must not train them."""
    from robustkit.studies import preflight

    for name, config, _ in _pending(path, studies, record, reports_dir, seed):
        if getattr(config, "train", False):
            continue
        try:
            preflight(name, config, device)
        except RobustkitError as exc:
            raise RobustkitError(f"[{name}] of {path}: {exc}") from None


def _pending(path: Path, studies: dict[str, dict[str, Any]], record: dict[str, Any], reports_dir: Path, seed: int):
    """``(name, config, previous run folder name or None)`` of each study of the file, in order,
    that is not complete in ``record``; ``seed`` fills ``seed`` where the file does not set it."""
    for name, mapping in studies.items():
        previous = record["studies"].get(name)
        if previous and _status(reports_dir / previous) == "complete":
            continue
        yield name, make_config(name, {"seed": seed, **mapping}, where=f"[{name}] of {path}"), previous


def _create(reports_dir: Path, path: Path, record: dict[str, Any]) -> Path:
    """A new suite folder ``<reports_dir>/<file stem>-<timestamp>[-n]/`` holding ``record``."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    n = 1
    try:
        reports_dir.mkdir(parents=True, exist_ok=True)
        while True:
            suite_dir = reports_dir / (f"{Path(path).stem}-{stamp}" if n == 1 else f"{Path(path).stem}-{stamp}-{n}")
            try:
                suite_dir.mkdir()
                break
            except FileExistsError:
                n += 1
    except OSError as exc:
        raise os_error(exc, reports_dir, "create a suite folder in") from None
    try:
        _write(suite_dir, record)
    except RobustkitError:
        suite_dir.rmdir()
        raise
    return suite_dir


def _run_studies(given, path, studies, record, suite_dir: Path, reports_dir: Path, seed, device, on_study, progress,
                 is_main: bool = True) -> None:
    """Run the file's studies in order, skipping those complete in ``record``; ``given`` is what the
    user named (a suite name or a path), repeated in the resume hint. Only rank 0 (``is_main``)
    writes the record and calls ``on_study``."""
    for name, config, previous in _pending(path, studies, record, reports_dir, seed):

        def started(run_dir: Path, name: str = name) -> None:
            record["studies"][name] = run_dir.name
            _write(suite_dir, record)

        try:
            frame = run(name, config, device=device, reports_dir=reports_dir,
                        resume=(reports_dir / previous) if previous else None, progress=progress, on_start=started,
                        idle_ranks=True)
        except StudyInterrupted:
            raise StudyInterrupted(
                f"interrupted in {name}; completed cells are kept; continue with "
                f"robustkit run {given} --resume {suite_dir}"
            ) from None
        record["studies"][name] = Path(frame.attrs["run_dir"]).name
        if on_study is not None and is_main:
            on_study(reports_dir / record["studies"][name])


def _status(run_dir: Path) -> str | None:
    meta = read_json(run_dir / "meta.json", "the run's meta", "the run folder is damaged: start a new run without --resume")
    return meta.get("status") if isinstance(meta, dict) else None


def _write(suite_dir: Path, record: dict[str, Any]) -> None:
    from robustkit.io import write_json

    write_json(suite_dir / SUITE, record)
