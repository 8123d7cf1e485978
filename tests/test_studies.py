"""The studies end to end on a tiny zoo and tiny data: schemas, resume, bad input, CLI."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from robustkit.cli import cli
from robustkit.errors import RobustkitError, RobustkitWarning, StudyInterrupted
from robustkit.models import build_model
from robustkit.models.zoo import save_model
from robustkit.studies import make_config, run, study_module
from tests.test_training import H, W, tiny_dataset

ACCEL = 2.0


def _tiny(name, accel=ACCEL, shape=(H, W), **config):
    torch.manual_seed(0)
    model = build_model(name, {"width": 8, "depth": 3, **config})
    if name != "modl":
        for p in model.cnn.parameters():
            p.data.mul_(0.1)
    return model, {"data": {"name": "builtin", "accel": accel, "shape": list(shape)}, "default": True,
                   "history": [{"epoch": 1, "val_psnr": 20.0}]}


@pytest.fixture
def zoo(tmp_path, monkeypatch):
    root = tmp_path / "zoo"
    for folder, name, config in [("modl-2x", "modl", {"K": 2}), ("mol-2x", "mol", {"max_iter": 20, "eval_max_iter": 60}),
                                 ("mnmmol-2x", "mnmmol", {"max_iter": 30, "eval_max_iter": 60}),
                                 ("mnmmol-2x-delta0.1", "mnmmol", {"max_iter": 30, "eval_max_iter": 60, "delta": 0.1})]:
        model, card = _tiny(name, **config)
        if folder.endswith("delta0.1"):
            card["default"] = False
        save_model(root / folder, model, card)
    monkeypatch.setenv("ROBUSTKIT_ZOO", str(root))
    data = tiny_dataset(tmp_path / "tiny.h5", n=4)  # splits: train 2, val 2
    return {"root": root, "data": str(data), "reports": tmp_path / "reports"}


def common(zoo, **kw):
    return {"data": zoo["data"], "split": "val", "accel": ACCEL, **kw}


STUDY_SETTINGS = {
    "attack": {"eps": [0.05], "steps": 2, "draws": 2},
    "init-test": {"radii": [0.5], "cap_factor": 2},
    "audit": {"steps": 3, "restarts": 1, "slow_steps": 2, "power_iters": 3, "probe_steps": 1},
    "sweep-delta": {"steps": 2, "restarts": 1, "adv_steps": 1},
    "features": {"features": ["disc"], "sizes": [2], "contrasts": [0.5], "positions": 1, "budget": 1},
}


@pytest.mark.parametrize("name", list(STUDY_SETTINGS))
def test_every_study_returns_its_documented_schema(zoo, name):
    config = make_config(name, common(zoo, **STUDY_SETTINGS[name]))
    frame = run(name, config, reports_dir=zoo["reports"], progress=False)
    module = study_module(name)
    assert list(frame.columns) == list(module.COLUMNS)
    for column in module.COLUMNS:
        assert column in module.__doc__, f"{column} is not documented in {module.__name__}"
    assert (frame["study"] == name).all() and len(frame) > 0
    run_dir = zoo["reports"] / frame.attrs["run_dir"].split("/")[-1]
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["status"] == "complete" and meta["seed"] == 0 and meta["versions"]["torch"]
    assert all(m["weights_sha256"] for m in meta["models"])
    pd.testing.assert_frame_equal(pd.read_csv(run_dir / "results.csv"), frame)
    assert json.loads((run_dir / "config.json").read_text())["study"] == name


def test_attack_rows_are_consistent(zoo):
    config = make_config("attack", common(zoo, models=["modl", "mnmmol"], eps=[0.02, 0.05], steps=3, draws=2))
    frame = run("attack", config, reports_dir=zoo["reports"], progress=False)
    assert set(frame["kind"]) == {"clean", "adversarial", "gaussian"}
    attacked = frame[frame["kind"] != "clean"]
    assert (attacked["perturbation"] <= attacked["eps"] * (1 + 1e-5)).all()
    gauss = attacked[attacked["kind"] == "gaussian"]
    np.testing.assert_allclose(gauss["perturbation"], gauss["eps"], rtol=1e-4)
    np.testing.assert_allclose(frame["psnr_drop"], frame["psnr_clean"] - frame["psnr"])
    deq = frame[frame["model"] == "mnmmol-2x"]
    assert deq["iterations"].notna().all() and frame[frame["model"] == "modl-2x"]["iterations"].isna().all()
    run_dir = zoo["reports"] / frame.attrs["run_dir"].split("/")[-1]
    ex = np.load(run_dir / "examples" / "mnmmol-2x__adversarial__eps0.05.npz")
    assert ex["target"].shape == ex["attacked"].shape == (1, H, W)
    traces = pd.read_csv(run_dir / "traces.csv")
    assert len(traces) == 2 * 2 * 2 * 4  # models × ε × slices × (steps + 1)


def test_init_test_on_a_contractive_toy_reaches_one_fixed_point_from_every_start(zoo, tmp_path, monkeypatch):
    """Fully sampled (AᴴA = I) and a small F_θ: f contracts everywhere, so every start agrees."""
    root = tmp_path / "zoo1"
    model, card = _tiny("mnmmol", accel=1.0)
    save_model(root / "mnmmol-1x", model, card)
    monkeypatch.setenv("ROBUSTKIT_ZOO", str(root))
    config = make_config("init-test", common(zoo, accel=1.0, models=["mnmmol"], radii=[0.1, 1.0, 3.0]))
    frame = run("init-test", config, reports_dir=zoo["reports"], progress=False)
    assert set(frame["start"]) == {"sense", "zero_filled", "zeros", "ball", "noise"}
    assert frame["converged"].all() and frame["same_fixed_point"].all()
    assert (frame["distance"] < 1e-4).all()


def test_audit_recovers_a_known_lipschitz_constant(zoo, tmp_path, monkeypatch):
    """AᴴA = I and F_θ(x) = c·x: H_θ(x) = −(c/λ) x, so L[H_θ] = ‖J‖ = c/λ exactly."""
    from robustkit.studies.audit import AuditConfig, audit_batch
    from robustkit.studies.common import LoadedModel, batches, study_dataset

    c, lam = 4.0, 10.0
    model, card = _tiny("mnmmol", accel=1.0)
    model.cnn = ScaledIdentity(c)
    config = AuditConfig(models=["x"], data=zoo["data"], split="val", accel=1.0, steps=5, restarts=1, power_iters=10, probe_steps=0)
    batch = next(batches(study_dataset(config), 2, torch.device("cpu")))
    rows, traces = audit_batch(LoadedModel("toy", model.eval(), card), batch, config, torch.Generator().manual_seed(0), 0)
    for row in rows:
        for key in ("L", "L_slow", "L_top", "jacobian_norm", "L_max"):
            assert 0.95 * c / lam <= row[key] <= c / lam * (1 + 1e-4), key
        assert row["passes"] and row["converged"]
        # x⁺ = H_θ(x) + Aᴴb = −(c/λ) x + Aᴴb: the residual shrinks by exactly c/λ per plain step
        assert abs(row["rate"] - c / lam) < 1e-3 and not row["rate_exceeds_L"]
    assert {t["estimator"] for t in traces} == {"L", "L_slow", "L_top", "jacobian_norm", "rate_residual"}


class ScaledIdentity(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c

    def forward(self, x):
        return self.c * x


def test_interrupted_run_keeps_cells_and_resumes(zoo, monkeypatch):
    from robustkit.studies import attack as attack_module

    config = make_config("attack", common(zoo, models=["mnmmol"], eps=[0.02, 0.05], kinds=["gaussian"], draws=1))
    real = attack_module.attack_cell
    calls = []

    def interrupting(lm, kind, eps, *args):
        calls.append((kind, eps))
        if eps == 0.05:
            raise KeyboardInterrupt
        return real(lm, kind, eps, *args)

    monkeypatch.setattr(attack_module, "attack_cell", interrupting)
    with pytest.raises(StudyInterrupted, match="--resume") as info:
        run("attack", config, reports_dir=zoo["reports"], progress=False)
    (run_dir,) = list(zoo["reports"].iterdir())
    assert str(run_dir) in str(info.value)
    assert json.loads((run_dir / "meta.json").read_text())["status"] == "interrupted"
    assert len(json.loads((run_dir / "cells.json").read_text())) == 2  # clean and ε = 0.02 kept
    monkeypatch.setattr(attack_module, "attack_cell", real)
    calls.clear()
    frame = run("attack", config, resume=run_dir, progress=False)
    assert sorted(frame["eps"].unique()) == [0.0, 0.02, 0.05] and len(frame) == 3 * 2
    assert json.loads((run_dir / "meta.json").read_text())["status"] == "complete"
    other = make_config("attack", common(zoo, models=["mnmmol"], eps=[0.1], kinds=["gaussian"], draws=1))
    with pytest.raises(RobustkitError, match="differ"):
        run("attack", other, resume=run_dir, progress=False)


def test_runs_never_overwrite_each_other(zoo):
    config = make_config("audit", common(zoo, models=["modl"], probe_steps=1, samples=1))
    a = run("audit", config, reports_dir=zoo["reports"], progress=False).attrs["run_dir"]
    b = run("audit", config, reports_dir=zoo["reports"], progress=False).attrs["run_dir"]
    assert a != b and len(list(zoo["reports"].iterdir())) == 2


def test_bad_study_settings_are_named(zoo):
    with pytest.raises(RobustkitError, match="'epz'"):
        make_config("attack", {"epz": [0.1]})
    with pytest.raises(RobustkitError, match="empty"):
        make_config("attack", {"eps": []})
    with pytest.raises(RobustkitError, match="number"):
        make_config("attack", {"eps": ["x"]})
    with pytest.raises(RobustkitError, match="> 0, got -0.1; e.g. --eps 0.05"):
        make_config("attack", {"eps": [-0.1]})
    with pytest.raises(RobustkitError, match="unknown study"):
        study_module("atack")
    with pytest.raises(RobustkitError, match=r"splits train \(2\), val \(2\); no 'test' — pass one of its splits \(train, val\) or all, e\.g\. --split (train|val)"):
        run("attack", make_config("attack", common(zoo, split="test")), reports_dir=zoo["reports"], progress=False)
    assert not zoo["reports"].exists()  # nothing written for a refused run


def test_model_trained_on_another_size_and_acceleration_runs_and_the_run_records_it(zoo):
    """Not refused: the difference is warned about, kept in meta.json and shown on the report."""
    from robustkit.report.runs import load_run

    model, card = _tiny("mnmmol", shape=(32, 32), max_iter=30, eval_max_iter=60)
    save_model(zoo["root"] / "mnmmol-big", model, {**card, "default": False})
    config = make_config("init-test", common(zoo, models=["mnmmol-big"], accel=3.0, samples=1, radii=[0.5], cap_factor=1))
    with pytest.warns(RobustkitWarning, match=r"trained on builtin, on 32x32 images, at 2x; here it runs on .*tiny.h5, "
                                              rf"on {H}x{W} images, at 3x"):
        frame = run("init-test", config, reports_dir=zoo["reports"], progress=False)
    meta = json.loads((zoo["reports"] / frame.attrs["run_dir"].split("/")[-1] / "meta.json").read_text())
    (entry,) = meta["models"]
    assert entry["mismatch"] == {"shape": {"trained": [32, 32], "data": [H, W]}, "accel": {"trained": 2.0, "data": 3.0},
                                 "data": {"trained": "builtin", "data": zoo["data"]}}
    assert meta["data"]["shape"] == [H, W] and meta["data"]["split"] == "val"
    assert any("32x32" in note for note in load_run(frame.attrs["run_dir"]).notes)


def test_sweep_delta_finds_the_zoo_models_by_delta(zoo):
    from robustkit.studies.sweep_delta import model_refs

    config = make_config("sweep-delta", common(zoo))
    assert model_refs(config) == ["mnmmol-2x-delta0.1", "mnmmol-2x"]
    assert model_refs(make_config("sweep-delta", common(zoo, deltas=[0.3]))) == ["mnmmol-2x"]
    with pytest.raises(RobustkitError, match="--train"):
        model_refs(make_config("sweep-delta", common(zoo, deltas=[0.5])))
    with pytest.raises(RobustkitError, match="unknown key 'delta'"):  # each model is measured at its own δ
        make_config("sweep-delta", common(zoo, delta=0.3))


def test_sweep_delta_trains_a_missing_delta_with_its_recipe(zoo, monkeypatch):
    """--train: the missing δ is trained into the zoo with RECIPE at that δ (training itself stubbed)."""
    import robustkit.training
    from robustkit.studies.sweep_delta import RECIPE, model_refs

    seen = []
    monkeypatch.setattr(robustkit.training, "train", lambda tc, out, device, resume: seen.append((tc, out, resume)))
    refs = model_refs(make_config("sweep-delta", common(zoo, deltas=[0.3, 0.5], train=True)))
    (tc, out, resume), = seen
    assert out.name == "mnmmol-2x-delta0.5" and refs == ["mnmmol-2x", "mnmmol-2x-delta0.5"] and not resume
    assert tc.model == "mnmmol" and tc.accel == ACCEL and tc.model_config["delta"] == 0.5
    assert (tc.lr, tc.lam_lr, tc.init_from, tc.penalty_weight, tc.penalty_threshold, tc.lipschitz_estimate, tc.lipschitz_steps) == (
        RECIPE["lr"], RECIPE["lam_lr"], RECIPE["init_from"], RECIPE["penalty_weight"], RECIPE["penalty_threshold"],
        RECIPE["lipschitz_estimate"], RECIPE["lipschitz_steps"])


def invoke(args):
    return CliRunner().invoke(cli, args, catch_exceptions=False)


def cli_common(zoo):
    return ["--data", zoo["data"], "--split", "val", "--accel", "2", "--reports-dir", str(zoo["reports"]), "--no-report"]


@pytest.mark.parametrize("args", [
    ["attack", "--model", "mnmmol", "--eps", "0.05", "--steps", "1", "--draws", "1", "--samples", "1"],
    ["init-test", "--model", "mnmmol", "--radius", "0.5", "--samples", "1"],
    ["audit", "--model", "mnmmol", "--steps", "2", "--power-iters", "2", "--samples", "1"],
    ["sweep-delta", "--deltas", "0.1", "--samples", "1"],
], ids=lambda a: a[0])
def test_cli_commands_end_to_end(zoo, args):
    result = invoke(args + cli_common(zoo))
    assert result.exit_code == 0, result.output
    assert "results:" in result.output
    (run_dir,) = list(zoo["reports"].iterdir())
    assert run_dir.name.startswith(args[0]) and (run_dir / "results.csv").exists()


def test_cli_resume_takes_the_runs_own_settings(zoo):
    """``robustkit attack --resume DIR`` alone continues the run with its recorded settings (as the
    interrupt message says); an option given that differs from the run's is still refused."""
    args = ["attack", "--model", "mnmmol", "--eps", "0.05", "--kind", "gaussian", "--draws", "1", "--samples", "1"]
    assert invoke(args + cli_common(zoo)).exit_code == 0
    (run_dir,) = list(zoo["reports"].iterdir())
    before = (run_dir / "results.csv").read_text()
    result = invoke(["--seed", "0", "attack", "--resume", str(run_dir), "--no-report"])
    assert result.exit_code == 0, result.output
    assert (run_dir / "results.csv").read_text() == before and len(list(zoo["reports"].iterdir())) == 1
    with pytest.raises(RobustkitError, match=r"differ .*keys: eps"):
        invoke(["attack", "--resume", str(run_dir), "--eps", "0.1", "--no-report"])
    with pytest.raises(RobustkitError, match=r"differ .*keys: seed"):
        invoke(["--seed", "3", "attack", "--resume", str(run_dir), "--no-report"])


def test_cli_run_study_file(zoo, tmp_path):
    study = tmp_path / "s.toml"
    study.write_text(
        f'[defaults]\ndata = "{zoo["data"]}"\nsplit = "val"\naccel = 2\nsamples = 1\n\n'
        '[attack]\nmodels = ["mnmmol"]\neps = [0.05]\nsteps = 1\ndraws = 1\n\n'
        '[init-test]\nmodels = ["mnmmol"]\nradii = [0.5]\n'
    )
    result = invoke(["run", str(study), "--reports-dir", str(zoo["reports"]), "--no-report"])
    assert result.exit_code == 0, result.output
    suites = [p for p in zoo["reports"].iterdir() if (p / "suite.json").exists()]
    assert len(suites) == 1
    record = json.loads((suites[0] / "suite.json").read_text())
    assert set(record["studies"]) == {"attack", "init-test"}
    for name in record["studies"].values():
        assert json.loads((zoo["reports"] / name / "meta.json").read_text())["status"] == "complete"
    bad = tmp_path / "bad.toml"
    bad.write_text("[attack]\nepz = [0.1]\n")
    from robustkit.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["run", str(bad), "--reports-dir", str(tmp_path / "r2")])
    assert exit_info.value.code == 2 and not (tmp_path / "r2").exists()
    bad.write_text("[atack]\neps = [0.1]\n")
    with pytest.raises(RobustkitError, match="unknown study 'atack'"):
        invoke(["run", str(bad)])


def test_cli_bad_input_exit_codes(zoo, capsys):
    from robustkit.cli import main

    for args, message in [
        (["attack", "--eps", "-0.1"], "eps must be a finite number > 0, got -0.1"),
        (["attack", "--eps", "0"], "eps must be a finite number > 0, got 0.0 (ε = 0 is the clean solve"),
        (["attack", "--model", "nope"], "no model 'nope'"),
        (["init-test", "--model", "modl"], "unrolled"),
    ]:
        with pytest.raises(SystemExit) as info:
            main(args + cli_common(zoo))
        assert info.value.code == 2
        assert message in capsys.readouterr().err
    assert not zoo["reports"].exists()


def test_the_attack_config_refuses_eps_zero_and_warns_of_eps_above_one():
    """ε = 0 has no amplification (0/0): refused, also from a study file; ε > 1 (5 meant as 5 %?) warns."""
    from robustkit.errors import RobustkitWarning
    from robustkit.studies.attack import AttackConfig

    with pytest.raises(RobustkitError, match="ε = 0 is the clean solve"):
        AttackConfig(eps=[0.0, 0.05]).validate()
    with pytest.warns(RobustkitWarning, match="500 % of ‖b‖"):
        AttackConfig(eps=[5.0]).validate()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", RobustkitWarning)
        AttackConfig(eps=[1.5], kinds=["motion"]).validate()  # ε in rad and pixels per width: no warning


@pytest.mark.parametrize("name", ["quick", "paper"])
def test_shipped_study_files_are_valid(name):
    """The shipped suites are package data, read by name (robustkit run quick) and by path alike."""
    from robustkit.locations import shipped_suites
    from robustkit.studies.suite import read_study_file

    studies = read_study_file(name)
    assert list(studies)[:4] == ["attack", "init-test", "audit", "sweep-delta"]
    assert "features" in studies
    assert "bound" in studies
    assert "shift" in studies
    assert read_study_file(shipped_suites()[name]) == studies


def test_study_command_builds_its_report_page(zoo):
    args = ["attack", "--model", "mnmmol", "--eps", "0.05", "--steps", "1", "--draws", "1", "--samples", "1",
            "--data", zoo["data"], "--split", "val", "--accel", "2", "--reports-dir", str(zoo["reports"])]
    result = invoke(args)
    assert result.exit_code == 0, result.output
    (run_dir,) = [p for p in zoo["reports"].iterdir() if p.is_dir()]
    assert (run_dir / "report.html").exists() and (zoo["reports"] / "index.html").exists()
    assert f"report: {run_dir / 'report.html'}" in result.output


def test_interrupted_suite_resumes_where_it_stopped(zoo, tmp_path, monkeypatch):
    from robustkit.studies import init_test as init_module
    from robustkit.studies.suite import run_suite

    study = tmp_path / "s.toml"
    study.write_text(
        f'[defaults]\ndata = "{zoo["data"]}"\nsplit = "val"\naccel = 2\nsamples = 1\nmodels = ["mnmmol"]\n\n'
        '[audit]\nsteps = 1\nrestarts = 1\nslow_steps = 1\npower_iters = 1\nprobe_steps = 1\n\n'
        '[init-test]\nradii = [0.5]\n'
    )
    real = init_module._model_cell

    def stop(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(init_module, "_model_cell", stop)
    with pytest.raises(StudyInterrupted, match="--resume") as info:
        run_suite(study, {}, zoo["reports"], progress=False)
    suite_dir = next(p for p in zoo["reports"].iterdir() if (p / "suite.json").exists())
    assert str(suite_dir) in str(info.value)
    record = json.loads((suite_dir / "suite.json").read_text())
    audit_dir = zoo["reports"] / record["studies"]["audit"]
    audited = (audit_dir / "results.csv").stat().st_mtime_ns
    monkeypatch.setattr(init_module, "_model_cell", real)
    assert run_suite(study, {}, resume=suite_dir, progress=False) == suite_dir
    record = json.loads((suite_dir / "suite.json").read_text())
    for name in ("audit", "init-test"):
        assert json.loads((zoo["reports"] / record["studies"][name] / "meta.json").read_text())["status"] == "complete"
    assert (audit_dir / "results.csv").stat().st_mtime_ns == audited  # the finished study was not rerun
    study.write_text(study.read_text().replace("radii = [0.5]", "radii = [0.7]"))
    with pytest.raises(RobustkitError, match="differs"):
        run_suite(study, {}, resume=suite_dir, progress=False)


@pytest.fixture
def unsplit(zoo, tmp_path):
    """The tiny data centre-cropped to 12x10 and prepared without splits (every sample's split None)."""
    from dataclasses import replace

    from robustkit.data.crop import crop_sample
    from robustkit.data.prepared import read_samples, write_prepared

    samples = [replace(crop_sample(s, (12, 10)), meta={"scale": 1.0}) for s in read_samples(zoo["data"])]
    return str(write_prepared(tmp_path / "unsplit.h5", samples, {"source": "test"}))


def test_models_evaluate_and_check_run_on_a_file_without_splits_at_its_own_size(zoo, unsplit):
    """No split in the file: every sample; a 16x16-trained model runs on 12x10 with a warning."""
    with pytest.warns(RobustkitWarning, match=r"'mnmmol-2x' was trained on builtin, on 16x16 images; here it runs on .*unsplit\.h5, on 12x10"):
        result = invoke(["models", "evaluate", "modl", "mnmmol", "--data", unsplit, "--accel", "2"])
    assert result.exit_code == 0, result.output
    assert f"{unsplit} (all samples), 4 slices of 12x10, 2×" in result.output
    rows = {line.split()[0]: line.split() for line in result.output.splitlines()[4:] if not line.startswith("WARNING")}
    assert set(rows) == {"SENSE", "modl-2x", "mnmmol-2x"} and all(np.isfinite(float(rows[m][1])) for m in rows)
    with pytest.warns(RobustkitWarning, match="12x10"):
        result = invoke(["models", "check", "mnmmol", "--data", unsplit, "--limit", "1"])
    assert result.exit_code == 0, result.output
    first = result.output.splitlines()[0]
    assert first.startswith("all: ") and json.loads(first[5:])["n"] == 1


def test_run_file_data_and_split_replace_the_files_own(zoo, unsplit, tmp_path):
    """`robustkit run FILE --data F`: every study reads F (default split: all, as F has none)."""
    study = tmp_path / "s.toml"
    study.write_text(f'[init-test]\ndata = "{zoo["data"]}"\nsplit = "val"\naccel = 2\nsamples = 1\nmodels = ["mnmmol"]\n'
                     'radii = [0.5]\ncap_factor = 1\n')
    with pytest.warns(RobustkitWarning, match="12x10"):
        result = invoke(["run", str(study), "--data", unsplit, "--split", "all", "--reports-dir", str(zoo["reports"]), "--no-report"])
    assert result.exit_code == 0, result.output
    (run_dir,) = [p for p in zoo["reports"].iterdir() if p.name.startswith("init-test")]
    config, meta = (json.loads((run_dir / f).read_text()) for f in ("config.json", "meta.json"))
    assert config["data"] == unsplit and config["split"] == "all"
    assert meta["data"] == {"name": unsplit, "path": unsplit, "split": "all", "accel": 2.0, "shape": [12, 10], "slices": 1}
    assert meta["models"][0]["mismatch"]["shape"] == {"trained": [H, W], "data": [12, 10]}


def test_the_default_split_is_every_sample_without_splits_and_test_with_them(zoo, unsplit):
    from robustkit.data.evaluation import eval_dataset

    assert eval_dataset(unsplit, None, 2.0)[1].split == "all"
    assert eval_dataset(zoo["data"], "val", 2.0)[1].n == 2
    with pytest.raises(RobustkitError, match=r"has splits train \(2\), val \(2\); no 'test' — pass one of its splits \(train, val\) or all, e\.g\. --split (train|val)"):
        eval_dataset(zoo["data"], None, 2.0)
    with pytest.raises(RobustkitError, match=r"has 4 samples without a split; no 'val' — use --split all"):
        eval_dataset(unsplit, "val", 2.0)


def test_an_unconverged_toy_deq_is_flagged_in_table_csv_and_conclusion(zoo, tmp_path, monkeypatch):
    """A toy MnM-MOL whose solve cannot converge (cap of 2 iterations, tolerance 1e-12): the CSV
    says converged = False, the terminal table and a warning line flag it, the report's conclusion
    says the robustness numbers are not of a fixed point, and the attack's rows record the
    implicit backward (capped at 1 iteration, so it does not converge either)."""
    from robustkit.report.conclusions import conclude
    from robustkit.report.runs import load_run

    root = tmp_path / "zoo-stuck"
    model, card = _tiny("mnmmol", eval_max_iter=2, eval_tol=1e-12, backward_max_iter=1, backward_tol=1e-12)
    save_model(root / "mnmmol-2x", model, card)
    monkeypatch.setenv("ROBUSTKIT_ZOO", str(root))
    result = invoke(["attack", "--model", "mnmmol", "--kind", "adversarial", "--eps", "0.05", "--steps", "2",
                     "--samples", "1"] + cli_common(zoo))
    assert result.exit_code == 0, result.output
    assert "0/1!" in result.output
    assert "WARNING: mnmmol-2x, clean, ε = 0: solve converged on 0 of 1 slice;" in result.output
    (run_dir,) = list(zoo["reports"].iterdir())
    frame = pd.read_csv(run_dir / "results.csv")
    assert not frame["converged"].astype(bool).any() and (frame["iterations"] == 2).all()
    adversarial = frame[frame["kind"] == "adversarial"]
    assert (adversarial["backward_converged"] == 0).all() and (adversarial["backward_residual"] > 0).all()
    sentences = conclude(load_run(run_dir))
    assert any("clean solve converged on 0 of 1 slice; the robustness numbers below are not of a fixed point" in s
               for s in sentences), sentences
    assert any("implicit backward behind the attack's gradients converged on 0 % of steps" in s for s in sentences)


def test_the_terminal_table_summarises_numbers_flags_residuals_and_text():
    from robustkit.studies.common import summary_table

    frame = pd.DataFrame({"model": ["a", "a", "b"], "eps": [0.05] * 3, "L": [0.9, 0.95, 0.97],
                          "status": ["holds", "violated", "holds"], "converged": [True, True, False],
                          "residual": [1e-6, 3e-6, 2e-3]})
    table = summary_table(frame, ["model", "eps"], ["L", "status", "converged", "residual"])
    assert list(table.columns) == ["model", "eps", "L", "status", "converged", "residual", "n"]
    a, b = table.to_dict("records")
    assert a == {"model": "a", "eps": 0.05, "L": "0.925 ± 0.035", "status": "holds 1, violated 1", "converged": "2/2",
                 "residual": "max 3.0e-06", "n": 2}
    assert b["status"] == "holds 1" and b["converged"] == "0/1!" and b["L"] == "0.970"  # one slice: no spread to show


def test_an_unconverged_attack_backward_is_flagged_in_the_terminal_table_and_warned():
    """The backward residual of a group whose implicit backward missed its tolerance on some PGD step
    gets a ``!`` and a warning line, like an unconverged solve; a fully converged one neither."""
    from robustkit.studies.common import convergence_warnings, summary_table

    frame = pd.DataFrame({"model": ["a", "a", "b"], "kind": ["adversarial"] * 3, "eps": [0.05] * 3,
                          "backward_residual": [2e-4, 1.6e-3, 1e-4], "backward_converged": [1.0, 0.5, 1.0]})
    table = summary_table(frame, ["model", "kind", "eps"], ["backward_residual"])
    assert list(table["backward_residual"]) == ["max 1.6e-03 !", "max 1.0e-04"]
    (line,) = convergence_warnings(frame, ["model", "kind", "eps"])
    assert line.startswith("a, adversarial, ε = 0.05: the implicit backward behind the attack's gradients converged on 75 %")
    assert "1.6e-03" in line and "lower estimate" in line


def test_an_unknown_study_key_suggests_the_close_one_and_a_missing_group_key_prints_a_dash():
    from robustkit.studies.common import summary_table

    with pytest.raises(RobustkitError, match=r"unknown key 'eval_accels' in \[shift\] of s\.toml; did you mean 'accels'\?"):
        make_config("shift", {"eval_accels": [2.0]}, "[shift] of s.toml")
    frame = pd.DataFrame({"model": ["a", "a"], "radius": [0.5, float("nan")], "iterations": [3.0, 4.0]})
    assert list(summary_table(frame, ["model", "radius"], ["iterations"])["radius"]) == [0.5, "—"]
