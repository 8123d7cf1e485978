"""Training stages end at convergence gates; --max-minutes stops mid-epoch and resumes exactly; bad
training input (a file as --out, a corrupt checkpoint, bad model configs, a changed resume) is one
line with exit 2 and changes nothing.

The toy DEQ: ``F_θ(x) = s·x`` exactly (depth 2, width 4: ``relu(x) − relu(−x) = x`` per real
channel), so ``H_θ = (1 − s/λ) I − AᴴA`` with ``AᴴA`` between 0 and I: with ``s/λ = ½``,
``L[H_θ] = ½`` and the iteration contracts to the Tikhonov solution; the gate must pass it.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from robustkit.analysis.gate import GateConfig, convergence_gate
from robustkit.cli import main
from robustkit.errors import GateFailed, RobustkitError
from robustkit.models import build_model
from robustkit.models.zoo import read_card, save_model
from robustkit.training import TrainConfig, _dataset, train
from tests.test_training import data  # noqa: F401  (fixture: the tiny prepared file)

TOY = {"width": 4, "depth": 2}
TINY_MODL = {"width": 4, "depth": 2, "K": 1}


def toy_model(name: str, scale: float):
    """Model ``name`` (depth 2, width 4) with ``F_θ(x) = scale · x`` exactly."""
    model = build_model(name, TOY)
    first, last = model.cnn.convs
    with torch.no_grad():
        for conv in (first, last):
            conv.weight.zero_()
            conv.bias.zero_()
        for c, (channel, sign) in enumerate([(0, 1), (0, -1), (1, 1), (1, -1)]):
            first.weight[c, channel, 1, 1] = sign
            last.weight[channel, c, 1, 1] = sign * scale
    return model


def toy_mnmmol(folder: Path, scale: float = 5.0) -> str:
    """A zoo folder holding MnM-MOL with ``F_θ(x) = scale · x`` and λ = 10."""
    save_model(folder, toy_model("mnmmol", scale), {"data": {"accel": 2.0}})
    return str(folder)


def run_cli(args: list[str], capsys) -> tuple[int, str]:
    """``robustkit ARGS`` exactly as the console script runs it: (exit status, stderr without the
    progress bars, which tqdm draws on stderr with carriage returns)."""
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    return code, "\n".join(line.strip() for line in err.splitlines() if line.strip() and "it/s" not in line and "/it" not in line)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_toy_is_the_identity_times_scale(tmp_path):
    from robustkit.models.zoo import load_model

    model, _ = load_model(toy_mnmmol(tmp_path / "toy", scale=3.0))
    x = torch.randn(2, 6, 5, dtype=torch.complex64)
    assert torch.allclose(model.cnn(x), 3.0 * x, atol=1e-6)


def test_gate_passes_a_contraction_and_fails_impossible_thresholds(data, tmp_path):
    from robustkit.models.zoo import load_model

    model, _ = load_model(toy_mnmmol(tmp_path / "toy"))
    val = _dataset(TrainConfig(model="mnmmol", data=data, accel=2), "val", vary=False)
    result = convergence_gate(model, val)
    assert result.passed and result.n == 2
    by_name = {c["name"]: c for c in result.checks}
    assert by_name["lipschitz"]["L_max"] == pytest.approx(0.5, abs=0.02)  # L[(1 − s/λ) I − AᴴA] = ½
    failed = convergence_gate(model, val, config=GateConfig(threshold=0.4))
    assert not failed.passed and "convergence gate 'lipschitz' failed" in failed.failure("here")
    assert "0.4" in failed.failure("here") and "try:" in failed.failure("here")


def test_mol_is_gated_on_the_lipschitz_constant_of_its_cnn(data):
    """MOL's constraint is L[F_θ] ≤ 1 − m: with F_θ = ½·x the estimate is ½, so the gate's bound
    0.4 fails on it, while the solve (a contraction) converges and starts in the ball agree."""
    val = _dataset(TrainConfig(model="mol", data=data, accel=2), "val", vary=False)
    result = convergence_gate(toy_model("mol", 0.5), val, config=GateConfig(threshold=0.4))
    by_name = {c["name"]: c for c in result.checks}
    assert by_name["converged"]["passed"] and by_name["ball_starts"]["passed"] and not result.passed
    assert by_name["lipschitz"]["L_max"] == pytest.approx(0.5, abs=1e-3) and "L[F_θ]" in result.failure("here")


def test_a_gate_that_passes_is_recorded_on_the_card(data, tmp_path):
    cfg = TrainConfig(model="mnmmol", data=data, accel=2, epochs=1, lr=1e-7, lam_lr=0.0, init_from=toy_mnmmol(tmp_path / "toy"),
                      lipschitz_steps=2, model_config=TOY)
    card = train(cfg, tmp_path / "m", torch.device("cpu"), progress=False)
    assert card["gate"]["passed"] and {c["name"] for c in card["gate"]["checks"]} == {"converged", "lipschitz", "ball_starts"}
    assert all(c["value"] == 1.0 for c in card["gate"]["checks"])


def test_a_solve_that_cannot_converge_stops_training_with_exit_3(data, tmp_path, capsys):
    toy = toy_mnmmol(tmp_path / "toy")
    out = tmp_path / "m"
    code, err = run_cli(["train", "--model", "mnmmol", "--data", data, "--accel", "2", "--epochs", "1", "--recipe", "one",
                         "--init-from", toy, "--lr", "1e-7", "--lam-lr", "0", "--lipschitz-steps", "2", "--set", "width=4",
                         "--set", "depth=2", "--set", "eval_max_iter=2", "--val-samples", "1", "--out", str(out)], capsys)
    lines = err.strip().splitlines()
    assert code == 3 and len(lines) == 1 and "Traceback" not in err, err
    assert "convergence gate 'converged' failed" in lines[0] and "0% of 1 validation slices" in lines[0] and "try:" in lines[0]
    assert read_card(out)["gate"]["passed"] is False


def test_default_recipe_stages_and_gates_are_recorded(data, tmp_path, capsys):
    """With --init-from and the SENSE anchor the recipe runs MnM-MOL (λ learnt), the λ scan and
    MnM-MOL (λ fixed), each gated, each for --epochs."""
    out = tmp_path / "m"
    code, err = run_cli(["train", "--model", "mnmmol", "--data", data, "--accel", "2", "--epochs", "1", "--lr", "1e-6",
                         "--init-from", toy_mnmmol(tmp_path / "toy"), "--set", "leak_to=sense", "--lipschitz-steps", "2", "--set", "width=4",
                         "--set", "depth=2", "--out", str(out)], capsys)
    assert code == 0, err
    card = read_card(out)
    assert [s["stage"] for s in card["stages"]] == ["2-mnmmol", "3-lambda", "4-mnmmol-fixed-lambda"]
    assert card["gate"]["passed"] and all(s["gate"]["passed"] for s in card["stages"])
    scan = card["stages"][1]["lambda_scan"]
    assert [r["factor"] for r in scan] == [1.0, 1.3, 1.7] and card["stages"][1]["chosen"] == max(
        (r for r in scan if r["passed"]), key=lambda r: r["psnr"])["factor"]
    assert card["stages"][2]["training"]["lam_lr"] == 0.0
    assert card["stages"][0]["training"]["penalty_threshold"] == pytest.approx(0.96)  # 1 − 2m
    # the MnM-MOL stages train with the leak κ = 2m towards the SENSE image, and the final model carries it
    assert all(s["training"]["model_config"]["leak"] == pytest.approx(0.04) for s in card["stages"] if "training" in s)
    assert all(s["training"]["model_config"]["leak_to"] == "sense" for s in card["stages"] if "training" in s)
    assert card["config"]["leak"] == pytest.approx(0.04) and card["config"]["leak_to"] == "sense"


def test_by_default_the_warm_start_modl_becomes_the_frozen_anchor(data, tmp_path, capsys):
    """The recipe's default anchor (no ``--set leak_to``): the MnM-MOL stages pull towards the
    warm-start MoDL's image (its K as ``anchor_K``), the MnM-MOL stage trains one epoch per
    ``ANCHORED_EPOCH_SHARE`` (at least 1) also after --init-from, and the final model carries that
    MoDL unchanged."""
    from robustkit.models.zoo import load_model

    warm = tmp_path / "warm"
    save_model(warm, toy_model("modl", 5.0).eval(), {"data": {"accel": 2.0}})
    modl, _ = load_model(str(warm))
    out = tmp_path / "m"
    code, err = run_cli(["train", "--model", "mnmmol", "--data", data, "--accel", "2", "--epochs", "3", "--lr", "1e-6",
                         "--init-from", str(warm), "--lipschitz-steps", "2", "--set", "width=4", "--set", "depth=2",
                         "--out", str(out)], capsys)
    assert code == 0, err
    card = read_card(out)
    assert [s["stage"] for s in card["stages"]] == ["2-mnmmol"] and card["stages"][0]["epochs"] == 1
    assert all(s["training"]["model_config"]["leak_to"] == "modl" for s in card["stages"] if "training" in s)
    assert card["config"]["leak_to"] == "modl" and card["config"]["anchor_K"] == modl.config.K
    final, _ = load_model(str(out))
    assert all(torch.equal(v, final.anchor.state_dict()[k]) for k, v in modl.state_dict().items())


def test_a_warm_start_that_carries_a_modl_anchor_keeps_it_with_its_settings(data, tmp_path, capsys):
    """--init-from an MnM-MOL with a MoDL anchor (anchor_K = 3): the recipe's model keeps that anchor,
    its weights and its K, not the default K = 10."""
    from robustkit.models.zoo import load_model

    source = build_model("mnmmol", {**TOY, "leak": 0.04, "leak_to": "modl", "anchor_K": 3})
    source.cnn.load_state_dict(toy_model("mnmmol", 5.0).cnn.state_dict())
    save_model(tmp_path / "warm", source.eval(), {"data": {"accel": 2.0}})
    out = tmp_path / "m"
    code, err = run_cli(["train", "--model", "mnmmol", "--data", data, "--accel", "2", "--epochs", "1", "--lr", "1e-6",
                         "--init-from", str(tmp_path / "warm"), "--lipschitz-steps", "2", "--set", "width=4",
                         "--set", "depth=2", "--out", str(out)], capsys)
    assert code == 0, err
    final, card = load_model(str(out))
    assert card["config"]["anchor_K"] == 3 == final.anchor.config.K
    assert all(torch.equal(v, final.anchor.state_dict()[k]) for k, v in source.anchor.state_dict().items())


def test_a_warm_start_without_a_modl_anchor_is_refused_before_anything_is_written(data, tmp_path, capsys):
    """The default anchor is a MoDL's image: --init-from an MnM-MOL that carries none is one line
    (exit 2) naming both ways on, and --out is not created."""
    out = tmp_path / "m"
    code, err = run_cli(["train", "--model", "mnmmol", "--data", data, "--accel", "2", "--epochs", "1",
                         "--init-from", toy_mnmmol(tmp_path / "toy"), "--set", "width=4", "--set", "depth=2",
                         "--out", str(out)], capsys)
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "without a MoDL anchor" in err and "trained MoDL" in err and "--set leak_to=sense" in err
    assert not out.exists()


@pytest.mark.parametrize("args, epochs, schedule", [
    (["--model", "mnmmol"], 30, "cosine"),  # the recipe with its MoDL anchor
    (["--model", "mnmmol", "--epochs", "7"], 7, "cosine"),
    (["--model", "mnmmol", "--lr-schedule", "constant"], 30, "constant"),
    (["--model", "mnmmol", "--set", "leak_to=sense"], 10, "constant"),  # every stage trains --epochs
    (["--model", "mnmmol", "--recipe", "one"], 10, "constant"),
    (["--model", "modl"], 10, "constant"),
])
def test_train_defaults_follow_the_recipe(args, epochs, schedule, tmp_path, monkeypatch):
    """--epochs and --lr-schedule default to 30 and cosine for the MnM-MOL recipe with its MoDL
    anchor (what docs/training.md measured against same-budget MoDLs), else to a single stage's."""
    import robustkit.recipes as recipes

    seen = {}

    def run(config, out, device, **kwargs):
        seen.update(epochs=config.epochs, lr_schedule=config.lr_schedule)
        return {"epochs_done": config.epochs, "validation": {}}

    monkeypatch.setattr(recipes, "run", run)
    main(["train", *args, "--out", str(tmp_path / "m")])
    assert seen == {"epochs": epochs, "lr_schedule": schedule}


def test_without_init_from_a_modl_anchor_takes_the_epochs_and_the_mnmmol_stages_one(data, tmp_path, capsys, monkeypatch):
    """One command: the default MoDL anchor without ``--init-from`` trains the MoDL (stage 1) for
    ``--epochs`` and each MnM-MOL stage for ``epochs // ANCHORED_EPOCH_SHARE`` (at least 1); the final
    model's anchor is stage 1's MoDL, bit for bit. Stage 1's trained weights are swapped for the toy
    ``F_θ(x) = 5x`` (its card kept), so that the MnM-MOL stages' gates pass in two tiny epochs."""
    import robustkit.recipes as recipes
    from robustkit.models.zoo import load_model
    from robustkit.recipes import ANCHORED_EPOCH_SHARE

    def train(config, folder, *args, **kwargs):
        card = real_train(config, folder, *args, **kwargs)
        if Path(folder).name == "1-modl":
            save_model(folder, toy_model("modl", 5.0), {k: v for k, v in read_card(folder).items() if k != "weights_sha256"})
        return card

    real_train = recipes.train
    monkeypatch.setattr(recipes, "train", train)
    out = tmp_path / "m"
    code, err = run_cli(["train", "--model", "mnmmol", "--data", data, "--accel", "2", "--epochs", "2", "--lr", "1e-6",
                         "--lipschitz-steps", "2", "--set", "width=4", "--set", "depth=2", "--out", str(out)], capsys)
    assert code == 0, err
    card = read_card(out)
    stages = {s["stage"]: s for s in card["stages"]}
    assert list(stages) == ["1-modl", "2-mnmmol"]  # with a MoDL anchor the recipe ends at stage 2
    assert stages["1-modl"]["epochs"] == 2 and 2 // ANCHORED_EPOCH_SHARE == 0 and stages["2-mnmmol"]["epochs"] == 1
    modl, _ = load_model(str(out / "stages" / "1-modl"))
    final, _ = load_model(str(out))
    stage2, _ = load_model(str(out / "stages" / "2-mnmmol"))
    assert all(torch.equal(v, final.state_dict()[k]) for k, v in stage2.state_dict().items())
    assert card["gate"]["passed"] and card["epochs_done"] == 3
    assert card["config"]["anchor_K"] == modl.config.K == 10
    assert all(torch.equal(v, final.anchor.state_dict()[k]) for k, v in modl.state_dict().items())


def test_a_recipe_whose_certificate_misses_its_margin_tightens_the_constraint(data, tmp_path, capsys, monkeypatch):
    """Stage 2 failing the gate on L ≤ 1 − m alone is followed by stage 2b (weight × 4, T − m/2, a
    third of the epochs), from which the λ scan and stage 4 continue; any other failed check still
    stops the recipe with exit 3."""
    import robustkit.analysis.gate as gate
    from robustkit.recipes import TIGHTEN_WEIGHT, TIGHTENED

    real, calls = gate.convergence_gate, []

    def first_fails_on(check):
        def fake(*args, **kwargs):
            result = real(*args, **kwargs)
            calls.append(result)
            if len(calls) == 1:  # stage 2's gate
                for c in result.checks:
                    if c["name"] == check:
                        c.update(passed=False, value=0.0)
            return result
        return fake

    monkeypatch.setattr(gate, "convergence_gate", first_fails_on("lipschitz"))
    out = tmp_path / "m"
    args = ["train", "--model", "mnmmol", "--data", data, "--accel", "2", "--epochs", "3", "--lr", "1e-6",
            "--init-from", toy_mnmmol(tmp_path / "toy"), "--set", "leak_to=sense", "--lipschitz-steps", "2", "--set", "width=4", "--set", "depth=2"]
    code, err = run_cli([*args, "--out", str(out)], capsys)
    assert code == 0, err
    card = read_card(out)
    assert [s["stage"] for s in card["stages"]] == ["2-mnmmol", TIGHTENED, "3-lambda", "4-mnmmol-fixed-lambda"]
    two, tight, four = card["stages"][0], card["stages"][1], card["stages"][3]
    assert two["gate"]["passed"] is False and tight["gate"]["passed"] and card["gate"]["passed"]
    assert tight["training"]["penalty_weight"] == pytest.approx(TIGHTEN_WEIGHT * two["training"]["penalty_weight"])
    assert tight["training"]["penalty_threshold"] == pytest.approx(0.95) and tight["epochs"] == 1
    assert four["training"]["penalty_weight"] == pytest.approx(tight["training"]["penalty_weight"])

    calls.clear()
    monkeypatch.setattr(gate, "convergence_gate", first_fails_on("ball_starts"))
    code, err = run_cli([*args, "--out", str(tmp_path / "n")], capsys)
    assert code == 3 and "gate 'ball_starts' failed" in err and not (tmp_path / "n" / "stages" / TIGHTENED).exists()


@pytest.mark.parametrize("anchor_recorded", [True, False])
def test_a_recipe_stopped_by_the_budget_resumes_at_its_stage(anchor_recorded, data, tmp_path, capsys, monkeypatch):
    """A recipe stopped by --max-minutes resumes at its stage; one whose recipe.json predates the
    recorded anchor (no ``leak_to``: it pulled towards SENSE, then the default) resumes as SENSE."""
    import json

    import robustkit.training

    clock = iter(range(0, 10_000, 30))  # every reading of the training clock advances 30 s
    monkeypatch.setattr(robustkit.training, "_now", lambda: next(clock))
    out = tmp_path / "m"
    args = ["train", "--model", "mnmmol", "--data", data, "--accel", "2", "--epochs", "1", "--lr", "1e-6", "--lipschitz-steps", "2",
            "--init-from", toy_mnmmol(tmp_path / "toy"), "--set", "leak_to=sense", "--set", "width=4", "--set", "depth=2", "--out", str(out)]
    code, err = run_cli([*args, "--max-minutes", "1"], capsys)
    assert code == 4 and "stopped by --max-minutes in 2-mnmmol" in err and "--resume" in err, err
    assert "gate" not in read_card(out / "stages" / "2-mnmmol")  # not gated past its budget
    assert 0 < read_card(out / "stages" / "2-mnmmol")["stopped"]["step"] < 4 and not (out / "card.json").exists()
    record = json.loads((out / "recipe.json").read_text())
    assert record["config"]["model_config"]["leak_to"] == "sense"
    if not anchor_recorded:
        del record["config"]["model_config"]["leak_to"]
        (out / "recipe.json").write_text(json.dumps(record))
    monkeypatch.undo()
    code, err = run_cli(["train", "--model", "mnmmol", "--out", str(out), "--resume"], capsys)
    assert code == 0, err
    card = read_card(out)
    assert card["gate"]["passed"] and [s["stage"] for s in card["stages"]][-1] == "4-mnmmol-fixed-lambda"


def test_penalty_weight_makes_a_violation_of_m_cost_the_data_loss():
    from robustkit.analysis.lipschitz import penalty
    from robustkit.recipes import penalty_weight_for

    w, m, T = penalty_weight_for(2e-3, 0.02), 0.02, 0.96
    assert float(w * penalty(torch.tensor(T + m, dtype=torch.float64), T)) == pytest.approx(2e-3)


@pytest.mark.parametrize("case", ["modl", "mnmmol", "modl-adversarial"])
def test_max_minutes_stops_mid_epoch_and_resume_is_exact(case, data, tmp_path, monkeypatch):
    """Also for MnM-MOL with the top-singular estimate, which starts each step from the previous
    step's vector (penalised from T = 0, so that the vector steers every step): the checkpoint
    keeps that vector. And for adversarial training, whose PGD starts are drawn at every step."""
    import robustkit.training
    from safetensors.torch import load_file

    model = case.split("-")[0]
    settings = {"modl": {"model_config": TINY_MODL},
                "mnmmol": {"model_config": {**TOY, "leak": 0.04}, "lipschitz_estimate": "top", "lipschitz_steps": 2,
                           "penalty_threshold": 0.0, "gate": False},
                "modl-adversarial": {"model_config": TINY_MODL, "adversarial": 0.05, "adversarial_steps": 2}}[case]
    cfg = TrainConfig(**{"model": model, "data": data, "accel": 2, "epochs": 2, "lr": 3e-3, **settings})
    train(cfg, tmp_path / "whole", torch.device("cpu"), progress=False)

    clock = iter(range(0, 10_000, 30))  # every reading of the clock advances 30 s
    monkeypatch.setattr(robustkit.training, "_now", lambda: next(clock))
    stopped = train(TrainConfig(**{**cfg.__dict__, "max_minutes": 1.0}), tmp_path / "cut", torch.device("cpu"), progress=False)
    assert stopped["stopped"] == {"reason": "max_minutes", "epoch": 1, "step": 3, "steps": 4}
    assert "epochs_done" not in stopped and not (tmp_path / "cut" / "log.csv").exists()
    monkeypatch.undo()
    card = train(cfg, tmp_path / "cut", torch.device("cpu"), resume=True, progress=False)
    assert card["epochs_done"] == 2 and "stopped" not in card
    whole, cut = load_file(tmp_path / "whole" / "weights.safetensors"), load_file(tmp_path / "cut" / "weights.safetensors")
    assert all(torch.equal(whole[k], cut[k]) for k in whole)
    assert [r["train_mse"] for r in card["history"]] == pytest.approx([r["train_mse"] for r in read_card(tmp_path / "whole")["history"]])


def test_cli_max_minutes_message_names_resume(data, tmp_path, capsys, monkeypatch):
    import robustkit.training

    clock = iter(range(0, 10_000, 30))
    monkeypatch.setattr(robustkit.training, "_now", lambda: next(clock))
    out = tmp_path / "m"
    main(["train", "--model", "modl", "--data", data, "--accel", "2", "--epochs", "2", "--max-minutes", "1",
          "--set", "width=4", "--set", "depth=2", "--set", "K=1", "--out", str(out)])
    assert "stopped by --max-minutes in epoch 1" in capsys.readouterr().out and "--resume" in read_card(out)["command"] or True
    assert read_card(out)["stopped"]["step"] == 3
    monkeypatch.undo()
    code, err = run_cli(["train", "--model", "modl", "--out", str(out), "--resume"], capsys)
    assert code == 0, err
    assert read_card(out)["epochs_done"] == 2 and read_card(out)["training"]["accel"] == 2


# --------------------------------------------------------------------------- bad training input


def _trained_modl(data: str, out: Path, capsys) -> None:
    code, err = run_cli(["train", "--model", "modl", "--data", data, "--accel", "2", "--epochs", "1", "--set", "width=4",
                         "--set", "depth=2", "--set", "K=1", "--out", str(out)], capsys)
    assert code == 0, err


def _corrupt(out: Path) -> None:
    (out / "train_state.pt").write_bytes(b"\x00not a checkpoint" * 10)


class _Evil:
    def __reduce__(self):
        return (exec, ("open('PWNED', 'w').write('x')",))


def _malicious(out: Path) -> None:
    with open(out / "train_state.pt", "wb") as f:
        pickle.dump(_Evil(), f)


def _bad_memory(out: Path) -> None:
    state = torch.load(out / "train_state.pt", weights_only=True)
    torch.save({**state, "constraint_states": [{"top": "not a tensor"}]}, out / "train_state.pt")


BAD_RESUME = {
    "corrupt train_state.pt": (_corrupt, [], "not a readable training checkpoint"),
    "train_state.pt with a bad constraint memory": (_bad_memory, [], "lacks the fields"),
    "malicious train_state.pt": (_malicious, [], "not a readable training checkpoint"),
    "--set width=8": (None, ["--set", "width=8"], "would change model_config"),
    "another model": (None, ["--model", "mol"], "holds a modl run, not mol"),
    "another accel": (None, ["--accel", "8"], "would change accel from 2.0 to 8.0"),
    "another lr": (None, ["--lr", "0.1"], "would change lr"),
}


@pytest.mark.parametrize("name", sorted(BAD_RESUME))
def test_resume_refuses_a_different_or_broken_run(name, data, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "m"
    _trained_modl(data, out, capsys)
    damage, args, match = BAD_RESUME[name]
    if damage:
        damage(out)
    before = snapshot(tmp_path)
    args = args if "--model" in args else ["--model", "modl", *args]
    code, err = run_cli(["train", *args, "--out", str(out), "--resume"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert match in err and err.startswith("robustkit: error: ")
    assert snapshot(tmp_path) == before and not (tmp_path / "PWNED").exists()


BAD_FRESH = {
    "--set K=-5": (["--set", "K=-5"], "K=-5 is not valid: expected an integer ≥ 1"),
    "--set K=abc": (["--set", "K=abc"], "K='abc' is not valid: expected an integer"),
    "--set width=-1": (["--set", "width=-1"], "width=-1 is not valid: expected an integer ≥ 1"),
    "--set solver=newton": (["--model", "mnmmol", "--set", "solver=newton"], "solver='newton' is not valid: expected one of"),
    "--out is a file": (["--out", "FILE"], "is a file, not a folder"),
    "--max-minutes 0": (["--max-minutes", "0"], "--max-minutes must be > 0"),
    "--val-samples 0": (["--val-samples", "0"], "--val-samples must be ≥ 1"),
    "--noise -0.1": (["--noise", "-0.1"], "--noise must be ≥ 0, got -0.1"),
    "--penalty-weight -1": (["--model", "mnmmol", "--penalty-weight", "-1"], "--penalty-weight must be ≥ 0"),
}


@pytest.mark.parametrize("name", sorted(BAD_FRESH))
def test_bad_training_input_is_one_line_and_writes_nothing(name, data, tmp_path, capsys):
    args, match = BAD_FRESH[name]
    (tmp_path / "FILE").write_text("keep me")
    args = [str(tmp_path / "FILE") if a == "FILE" else a for a in args]
    args = args if "--model" in args else ["--model", "modl", *args]
    args = args if "--out" in args else [*args, "--out", str(tmp_path / "new")]
    before = snapshot(tmp_path)
    code, err = run_cli(["train", "--data", data, "--accel", "2", *args], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert match in err
    assert snapshot(tmp_path) == before and not (tmp_path / "new").exists()


def test_card_with_a_bad_config_is_refused_on_load(tmp_path):
    import json

    from robustkit.models.zoo import load_model

    folder = Path(toy_mnmmol(tmp_path / "toy"))
    card = json.loads((folder / "card.json").read_text())
    card["config"]["max_iter"] = -5
    (folder / "card.json").write_text(json.dumps(card))
    with pytest.raises(RobustkitError, match="max_iter=-5 is not valid"):
        load_model(str(folder))


def test_gate_failure_is_an_error_with_exit_code_3():
    assert issubclass(GateFailed, RobustkitError) and GateFailed.exit_code == 3


def test_ctrl_c_in_train_says_what_is_kept_and_how_to_go_on(data, tmp_path, capsys, monkeypatch):
    import robustkit.recipes

    def interrupted(config, folder, *args, **kwargs):
        if Path(folder).name == "late":  # as if an epoch's checkpoint was written before Ctrl-C
            Path(folder).mkdir(parents=True, exist_ok=True)
            (Path(folder) / "train_state.pt").write_bytes(b"")
        raise KeyboardInterrupt

    monkeypatch.setattr(robustkit.recipes, "run", interrupted)
    for name, words in (("early", "interrupted before the first checkpoint; nothing to resume in"),
                        ("late", f"the last checkpoint in {tmp_path / 'late'} is kept")):
        code, err = run_cli(["train", "--model", "modl", "--data", data, "--accel", "2", "--out", str(tmp_path / name)], capsys)
        assert code == 130 and words in err
    assert "--resume` continues from it" in err


def test_the_recipe_names_each_stage_on_the_terminal(data, tmp_path, capsys):
    main(["train", "--model", "mnmmol", "--data", data, "--accel", "2", "--epochs", "1", "--lr", "1e-6",
          "--init-from", toy_mnmmol(tmp_path / "toy"), "--set", "leak_to=sense", "--lipschitz-steps", "2", "--set", "width=4", "--set", "depth=2",
          "--out", str(tmp_path / "m")])
    out = capsys.readouterr().out
    heads = [line.split(":")[0] for line in out.splitlines() if line.startswith("stage ")]
    assert heads == ["stage 2-mnmmol", "stage 3-lambda", "stage 3-lambda", "stage 4-mnmmol-fixed-lambda"]
    assert "λ × 1, 1.3, 1.7" in out and "kept" in out


def test_a_warm_start_gives_its_width_and_depth_and_a_different_one_is_refused_before_writing(data, tmp_path, capsys):
    """--init-from copies F_θ, so the recipe builds F_θ as the warm start's (no --set width/depth
    needed); a --set that disagrees is one line, and --out is not created."""
    from robustkit.models.zoo import load_model

    warm = tmp_path / "warm"
    save_model(warm, toy_model("modl", 5.0).eval(), {"data": {"accel": 2.0}})
    out = tmp_path / "m"
    base = ["train", "--model", "mnmmol", "--data", data, "--accel", "2", "--epochs", "1", "--lr", "1e-6",
            "--init-from", str(warm), "--lipschitz-steps", "2"]
    code, err = run_cli([*base, "--out", str(out)], capsys)
    assert code == 0, err
    model, card = load_model(str(out))
    assert (card["config"]["width"], card["config"]["depth"]) == (4, 2)
    code, err = run_cli([*base, "--set", "width=8", "--out", str(tmp_path / "n")], capsys)
    assert code == 2 and len(err.splitlines()) == 1 and "has F_θ of width 4, but --set width=8" in err, err
    assert not (tmp_path / "n").exists()


def test_a_resume_that_would_retrain_a_stage_a_later_stage_started_from_is_refused(data, tmp_path, capsys):
    """With a MoDL anchor stage 2 carries stage 1's MoDL: resuming a finished run with more --epochs
    would train stage 1 on under it. Refused in one line, recipe.json and the model unchanged."""
    warm = tmp_path / "warm"
    save_model(warm, toy_model("modl", 5.0).eval(), {"data": {"accel": 2.0}})
    out = tmp_path / "m"
    (out / "stages" / "1-modl").mkdir(parents=True)
    save_model(out / "stages" / "1-modl", toy_model("modl", 5.0).eval(),
               {"data": {"accel": 2.0}, "epochs_done": 2, "training": {"epochs": 2}})
    code, err = run_cli(["train", "--model", "mnmmol", "--data", data, "--accel", "2", "--epochs", "2", "--lr", "1e-6",
                         "--init-from", str(warm), "--lipschitz-steps", "2", "--out", str(tmp_path / "first")], capsys)
    assert code == 0, err
    # a one-command run: stage 1 (2 epochs, done) and stage 2 started from it
    import shutil

    shutil.copytree(tmp_path / "first" / "stages" / "2-mnmmol", out / "stages" / "2-mnmmol")
    record = {"config": {**read_card(tmp_path / "first")["training"], "init_from": None}, "stages": []}
    import json

    (out / "recipe.json").write_text(json.dumps(record))
    before = (out / "recipe.json").read_text()
    code, err = run_cli(["train", "--model", "mnmmol", "--out", str(out), "--resume", "--epochs", "4"], capsys)
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "would train stage 1-modl on from 2 to 4 epochs, but stage 2-mnmmol already started from it" in err
    assert (out / "recipe.json").read_text() == before


def test_the_anchor_settings_given_build_the_recipes_stage_1(data, tmp_path, monkeypatch):
    """``--set anchor_K=3`` without --init-from: stage 1 trains the MoDL with K = 3, the anchor the
    MnM-MOL stage expects (it used to train K = 10 and fail after it)."""
    import robustkit.recipes as recipes

    seen = {}

    def train(config, folder, *args, **kwargs):
        seen[Path(folder).name] = config.model_config
        raise RobustkitError("stop here")

    monkeypatch.setattr(recipes, "train", train)
    with pytest.raises(RobustkitError, match="stop here"):
        recipes.run(TrainConfig(model="mnmmol", data=data, accel=2, epochs=1, model_config={**TOY, "anchor_K": 3}),
                    tmp_path / "m", torch.device("cpu"), progress=False)
    assert seen["1-modl"] == {**TOY, "K": 3}


def test_a_warm_start_says_what_it_leaves_behind(data, tmp_path):
    """--init-from a model stopped by --max-minutes warns that its weights are taken as they are; an
    anchored MnM-MOL warm-starting a model without an anchor warns that the MoDL is left behind; a
    width mismatch is one line naming the --set that fixes it."""
    from robustkit.errors import RobustkitWarning
    from robustkit.training import warm_start

    save_model(tmp_path / "cut", toy_model("modl", 5.0), {"stopped": {"reason": "max_minutes", "epoch": 1, "step": 3, "steps": 7}})
    with pytest.warns(RobustkitWarning, match=r"stopped by --max-minutes \(epoch 1, step 3 of 7\)"):
        warm_start(build_model("mnmmol", TOY), str(tmp_path / "cut"))
    anchored = build_model("mnmmol", {**TOY, "leak": 0.04, "leak_to": "modl", "anchor_K": 1})
    save_model(tmp_path / "anchored", anchored, {})
    with pytest.warns(RobustkitWarning, match="leaks towards a frozen MoDL, and this model has no anchor"):
        warm_start(build_model("mnmmol", TOY), str(tmp_path / "anchored"))
    with pytest.raises(RobustkitError, match=r"has F_θ of width 4, depth 2, unlike this model's; pass --set width=4 --set depth=2"):
        warm_start(build_model("mnmmol", {"width": 8, "depth": 2}), str(tmp_path / "cut"))


def test_an_epoch_row_shows_small_learning_rates():
    from robustkit.training import _shown

    assert _shown(1e-5) == 1e-5 and _shown(0.00012345) == 0.000123 and _shown(0.123456) == 0.1235 and _shown(0.0) == 0.0
