"""Reliability: every bad input or fault ends in one line, exit 2, and leaves the disk as it was.

Classes of cases (each parametrised): damaged data files, out-of-range CLI values, wrongly typed
study files, damaged or changed runs on ``--resume``, read-only folders and full disks. Every case
runs ``robustkit ...`` through :func:`robustkit.cli.main`, as the console script does, and asserts
exit status 2, exactly one line on stderr starting ``robustkit: error:``, no traceback, and that no
file under the test's folder was written, changed or removed. Then: a kill between any two writes
of a run never duplicates or loses a cell, any exception ends a run as ``failed`` with its cells
kept and ``--resume`` completes it, and files get the permissions of the user's umask.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Callable

import h5py
import numpy as np
import pandas as pd
import pytest

from robustkit.cli import main
from robustkit.data.prepared import write_prepared
from robustkit.data.sample import Sample
from tests.test_studies import ACCEL, _tiny, zoo  # noqa: F401  (zoo is a fixture)

# ----------------------------------------------------------------------------- helpers


def snapshot(root: Path) -> dict[str, tuple[str, int]]:
    """Every file and folder under ``root``: sha256 of the contents (folders: "dir") and mode."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_dir():
            out[str(p.relative_to(root))] = ("dir", stat.S_IMODE(p.stat().st_mode))
        else:
            out[str(p.relative_to(root))] = (hashlib.sha256(p.read_bytes()).hexdigest(), stat.S_IMODE(p.stat().st_mode))
    return out


def messages(err: str) -> list[str]:
    """The lines of stderr, without tqdm's progress bars (``study:  50%|█ | 1/2 …``) and without
    ``robustkit: warning:`` lines (e.g. the tiny zoo's models run on data other than their card's)."""
    return [line for line in re.split(r"[\r\n]+", err) if line.strip() and not re.match(r"^\S+:\s+\d+%\|", line)
            and not line.startswith("robustkit: warning: ")]


def refused(args: list[str], capsys, root: Path, match: str) -> str:
    """Run ``robustkit ARGS``; assert exit 2, one error line matching ``match``, nothing changed
    under ``root``. Returns the line."""
    before = snapshot(root)
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    captured = capsys.readouterr()
    lines = messages(captured.err)
    assert exc.value.code == 2, captured.err
    assert len(lines) == 1 and lines[0].startswith("robustkit: error: "), captured.err
    assert "Traceback" not in captured.err + captured.out
    assert re.search(match, lines[0]), lines[0]
    assert snapshot(root) == before, "a refused command wrote, changed or removed files"
    return lines[0]


H, W, C = 12, 10, 2


def _sample(split: str = "test") -> Sample:
    rng = np.random.default_rng(0)
    k = (rng.standard_normal((C, H, W)) + 1j * rng.standard_normal((C, H, W))).astype(np.complex64)
    maps = np.full((C, H, W), 1 / np.sqrt(C), np.complex64)
    return Sample(kspace=k, maps=maps, target=np.ones((H, W), np.complex64), meta={"split": split})


def _prepared(tmp: Path, edit: Callable[[h5py.File], None]) -> Path:
    path = write_prepared(tmp / "p.h5", [_sample(), _sample("train")], {"source": "test"})
    with h5py.File(path, "r+") as f:
        edit(f)
    return path


def _bart_huge(tmp: Path) -> Path:
    (tmp / "ksp.hdr").write_text("# Dimensions\n100000 100000 1 100000 1 1 1 1 1 1 1 1 1 100000 1 1\n")
    (tmp / "ksp.cfl").write_bytes(b"")
    return tmp / "ksp.cfl"


def _fastmri_real(tmp: Path) -> Path:
    with h5py.File(tmp / "knee.h5", "w") as f:
        f.create_dataset("kspace", data=np.ones((2, 4, 8, 8), np.float32))
        f.create_dataset("ismrmrd_header", data=b"<xml/>")
        f.attrs["acquisition"] = "CORPD_FBK"
    return tmp / "knee.h5"


def _set_attr(name: str, value: str) -> Callable[[h5py.File], None]:
    def edit(f):
        target = f if name == "provenance" else f["samples/000000"]
        target.attrs[name] = value

    return edit


# ----------------------------------------------------------------------------- data files

DATA_CASES: dict[str, tuple[Callable[[Path], Path], list[str], str]] = {
    "BART huge dims, empty .cfl (info)": (_bart_huge, ["data", "info"], r"ksp\.cfl has 0 bytes .* needs \d+"),
    "BART huge dims, empty .cfl (prepare)": (_bart_huge, ["data", "prepare"], r"ksp\.cfl has 0 bytes"),
    "invalid provenance JSON": (lambda t: _prepared(t, _set_attr("provenance", "{oops")), ["data", "info"],
                                r"provenance of the file is not valid JSON"),
    "provenance not an object": (lambda t: _prepared(t, _set_attr("provenance", "[1]")), ["data", "info"],
                                 r"provenance of the file is not a JSON object"),
    "no samples group": (lambda t: _prepared(t, lambda f: f.__delitem__("samples")), ["data", "info"],
                         r"has no 'samples' group"),
    "sample without kspace": (lambda t: _prepared(t, lambda f: f.__delitem__("samples/000001/kspace")),
                              ["data", "info"], r"sample 000001 lacks 'kspace'"),
    "invalid meta JSON": (lambda t: _prepared(t, _set_attr("meta", "not json")), ["data", "info"],
                          r"meta of sample 000000 is not valid JSON"),
    "fastMRI with real k-space (info)": (_fastmri_real, ["data", "info"], r"looks like a fastMRI file .* is real"),
    "fastMRI with real k-space (prepare)": (_fastmri_real, ["data", "prepare"], r"fastMRI k-space must be complex"),
}


@pytest.mark.parametrize("name", DATA_CASES)
def test_bad_data_file(name, tmp_path, capsys):
    make, command, match = DATA_CASES[name]
    path = make(tmp_path)
    extra = ["--out", tmp_path / "out.h5"] if command[-1] == "prepare" else []
    refused([*command, path, *extra], capsys, tmp_path, match)


def test_damaged_prepared_file_is_refused_by_studies_too(tmp_path):
    from robustkit.data.prepared import PreparedDataset
    from robustkit.errors import RobustkitError

    path = _prepared(tmp_path, _set_attr("meta", "not json"))
    with pytest.raises(RobustkitError, match="not valid JSON"):
        PreparedDataset(path, split="test")


# ----------------------------------------------------------------------------- CLI values

CLI_CASES: dict[str, tuple[list[str], str]] = {
    "--seed -1": (["--seed", "-1", "attack"], r"--seed.*-1 is not in the range 0<=x<="),
    "--seed 1e23": (["--seed", "1e23", "attack"], r"--seed.*'1e23' is not a valid integer"),
    "--seed 2**70": (["--seed", str(2**70), "attack"], r"--seed.* is not in the range"),
    "sweep-delta --batch-size 0": (["sweep-delta", "--batch-size", "0"], r"--batch-size.*0 is not in the range x>=1"),
    "attack --samples 0": (["attack", "--samples", "0"], r"--samples"),
    "attack --steps 0": (["attack", "--steps", "0"], r"--steps"),
    "attack --restarts 0": (["attack", "--restarts", "0"], r"--restarts"),
    "attack --draws 0": (["attack", "--draws", "0"], r"--draws"),
    "attack --step-size 0": (["attack", "--step-size", "0"], r"--step-size"),
    "attack --accel 0.5": (["attack", "--accel", "0.5"], r"--accel"),
    "attack --accel inf": (["attack", "--accel", "inf"], r"accel must be a finite number >= 1"),
    "attack --accel nan": (["attack", "--accel", "nan"], r"accel must be a finite number >= 1"),
    "attack --eps nan": (["attack", "--eps", "nan"], r"eps must be a finite number"),
    "sweep-delta --eps -1": (["sweep-delta", "--eps", "-1"], r"--eps"),
    "sweep-delta --eps inf": (["sweep-delta", "--eps", "inf"], r"adv_eps must be a finite number"),
    "sweep-delta --deltas 0": (["sweep-delta", "--deltas", "0"], r"--deltas"),
    "sweep-delta --common-delta 0": (["sweep-delta", "--common-delta", "0"], r"--common-delta"),
    "init-test --radius -1": (["init-test", "--radius", "-1"], r"--radius"),
    "init-test --delta 0": (["init-test", "--delta", "0"], r"--delta"),
    "init-test --cap-factor 0": (["init-test", "--cap-factor", "0"], r"--cap-factor"),
    "audit --power-iters 0": (["audit", "--power-iters", "0"], r"--power-iters"),
    "audit --steps x": (["audit", "--steps", "x"], r"--steps.*'x' is not a valid integer"),
    "models evaluate --accel 0": (["models", "evaluate", "modl", "--accel", "0"], r"--accel"),
    "data prepare --calib 1": (["data", "prepare", "x.h5", "--out", "y.h5", "--calib", "1"], r"--calib"),
}


@pytest.mark.parametrize("name", CLI_CASES)
def test_bad_cli_value(name, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a study that started would write ./reports here
    args, match = CLI_CASES[name]
    refused(args, capsys, tmp_path, match)


# ----------------------------------------------------------------------------- study files

STUDY_FILE_CASES: dict[str, tuple[str | bytes, str]] = {
    'samples = "one"': ('[attack]\nsamples = "one"\n', r"\[attack\] of .*bad\.toml: samples must be an integer"),
    'batch_size = "2"': ('[attack]\nbatch_size = "2"\n', r"\[attack\] of .*: batch_size must be an integer, got '2'"),
    "models = 5": ("[audit]\nmodels = 5\n", r"\[audit\] of .*: models must be a list of strings, got 5"),
    "samples = 1.7": ("[attack]\nsamples = 1.7\n", r"samples must be an integer or left out, got 1\.7"),
    'seed = "x"': ('[init-test]\nseed = "x"\n', r"\[init-test\] of .*: seed must be an integer"),
    "steps = 1.5": ("[audit]\nsteps = 1.5\n", r"steps must be an integer, got 1\.5"),
    "steps = true": ("[attack]\nsteps = true\n", r"steps must be an integer, got true \(a boolean\)"),
    "accel = true in [defaults]": ("[defaults]\naccel = true\n[attack]\n", r"\[attack\] of .*: accel must be a number"),
    'eps = [0.1, "a"]': ('[attack]\neps = [0.1, "a"]\n', r"eps must be a list of numbers"),
    "deltas = [true]": ("[sweep-delta]\ndeltas = [true]\n", r"deltas must be a list of numbers"),
    "train = 1": ("[sweep-delta]\ntrain = 1\n", r"train must be true or false"),
    "data = 3": ("[attack]\ndata = 3\n", r"data must be a string"),
    "adv_eps = inf": ("[sweep-delta]\nadv_eps = inf\n", r"adv_eps must be a finite number"),
    "sweep-delta batch_size = 0": ("[sweep-delta]\nbatch_size = 0\n", r"batch_size must be >= 1"),
    "sweep-delta samples = 0": ("[sweep-delta]\nsamples = 0\n", r"samples must be >= 1"),
    "seed = -3": ("[audit]\nseed = -3\n", r"seed must be >= 0"),
    "unknown key": ("[audit]\nstepz = 3\n", r"unknown key 'stepz' in \[audit\]"),
    "unknown key in [defaults]": ("[defaults]\nbogus = 1\n[attack]\n",
                                  r"key 'bogus' in \[defaults\] of .*bad\.toml belongs to none of its studies \(attack\)"),
    "a sweep-delta key in [defaults] without sweep-delta": ("[defaults]\ntrain = true\n[attack]\n",
                                                            r"key 'train' in \[defaults\] .* belongs to none of its studies"),
    "not UTF-8": (b"[attack]\n# caf\xe9\nsteps = 2\n", r"is not UTF-8 text .*save it as UTF-8"),
}


@pytest.mark.parametrize("name", STUDY_FILE_CASES)
def test_bad_study_file(name, tmp_path, capsys):
    text, match = STUDY_FILE_CASES[name]
    path = tmp_path / "bad.toml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    refused(["run", path, "--reports-dir", tmp_path / "reports", "--no-report"], capsys, tmp_path, match)


def test_study_file_failing_at_run_time_leaves_no_suite_folder(zoo, tmp_path, capsys):
    path = tmp_path / "s.toml"
    path.write_text(f'[audit]\nmodels = ["nope"]\ndata = "{zoo["data"]}"\nsplit = "val"\naccel = {ACCEL}\n')
    refused(["run", path, "--reports-dir", tmp_path / "reports", "--no-report"], capsys, tmp_path, r"no model 'nope'")


def test_a_bad_model_in_a_later_study_stops_the_file_before_the_first_study(zoo, tmp_path, capsys):
    path = tmp_path / "s.toml"
    common = f'data = "{zoo["data"]}"\nsplit = "val"\naccel = {ACCEL}\nsamples = 1\n'
    path.write_text(f'[attack]\nmodels = ["sense"]\nkinds = ["gaussian"]\ndraws = 1\n{common}'
                    f'[init-test]\nmodels = ["nope"]\n{common}')
    refused(["run", path, "--reports-dir", tmp_path / "reports", "--no-report"], capsys, tmp_path,
            r"\[init-test\] of .*s\.toml: .*no model 'nope'")


def test_the_file_check_never_trains_a_sweep_model(zoo, tmp_path, capsys, monkeypatch):
    """sweep-delta with train = true is checked at its turn: checking it first would train."""
    import robustkit.studies.sweep_delta as sweep

    monkeypatch.setattr(sweep, "train_missing", lambda *a, **k: pytest.fail("the check trained a model"))
    path = tmp_path / "s.toml"
    common = f'data = "{zoo["data"]}"\nsplit = "val"\naccel = {ACCEL}\nsamples = 1\n'
    path.write_text(f'[sweep-delta]\ndeltas = [0.7]\ntrain = true\n{common}[init-test]\nmodels = ["nope"]\n{common}')
    refused(["run", path, "--reports-dir", tmp_path / "reports", "--no-report"], capsys, tmp_path,
            r"\[init-test\] of .*s\.toml: .*no model 'nope'")


def test_a_default_reaches_the_studies_that_have_its_key(tmp_path):
    from robustkit.studies.suite import read_study_file

    path = tmp_path / "s.toml"
    path.write_text("[defaults]\ntrain = true\nsamples = 2\n[attack]\n[sweep-delta]\n")
    studies = read_study_file(path)
    assert studies["sweep-delta"] == {"train": True, "samples": 2} and studies["attack"] == {"samples": 2}


def test_python_model_objects_pass_the_type_check():
    from robustkit.studies import make_config

    marker = object()  # e.g. an nn.Module built in Python: not a zoo name, not rejected here
    assert make_config("audit", {"models": ["modl", marker]}).models == ["modl", marker]


# ----------------------------------------------------------------------------- resume

RUN_ARGS = ["attack", "--model", "modl", "--kind", "gaussian", "--eps", "0.05", "--draws", "1", "--samples", "1",
            "--split", "val", "--accel", str(ACCEL), "--no-report"]


@pytest.fixture
def finished_run(zoo, capsys):
    """A complete attack run made through the CLI: ``(run folder, its CLI arguments)``."""
    args = [*RUN_ARGS, "--data", zoo["data"], "--reports-dir", zoo["reports"]]
    with _no_exit():
        main([str(a) for a in args])
    capsys.readouterr()
    (run_dir,) = [p for p in zoo["reports"].iterdir() if p.is_dir()]
    assert json.loads((run_dir / "meta.json").read_text())["status"] == "complete"
    return run_dir, args


def _retrain(zoo, run_dir):
    from robustkit.models.zoo import save_model

    model, card = _tiny("modl", K=2)
    for p in model.parameters():
        p.data.add_(0.01)
    save_model(zoo["root"] / "modl-2x", model, card)


def _edit_card(zoo, run_dir):
    card_path = zoo["root"] / "modl-2x" / "card.json"
    card = json.loads(card_path.read_text())
    card["config"]["K"] = 5  # same weights, another model
    card_path.write_text(json.dumps(card))


RESUME_CASES: dict[str, tuple[Callable, list[str], str]] = {
    "corrupt config.json": (lambda z, r: (r / "config.json").write_text("{not json"), [],
                            r"the run's config .*config\.json is not valid JSON"),
    "corrupt cells.json": (lambda z, r: (r / "cells.json").write_text("[{"), [], r"cell record .* is not valid JSON"),
    "cells.json not a list": (lambda z, r: (r / "cells.json").write_text('{"a": 1}'), [], r"is not a list of cells"),
    "corrupt meta.json": (lambda z, r: (r / "meta.json").write_text("\x00\x01"), [], r"the run's meta .* not valid JSON"),
    "no config.json": (lambda z, r: (r / "config.json").unlink(), [], r"not a robustkit run folder"),
    "other settings": (lambda z, r: None, ["--draws", "2"], r"settings differ .*keys: draws"),
    "weights retrained under the same name": (_retrain, [], r"'modl-2x' changed .*weights sha256"),
    "card config edited": (_edit_card, [], r"'modl-2x' changed .*card config sha256"),
}


@pytest.mark.parametrize("name", RESUME_CASES)
def test_bad_resume(name, finished_run, zoo, capsys, tmp_path):
    run_dir, args = finished_run
    damage, extra, match = RESUME_CASES[name]
    damage(zoo, run_dir)
    refused([*args, *extra, "--resume", run_dir], capsys, tmp_path, match)  # meta.json stays "complete"


def test_report_on_a_results_csv_cut_mid_row(finished_run, tmp_path):
    from robustkit.report.runs import load_run

    run_dir, _ = finished_run
    full = load_run(run_dir).results
    text = (run_dir / "results.csv").read_text()
    (run_dir / "results.csv").write_text(text[: len(text) - 12])
    run = load_run(run_dir)
    assert len(run.results) == len(full) - 1 and any("ends mid-row" in n for n in run.notes)


def test_report_leaves_out_rows_of_an_uncommitted_cell(finished_run):
    from robustkit.report.runs import load_run

    run_dir, _ = finished_run
    full = load_run(run_dir).results
    pd.concat([full, full.iloc[:1]]).to_csv(run_dir / "results.csv", index=False)
    run = load_run(run_dir)
    assert len(run.results) == len(full) and any("no completed cell" in n for n in run.notes)


class Killed(BaseException):
    """A kill: nothing in the run catches it, so no final status is written (like SIGKILL)."""


def _attack_config(zoo):
    from robustkit.studies import make_config

    return make_config("attack", {"data": zoo["data"], "split": "val", "accel": ACCEL, "models": ["modl"],
                                  "kinds": ["adversarial"], "eps": [0.05], "steps": 1, "batch_size": 1})


_REFERENCE: dict = {}


# Writes of a run: config.json, cells.json, meta.json (create), then per cell results.csv,
# [traces.csv], cells.json; then meta.json. Killing at write n = 4..8 hits every cell write.
@pytest.mark.parametrize("kill_at", [4, 5, 6, 7, 8])
def test_a_kill_between_any_two_writes_never_duplicates_or_loses_a_cell(zoo, monkeypatch, kill_at):
    from robustkit.studies import rundir
    from robustkit.studies import run as run_study

    config = _attack_config(zoo)
    if "frame" not in _REFERENCE:  # the uninterrupted run (the tiny zoo and data are the same in every test)
        frame = run_study("attack", config, reports_dir=zoo["reports"] / "ref", progress=False)
        _REFERENCE.update(frame=frame, traces=len(pd.read_csv(Path(frame.attrs["run_dir"]) / "traces.csv")))
    reference = _REFERENCE["frame"]
    writes = []
    real_text, real_json = rundir.write_text, rundir.write_json

    def counting(real):
        def write(path, data):
            writes.append(Path(path).name)
            if len(writes) == kill_at:
                raise Killed
            real(path, data)

        return write

    monkeypatch.setattr(rundir, "write_text", counting(real_text))
    monkeypatch.setattr(rundir, "write_json", counting(real_json))
    with pytest.raises(Killed):
        run_study("attack", config, reports_dir=zoo["reports"] / "killed", progress=False)
    monkeypatch.setattr(rundir, "write_text", real_text)
    monkeypatch.setattr(rundir, "write_json", real_json)
    (run_dir,) = list((zoo["reports"] / "killed").iterdir())
    resumed = run_study("attack", config, resume=run_dir, progress=False)
    key = ["model", "kind", "eps", "sample"]
    assert not resumed.duplicated(key).any()
    pd.testing.assert_frame_equal(resumed.sort_values(key).reset_index(drop=True),
                                  reference.sort_values(key).reset_index(drop=True), check_exact=False)
    on_disk = pd.read_csv(run_dir / "results.csv")
    assert len(on_disk) == len(reference)
    traces = pd.read_csv(run_dir / "traces.csv")
    assert not traces.duplicated(["model", "kind", "eps", "sample", "restart", "step"]).any()
    assert len(traces) == _REFERENCE["traces"]
    assert not list(run_dir.rglob("*.tmp"))


FAULTS = {
    "an exception in a cell": "boom",
    "no space left writing results.csv": "results.csv",
    "no space left writing examples/*.npz": "npz",
}


@pytest.mark.parametrize("fault", FAULTS)
def test_any_fault_ends_the_run_as_failed_and_resume_completes_it(fault, zoo, monkeypatch, capsys):
    import robustkit.io
    from robustkit.studies import attack as attack_module

    args = ["attack", "--model", "modl", "--kind", "adversarial", "--eps", "0.05", "--steps", "1", "--samples", "1",
            "--split", "val", "--accel", str(ACCEL), "--no-report", "--data", zoo["data"], "--reports-dir", zoo["reports"]]
    real_cell, real_replace, real_savez = attack_module.attack_cell, os.replace, np.savez_compressed
    enospc = OSError(errno.ENOSPC, "No space left on device")

    def cell(lm, kind, *a):
        if kind == "adversarial" and FAULTS[fault] == "boom":
            raise RuntimeError("boom")
        return real_cell(lm, kind, *a)

    def replace(src, dst):
        if Path(dst).name == FAULTS[fault] and "examples" not in str(dst):
            with open(src, "r+b") as fh:  # the disk filled mid-file
                fh.truncate(5)
            raise enospc
        return real_replace(src, dst)

    def savez(fh, **arrays):
        if FAULTS[fault] == "npz":
            fh.write(b"PK\x03\x04 half a zip")
            raise enospc
        return real_savez(fh, **arrays)

    monkeypatch.setattr(attack_module, "attack_cell", cell)
    monkeypatch.setattr(robustkit.io.os, "replace", replace)
    monkeypatch.setattr(np, "savez_compressed", savez)
    if FAULTS[fault] == "results.csv":  # the first cell is kept, the second hits the full disk
        calls = {"n": 0}

        def replace_second(src, dst):
            if Path(dst).name == "results.csv":
                calls["n"] += 1
                if calls["n"] == 2:
                    return replace(src, dst)
            return real_replace(src, dst)

        monkeypatch.setattr(robustkit.io.os, "replace", replace_second)
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    lines = messages(capsys.readouterr().err)
    assert exc.value.code == 2 and len(lines) == 1 and "Traceback" not in lines[0]
    assert re.search(r"failed in cell .*1 of 2 cells are kept .*--resume", lines[0]), lines[0]
    (run_dir,) = list(zoo["reports"].iterdir())
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["status"] == "failed" and meta["error"]
    assert [c["key"] for c in json.loads((run_dir / "cells.json").read_text())] == ["modl-2x|clean|0"]
    assert len(pd.read_csv(run_dir / "results.csv")) == 1
    assert not [p for p in run_dir.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".")]
    for p in run_dir.rglob("*.npz"):  # only whole files (an uncommitted cell's, replaced on resume)
        assert set(np.load(p)) == {"sample", "target", "clean", "attacked", "perturbation"}
    if FAULTS[fault] == "npz":
        assert not list(run_dir.rglob("*.npz"))
    monkeypatch.setattr(attack_module, "attack_cell", real_cell)
    monkeypatch.setattr(robustkit.io.os, "replace", real_replace)
    monkeypatch.setattr(np, "savez_compressed", real_savez)
    with _no_exit():
        main([str(a) for a in [*args, "--resume", run_dir]])
    capsys.readouterr()
    assert json.loads((run_dir / "meta.json").read_text())["status"] == "complete"
    assert len(pd.read_csv(run_dir / "results.csv")) == 2 and len(list((run_dir / "examples").glob("*.npz"))) == 1


class _no_exit:
    """``main`` returns normally on success; fail on any ``SystemExit``."""

    def __enter__(self):
        return self

    def __exit__(self, kind, value, tb):
        if kind is SystemExit:
            pytest.fail(f"robustkit exited with {value.code}")
        return False


# ----------------------------------------------------------------------------- filesystem


@pytest.fixture
def read_only(tmp_path, monkeypatch):
    """A folder nothing can be written in: by permissions, or (as root, where permissions do not
    stop writes) by making every create under it fail with EROFS, as on a read-only mount."""
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    probe = folder / ".probe"
    try:
        probe.touch()
        writable = True
        probe.unlink()
    except OSError:
        writable = False
    if writable:  # root: simulate the read-only mount at the calls that create files and folders
        real_mkstemp, real_mkdir = tempfile.mkstemp, Path.mkdir

        def under(p) -> bool:
            return str(Path(p).resolve()).startswith(str(folder.resolve()))

        def mkstemp(*args, dir=None, **kw):
            if dir is not None and under(dir):
                raise OSError(errno.EROFS, "Read-only file system", str(dir))
            return real_mkstemp(*args, dir=dir, **kw)

        def mkdir(self, *args, **kw):
            if under(self) and not self.exists():
                raise OSError(errno.EROFS, "Read-only file system", str(self))
            return real_mkdir(self, *args, **kw)

        monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
        monkeypatch.setattr(Path, "mkdir", mkdir)
    yield folder
    folder.chmod(0o755)


def _raw(tmp: Path) -> Path:
    from tests.test_loaders import volume, write_fastmri

    k, _, _ = volume(1)
    return write_fastmri(tmp / "raw.h5", k)


FS_CASES: dict[str, Callable[[Path, Path, dict], list]] = {
    "study into a read-only reports folder": lambda ro, t, z: [*RUN_ARGS, "--data", z["data"], "--reports-dir", ro],
    "study below a read-only folder": lambda ro, t, z: [*RUN_ARGS, "--data", z["data"], "--reports-dir", ro / "r"],
    "suite into a read-only reports folder": lambda ro, t, z: ["run", _suite_file(t, z), "--reports-dir", ro, "--no-report"],
    "data prepare --out in a read-only folder": lambda ro, t, z: ["data", "prepare", _raw(t), "--out", ro / "p.h5",
                                                                  "--calib", "8", "--kernel", "3"],
    "data prepare --out below a read-only folder": lambda ro, t, z: ["data", "prepare", _raw(t), "--out",
                                                                     ro / "sub" / "p.h5", "--calib", "8", "--kernel", "3"],
}


def _suite_file(tmp: Path, z: dict) -> Path:
    path = tmp / "s.toml"
    path.write_text(f'[defaults]\ndata = "{z["data"]}"\nsplit = "val"\naccel = {ACCEL}\nsamples = 1\n'
                    '[audit]\nmodels = ["modl"]\nprobe_steps = 1\n')
    return path


@pytest.mark.parametrize("name", FS_CASES)
def test_read_only_location(name, read_only, zoo, tmp_path, capsys):
    args = FS_CASES[name](read_only, tmp_path, zoo)
    refused(args, capsys, tmp_path, r"cannot (create|write) .*(Read-only file system|Permission denied).*"
                                    r"choose a folder you can write to")


def test_data_prepare_checks_free_space_first(tmp_path, capsys, monkeypatch):
    raw = _raw(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10 << 30, 10 << 30, 1 << 20))
    refused(["data", "prepare", raw, "--out", tmp_path / "p.h5", "--calib", "8", "--kernel", "3"], capsys, tmp_path,
            r"not enough free space in .* \(1 MiB free, the next sample needs \d+ MiB\)")


def test_data_prepare_on_a_full_disk_leaves_no_file(tmp_path, capsys, monkeypatch):
    raw = _raw(tmp_path)
    real = h5py.Group.create_dataset

    def full(self, name, *args, **kw):
        if name == "maps":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, name, *args, **kw)

    monkeypatch.setattr(h5py.Group, "create_dataset", full)
    refused(["data", "prepare", raw, "--out", tmp_path / "p.h5", "--calib", "8", "--kernel", "3"], capsys, tmp_path,
            r"cannot write .*p\.h5 \(No space left on device\); free some space")


# ----------------------------------------------------------------------------- permissions


@pytest.mark.parametrize("umask", [0o077, 0o002])
def test_files_get_the_permissions_of_the_umask(umask, zoo, tmp_path):
    from robustkit.models.zoo import save_model
    from robustkit.studies import run as run_study

    old = os.umask(umask)
    try:
        model, card = _tiny("modl", K=2)
        folder = save_model(tmp_path / "zoo2" / "m", model, card)
        frame = run_study("attack", _attack_config(zoo), reports_dir=tmp_path / "r", progress=False)
        from robustkit.report import build_run_page

        pages = [build_run_page(frame.attrs["run_dir"])] if umask == 0o002 else []  # one page is enough (slow)
    finally:
        os.umask(old)
    files = [*folder.iterdir(), *Path(frame.attrs["run_dir"]).rglob("*.*"), *pages]
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in files if p.is_file()}
    assert modes and all(m == 0o666 & ~umask for m in modes.values()), modes


def test_report_in_a_read_only_folder(finished_run, read_only, tmp_path, capsys):
    run_dir, _ = finished_run
    read_only.chmod(0o755)
    copy = shutil.copytree(run_dir, read_only / run_dir.name)
    for folder in (copy, read_only):
        folder.chmod(0o555)
    refused(["report", copy], capsys, tmp_path, r"cannot (create|write) .*choose a folder you can write to")
    copy.chmod(0o755)
