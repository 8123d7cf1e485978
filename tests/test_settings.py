"""Settings that mean nothing are refused before anything is written: ∞ and NaN in any number of a
study or a training run, and study configs built in Python that are invalid or of another study."""

from __future__ import annotations

import pytest

from robustkit.cli import main
from robustkit.errors import RobustkitError


def run_cli(args: list[str], capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        main(args)
    return exc.value.code, capsys.readouterr().err


@pytest.mark.parametrize("args", [
    ["init-test", "--model", "sense", "--cap-factor", "inf"],
    ["audit", "--model", "sense", "--delta", "inf"],
    ["bound", "--model", "sense", "--delta", "inf"],
    ["attack", "--model", "sense", "--step-size", "inf"],
    ["attack", "--model", "sense", "--step-size", "nan"],
])
def test_a_study_refuses_a_non_finite_number_and_writes_nothing(args, toy_data, tmp_path, capsys):
    reports = tmp_path / "reports"
    code, err = run_cli([*args, "--data", toy_data, "--reports-dir", str(reports)], capsys)
    assert code == 2 and "must be a finite number" in err and len(err.strip().splitlines()) == 1
    assert not reports.exists()


@pytest.mark.parametrize("option", ["--lr", "--noise", "--adversarial", "--accel", "--max-minutes"])
def test_train_refuses_a_non_finite_number_and_writes_nothing(option, toy_data, tmp_path, capsys):
    out = tmp_path / "m"
    code, err = run_cli(["train", "--model", "modl", "--data", toy_data, option, "inf", "--out", str(out)], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and option in err
    assert not out.exists()


def test_a_config_built_in_python_is_checked_before_the_run_folder(toy_data, tmp_path):
    import robustkit as rk

    reports = tmp_path / "reports"
    with pytest.raises(RobustkitError, match="eps must be a finite number > 0"):
        rk.studies.run("attack", rk.AttackConfig(models=["sense"], data=toy_data, eps=[-0.05]), reports_dir=reports)
    with pytest.raises(RobustkitError, match="delta must be a finite number"):
        rk.studies.run("audit", rk.AuditConfig(models=["sense"], data=toy_data, delta=float("inf")), reports_dir=reports)
    with pytest.raises(RobustkitError, match="audit study takes a config of type AuditConfig, got AttackConfig"):
        rk.studies.run("audit", rk.AttackConfig(models=["sense"], data=toy_data), reports_dir=reports)
    with pytest.raises(RobustkitError, match="unknown key 'bogus'"):
        rk.studies.run("attack", {"models": ["sense"], "data": toy_data, "bogus": 1}, reports_dir=reports)
    assert not reports.exists()


def test_a_mapping_runs_as_its_study_config(toy_data, tmp_path):
    import robustkit as rk

    frame = rk.studies.run("attack", {"models": ["sense"], "data": toy_data, "eps": [0.05], "kinds": ["gaussian"],
                                      "draws": 1, "samples": 1}, reports_dir=tmp_path / "r", progress=False)
    assert set(frame["kind"]) == {"clean", "gaussian"}


def test_train_on_a_file_without_a_train_split_says_what_training_needs(toy_data, tmp_path, capsys):
    out = tmp_path / "m"
    code, err = run_cli(["train", "--model", "modl", "--data", toy_data, "--out", str(out)], capsys)
    assert code == 2 and "training needs a 'train' and a 'val' split, and this file has no 'train' slices" in err and "--split" not in err
    assert not out.exists()


@pytest.mark.parametrize("command", [["train", "--model", "modl"], ["attack", "--model", "sense"]])
def test_a_folder_given_as_data_is_named_a_folder(command, tmp_path, capsys):
    folder = tmp_path / "adir"
    folder.mkdir()
    code, err = run_cli([*command, "--data", str(folder), "--out" if command[0] == "train" else "--reports-dir",
                         str(tmp_path / "out")], capsys)
    assert code == 2 and "is a folder, not a prepared HDF5 file" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_another_anatomy_without_the_study_split_is_read_from_its_test_split_or_whole(tmp_path):
    from robustkit.studies.shift import _split_for
    from tests.test_training import tiny_dataset

    path = tiny_dataset(tmp_path / "trainval.h5")  # splits train and val, no test
    assert _split_for(path, "val") == "val" and _split_for(path, "test") == "all" and _split_for(path, None) == "all"


def test_an_adversarial_eps_above_one_warns_that_it_is_relative():
    from robustkit.errors import RobustkitWarning
    from robustkit.training import TrainConfig

    with pytest.warns(RobustkitWarning, match="500 % of ‖b‖"):
        TrainConfig(model="modl", adversarial=5.0)


def test_report_of_a_folder_of_junk_names_it_as_next_to_a_run(tmp_path, capsys):
    reports = tmp_path / "reports"
    (reports / "attack-20260101-000000").mkdir(parents=True)
    (reports / "notes.txt").write_text("mine")
    code, err = run_cli(["report", "--reports-dir", str(reports)], capsys)
    assert code == 2 and "not run folders (no config.json): attack-20260101-000000" in err
    assert (reports / "notes.txt").read_text() == "mine"
    empty = tmp_path / "empty"
    empty.mkdir()
    main(["report", "--reports-dir", str(empty)])
    assert "no study runs in" in capsys.readouterr().out


def test_a_suite_resume_with_another_data_names_the_option(toy_data, tmp_path, capsys):
    from robustkit.data.toy import toy_dataset

    study = tmp_path / "s.toml"
    study.write_text(f'[attack]\nmodels = ["sense"]\nkinds = ["gaussian"]\neps = [0.05]\ndraws = 1\nsamples = 1\n'
                     f'data = "{toy_data}"\n')
    main(["run", str(study), "--reports-dir", str(tmp_path / "r"), "--no-report"])
    suite = next(p for p in (tmp_path / "r").iterdir() if p.name.startswith("s-"))
    other = str(toy_dataset(tmp_path / "other.h5", n=2, shape=(16, 16), coils=3, seed=1))
    code, err = run_cli(["run", str(study), "--resume", str(suite), "--data", other, "--no-report"], capsys)
    assert code == 2 and f"with --data {other} differs from what the suite" in err


def test_more_samples_than_the_split_holds_warns_and_uses_them_all(toy_data):
    from robustkit.data.evaluation import eval_dataset
    from robustkit.errors import RobustkitWarning

    with pytest.warns(RobustkitWarning, match=r"5 slices asked for, but the test split of .* has 2: all 2 are used"):
        ds, info = eval_dataset(toy_data, None, 4.0, samples=5)
    assert len(ds) == info.n == 2


def test_a_study_warns_of_a_model_whose_card_failed_its_gate_and_records_it(toy_data, tmp_path):
    from robustkit.data.evaluation import eval_dataset
    from robustkit.errors import RobustkitWarning
    from robustkit.models.registry import build_model
    from robustkit.models.zoo import save_model
    from robustkit.studies.common import load_models

    gate = {"passed": False, "checks": [{"name": "converged", "passed": False}, {"name": "lipschitz", "passed": True}]}
    folder = save_model(tmp_path / "m_gate", build_model("mnmmol", {"width": 4, "depth": 2}), {"gate": gate})
    ds, _ = eval_dataset(toy_data, None, 4.0, samples=1)
    with pytest.warns(RobustkitWarning, match=r"model 'm_gate' failed its convergence gate when trained \(converged;"):
        (lm,) = load_models([str(folder)], ds, 4.0, "cpu", data=toy_data)
    assert lm.meta()["gate_failed"] == ["converged"]


def test_a_study_names_a_model_that_leaks_towards_a_frozen_modl(toy_data, tmp_path):
    """An MnM-MOL with a MoDL anchor (the default recipe's) takes the MoDL's image where F_θ does
    not act: a study says so on the terminal, in meta.json and as a report note; one without an
    anchor (the SENSE leak) is not named."""
    from robustkit.data.evaluation import eval_dataset
    from robustkit.errors import RobustkitWarning
    from robustkit.models.registry import build_model
    from robustkit.models.zoo import save_model
    from robustkit.report.runs import model_notes
    from robustkit.studies.common import load_models

    small = {"width": 4, "depth": 2, "leak": 0.04}
    anchored = save_model(tmp_path / "m_anchor", build_model("mnmmol", {**small, "leak_to": "modl", "anchor_K": 1}), {})
    sensed = save_model(tmp_path / "m_sense", build_model("mnmmol", {**small, "leak_to": "sense"}), {})
    ds, _ = eval_dataset(toy_data, None, 4.0, samples=1)
    with pytest.warns(RobustkitWarning) as caught:
        models = load_models([str(anchored), str(sensed)], ds, 4.0, "cpu", data=toy_data)
    named = [str(w.message) for w in caught if "frozen MoDL" in str(w.message)]
    assert len(named) == 1 and named[0].startswith("model 'm_anchor' leaks towards a frozen MoDL")
    meta = {"models": [m.meta() for m in models]}
    assert [m.get("anchor") for m in meta["models"]] == ["modl", None]
    (note,) = model_notes(meta)
    assert "'m_anchor'" in note and "perturbed measurements" in note
