"""CLI plug-ins: ``--model FILE.py:FACTORY`` and ``--model package.module:FACTORY`` in the study
commands and ``models evaluate`` / ``models check``; every bad plug-in is one line, exit 2, nothing written."""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from robustkit.cli import cli, main
from robustkit.errors import RobustkitError
from robustkit.models.plugins import load_plugin
from tests.user_nets import TinyDEQ, TinyNet

NETS = Path(__file__).with_name("user_nets.py")


def test_file_and_module_specs_build_the_network():
    assert type(load_plugin(f"{NETS}:tiny_net")) is not TinyNet  # a fresh import of the file …
    assert type(load_plugin(f"{NETS}:tiny_net")).__name__ == "TinyNet"  # … of the same class
    assert isinstance(load_plugin("tests.user_nets:tiny_deq"), TinyDEQ)
    assert type(load_plugin("tests.user_nets:TinyNet")) is TinyNet  # a class is a factory too


BAD = [
    (f"{NETS.with_name('missing.py')}:tiny_net", "does not exist"),
    ("tests.no_such_module:tiny_net", "no module 'tests.no_such_module'"),
    (f"{NETS}:no_factory", "has no attribute 'no_factory'; callables defined there: "),
    (f"{NETS}:not_callable", "is of type int, not callable"),
    (f"{NETS}:raises", "raised ValueError: no weights here; fix the factory"),
    (f"{NETS}:returns_int", "returned an object of type int, not a torch.nn.Module"),
    (f"{NETS}:wrong_signature", "WrongSignature.forward(kspace) cannot be called as forward(kspace, op)"),
    (f"{NETS}:nothing", "defines neither forward(kspace, op) nor fixed_point_map"),
    ("tests.user_nets:", "is not of the form FILE.py:FACTORY"),
]


@pytest.mark.parametrize("spec, message", BAD, ids=[m.split()[0] + str(i) for i, (_, m) in enumerate(BAD)])
def test_bad_plugins_are_one_line_errors(spec, message):
    with pytest.raises(RobustkitError) as info:
        load_plugin(spec)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_a_file_that_fails_to_import_is_named(tmp_path):
    bad = tmp_path / "broken.py"
    bad.write_text("import torch\ndef f(:\n")
    with pytest.raises(RobustkitError, match=r"broken.py failed to import \(SyntaxError"):
        load_plugin(f"{bad}:f")


def _cli_common(data, reports):
    return ["--data", data, "--samples", "1", "--reports-dir", str(reports), "--no-report"]


COMMANDS = {
    "attack": ["attack", "--eps", "0.05", "--steps", "1", "--draws", "1"],
    "audit": ["audit", "--steps", "1", "--power-iters", "1", "--restarts", "1"],
    "init-test": ["init-test", "--start", "zeros", "--radius", "0.5", "--cap-factor", "1"],
    "sweep-delta": ["sweep-delta"],
    "shift": ["shift", "--axis", "noise", "--noise", "0.05"],
}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_study_commands_run_a_plugin(command, toy_data, tmp_path):
    reports = tmp_path / "reports"
    model = f"{NETS}:tiny_net" if command == "attack" else "tests.user_nets:tiny_deq"
    result = CliRunner().invoke(cli, COMMANDS[command] + ["--model", model] + _cli_common(toy_data, reports),
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    (run_dir,) = list(reports.iterdir())
    meta = json.loads((run_dir / "meta.json").read_text())
    (record,) = meta["models"]
    assert record["name"] == ("TinyNet" if command == "attack" else "TinyDEQ") and record["source"] == model
    assert len(record["state_dict_sha256"]) == 64
    assert json.loads((run_dir / "config.json").read_text())["models"] == [model]
    assert record["name"] in result.output


@pytest.mark.parametrize("command", [*COMMANDS, "models evaluate", "models check"])
@pytest.mark.parametrize("spec, message", [BAD[0], BAD[3], BAD[5], BAD[6]], ids=["missing", "not-callable", "not-module", "signature"])
def test_every_command_refuses_a_bad_plugin_with_exit_2(command, spec, message, toy_data, tmp_path, capsys):
    reports = tmp_path / "reports"
    args = (command.split() + [spec]) if command.startswith("models") else COMMANDS[command] + ["--model", spec] + _cli_common(toy_data, reports)
    with pytest.raises(SystemExit) as info:
        main(args)
    err = capsys.readouterr().err
    assert info.value.code == 2 and message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not reports.exists()


def test_init_test_names_the_missing_protocol_member(toy_data, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(COMMANDS["init-test"] + ["--model", f"{NETS}:tiny_net"] + _cli_common(toy_data, tmp_path / "r"))
    err = capsys.readouterr().err
    assert info.value.code == 2 and "init-test needs the fixed-point protocol member fixed_point_map" in err
    assert "'TinyNet' (TinyNet) has no fixed_point_map" in err and not (tmp_path / "r").exists()


@pytest.fixture
def builtin_is_toy(toy_data, monkeypatch):
    """``models evaluate`` / ``check`` read the built-in data: point them at the toy file."""
    import robustkit.data.builtin

    monkeypatch.setattr(robustkit.data.builtin, "ensure_builtin", lambda *a, **k: toy_data)


def test_models_evaluate_and_check_take_plugins(builtin_is_toy):
    result = CliRunner().invoke(cli, ["models", "evaluate", f"{NETS}:tiny_net", "tests.user_nets:tiny_deq"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "TinyNet" in result.output and "TinyDEQ" in result.output and "SENSE" in result.output
    result = CliRunner().invoke(cli, ["models", "check", "tests.user_nets:tiny_deq", "--limit", "1"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.split("test: ", 1)[1].splitlines()[0])
    assert summary["n"] == 1 and summary["residual_le_1e-3"] == 1.0 and summary["L_ball_max"] < 1
    with pytest.raises(RobustkitError, match="not a zoo model and has no card"):
        CliRunner().invoke(cli, ["models", "check", "tests.user_nets:tiny_deq", "--write-card"], catch_exceptions=False)
    with pytest.raises(RobustkitError, match="models check needs the fixed-point protocol member H_map"):
        CliRunner().invoke(cli, ["models", "check", "tests.user_nets:map_only_deq"], catch_exceptions=False)


def test_the_report_page_names_a_plugin_and_looks_for_no_zoo_card(toy_data, tmp_path):
    reports = tmp_path / "reports"
    args = COMMANDS["attack"] + ["--model", f"{NETS}:tiny_net", "--data", toy_data, "--samples", "1", "--reports-dir", str(reports)]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    (run_dir,) = [p for p in reports.iterdir() if p.is_dir()]
    page = (run_dir / "report.html").read_text()
    assert "TinyNet" in page and "TinyNet (TinyNet)" not in page and "no training curves" not in page


def test_study_files_take_plugins(toy_data, tmp_path):
    study = tmp_path / "s.toml"
    study.write_text(f'[defaults]\ndata = "{toy_data}"\nsamples = 1\n\n'
                     f'[attack]\nmodels = ["{NETS}:tiny_net", "tests.user_nets:tiny_deq"]\neps = [0.05]\nsteps = 1\ndraws = 1\n')
    result = CliRunner().invoke(cli, ["run", str(study), "--reports-dir", str(tmp_path / "r"), "--no-report"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    (run_dir,) = [p for p in (tmp_path / "r").iterdir() if p.name.startswith("attack")]
    assert [m["name"] for m in json.loads((run_dir / "meta.json").read_text())["models"]] == ["TinyNet", "TinyDEQ"]


USER_FAULTS = [  # (command, class in user_nets (a class is a factory), what the one line says)
    ("models evaluate", "WrongShapeMap", "fixed_point_map returned torch.complex64 (2, 16, 15) for the image"),
    ("models check", "NaNDEQ", "fixed_point_map returned NaN or Inf values"),
    ("models evaluate", "NaNNet", "returned NaN or Inf values for k-space"),
    ("attack", "NaNNet", "returned NaN or Inf values for k-space"),
    ("attack", "Raises", "raised ZeroDivisionError: my bug (" + str(NETS)),
    ("models evaluate", "Raises", "raised ZeroDivisionError: my bug (" + str(NETS)),
    ("models check", "BadMargin", "declares m = 2; the margin m must lie in (0, 1)"),
    ("audit", "BadDelta", "declares delta = -1; the ball radius δ must be a positive finite number"),
]


@pytest.mark.parametrize("command, factory, message", USER_FAULTS, ids=[f"{c.split()[-1]}-{f}" for c, f, _ in USER_FAULTS])
def test_a_user_model_that_misbehaves_is_one_line_before_anything_is_written(command, factory, message, toy_data,
                                                                             tmp_path, capsys):
    reports, spec = tmp_path / "reports", f"{NETS}:{factory}"
    if command.startswith("models"):
        args = command.split() + [spec, "--data", toy_data] + (["--limit", "1"] if command.endswith("check") else [])
    else:
        args = COMMANDS[command] + ["--model", spec] + _cli_common(toy_data, reports)
    with pytest.raises(SystemExit) as info:
        main(args)
    err = capsys.readouterr().err
    assert info.value.code == 2 and message in err and err.count("\n") == 1 and "Traceback" not in err, err
    assert not reports.exists()  # the probe refused it before the run folder


def test_a_baseline_that_cannot_take_the_image_size_is_refused_before_the_run_folder(tmp_path, capsys):
    from robustkit.data.toy import toy_dataset

    odd = str(toy_dataset(tmp_path / "odd.h5", n=1, shape=(15, 16), coils=2))
    with pytest.raises(SystemExit) as info:
        main(["attack", "--model", "l1-wavelet", "--kind", "gaussian", *COMMANDS["attack"][1:], *_cli_common(odd, tmp_path / "r")])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "l1-wavelet needs even image sides" in err and not (tmp_path / "r").exists()


def test_a_file_that_exits_at_import_and_a_file_named_as_a_module_are_one_line(tmp_path, monkeypatch):
    (tmp_path / "exits.py").write_text("import sys\nsys.exit(3)\n")
    with pytest.raises(RobustkitError, match=r"exits\.py failed to import \(SystemExit: 3\); fix the file"):
        load_plugin(f"{tmp_path / 'exits.py'}:f")
    (tmp_path / "my_nets_here.py").write_text("")
    monkeypatch.chdir(tmp_path)  # not on sys.path (as under the console script): the file is named, not imported
    with pytest.raises(RobustkitError, match=r"to load the file my_nets_here\.py, write my_nets_here\.py:FACTORY"):
        load_plugin("my_nets_here:net")


def test_models_show_of_a_baseline_says_it_has_no_card(capsys):
    with pytest.raises(SystemExit) as info:
        main(["models", "show", "sense"])
    assert info.value.code == 2 and "sense is a classical baseline, not a zoo model" in capsys.readouterr().err
