"""The two zoos (yours, then the shipped one), package data, and broken cards that affect only themselves."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pytest
from click.testing import CliRunner

from robustkit.cli import cli, main
from robustkit.errors import RobustkitError
from robustkit.locations import package_dir, shipped_suites, shipped_zoo, user_zoo, using_zoo
from robustkit.models import build_model
from robustkit.models.zoo import CARD, WEIGHTS, list_models, load_model, resolve, save_model, zoo_entries

SMALL = {"width": 8, "depth": 3, "K": 2}
SHIPPED = ["mnmmol-4x", "mnmmol-4x-delta0.05", "mnmmol-4x-delta0.1", "mnmmol-4x-delta0.3", "mnmmol-4x-delta0.5",
           "modl-4x", "mol-4x"]


def run_cli(args: list[str], capsys) -> tuple[int, str]:
    """``robustkit ARGS`` as the console script runs it: (exit status, stderr)."""
    with pytest.raises(SystemExit) as exc:
        main(args)
    return exc.value.code, capsys.readouterr().err


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def zoo(tmp_path, monkeypatch) -> Path:
    """A user zoo (via $ROBUSTKIT_ZOO) with one good default MoDL, ``good``."""
    root = tmp_path / "zoo"
    save_model(root / "good", build_model("modl", SMALL), {"default": True, "data": {"accel": 2.0, "shape": [16, 12]}})
    monkeypatch.setenv("ROBUSTKIT_ZOO", str(root))
    return root


# ------------------------------------------------------------------ package data
def test_shipped_zoo_and_suites_are_package_data():
    assert shipped_zoo() == package_dir() / "zoo" and package_dir() == Path(__import__("robustkit").__file__).resolve().parent
    assert sorted(p.parent.name for p in shipped_zoo().glob(f"*/{CARD}")) == SHIPPED
    assert all((shipped_zoo() / name / WEIGHTS).is_file() for name in SHIPPED)
    assert set(shipped_suites()) == {"quick", "paper"}


def test_shipped_models_load_and_registry_names_find_their_defaults(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBUSTKIT_ZOO", str(tmp_path / "empty"))
    assert [m["folder"] for m in list_models()] == SHIPPED and {m["zoo"] for m in list_models()} == {"shipped"}
    assert resolve("modl") == shipped_zoo() / "modl-4x" and resolve("mnmmol") == shipped_zoo() / "mnmmol-4x"
    model, card = load_model("mol")
    assert model.name == "mol" and card["default"] is True


# ------------------------------------------------------------------ where the user zoo is
def test_user_zoo_is_the_option_then_the_environment_then_the_current_directory(tmp_path, monkeypatch):
    monkeypatch.delenv("ROBUSTKIT_ZOO", raising=False)
    monkeypatch.chdir(tmp_path)
    assert user_zoo() == tmp_path / "models"
    monkeypatch.setenv("ROBUSTKIT_ZOO", str(tmp_path / "env"))
    assert user_zoo() == tmp_path / "env"
    with using_zoo(tmp_path / "opt"):
        assert user_zoo() == tmp_path / "opt"
    assert user_zoo() == tmp_path / "env"


def test_zoo_option_reaches_lookups_and_models_list(zoo, tmp_path, monkeypatch):
    other = tmp_path / "other"
    save_model(other / "mine", build_model("mnmmol", {"width": 8, "depth": 3}), {"data": {"accel": 2.0}})
    result = CliRunner().invoke(cli, ["--zoo", str(other), "models", "list"])
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line for line in result.output.splitlines()[1:]}
    assert rows["mine"].split()[-1] == "user" and "good" not in rows  # --zoo wins over $ROBUSTKIT_ZOO
    assert all(rows[name].split()[-1] == "shipped" for name in SHIPPED)
    assert user_zoo() == zoo  # the option lasts only for its command


def test_a_user_entry_shadows_the_shipped_one_of_the_same_name(zoo):
    save_model(zoo / "modl-4x", build_model("modl", SMALL), {"data": {"accel": 4.0}})
    assert resolve("modl-4x") == zoo / "modl-4x"
    entries = {(e.name, e.zoo): e for e in zoo_entries()}
    assert not entries["modl-4x", "user"].shadowed and entries["modl-4x", "shipped"].shadowed
    assert [m["zoo"] for m in list_models() if m["folder"] == "modl-4x"] == ["user"]
    result = CliRunner().invoke(cli, ["models", "list"])
    assert "shipped (shadowed by yours)" in result.output


def test_a_plain_training_into_a_shipped_name_keeps_the_registry_name_on_the_shipped_default(zoo):
    """``robustkit train --model modl`` writes ``./models/modl-4x`` (not marked default): the name
    ``modl-4x`` now means the user's folder, but ``modl`` still means the shipped default."""
    import shutil

    shutil.rmtree(zoo / "good")  # the fixture's user default
    save_model(zoo / "modl-4x", build_model("modl", SMALL), {"data": {"accel": 4.0}})
    assert resolve("modl-4x") == zoo / "modl-4x"
    assert resolve("modl") == shipped_zoo() / "modl-4x"
    save_model(zoo / "mine", build_model("modl", SMALL), {"data": {"accel": 4.0}, "default": True})
    assert resolve("modl") == zoo / "mine"  # until the user marks one of theirs default


def test_a_user_folder_beside_the_shipped_one_of_its_name_keeps_both_in_one_table(zoo, capsys):
    """``modl`` (the shipped ``modl-4x``) and ``modl-4x`` (the user's ``./models/modl-4x``) are two
    models: the studies and ``models evaluate`` keep both, the shipped one labelled
    ``modl-4x-shipped``; two names for one folder stay one model. (The studies used to drop the
    user's model without a word: both had the label ``modl-4x``.)"""
    import shutil

    import torch

    from robustkit.models.zoo import zoo_labels
    from robustkit.studies.common import load_models

    shutil.rmtree(zoo / "good")
    save_model(zoo / "modl-4x", build_model("modl", SMALL), {"data": {"accel": 4.0}})
    assert zoo_labels([shipped_zoo() / "modl-4x", zoo / "modl-4x", shipped_zoo() / "mol-4x"]) == [
        "modl-4x-shipped", "modl-4x", "mol-4x"]
    data = [{"target": torch.zeros(120, 104, dtype=torch.complex64)}]
    models = load_models(["modl", "modl-4x", "mol"], data, 4.0, torch.device("cpu"))
    assert [m.name for m in models] == ["modl-4x-shipped", "modl-4x", "mol-4x"]
    assert models[1].model.cnn.convs[0].out_channels == SMALL["width"]  # the user's network, not the shipped one
    assert [m.name for m in load_models(["mol", "mol-4x"], data, 4.0, torch.device("cpu"))] == ["mol-4x"]
    # models evaluate labels the same way
    from types import SimpleNamespace

    from robustkit.cli.models import _zoo_relabelled

    refs = ["modl", "sense", "modl-4x", "modl-4x"]
    kept = _zoo_relabelled(refs, [SimpleNamespace(name=r) for r in refs])
    assert [m.name for m in kept] == ["modl-4x-shipped", "sense", "modl-4x"]


def test_a_missing_name_lists_both_zoos(zoo):
    with pytest.raises(RobustkitError) as exc:
        resolve("nope")
    message = str(exc.value)
    assert "\n" not in message and f"user zoo {zoo}: good;" in message
    assert "shipped zoo: " + ", ".join(SHIPPED) in message


# ------------------------------------------------------------------ writing
def test_training_and_saving_refuse_the_installed_package(tmp_path, capsys):
    from robustkit.training import TrainConfig, train

    before = snapshot(shipped_zoo())
    target = shipped_zoo() / "new-model"
    with pytest.raises(RobustkitError, match="inside the robustkit package"):
        train(TrainConfig(model="modl"), target, device="cpu")
    with pytest.raises(RobustkitError, match="read-only"):
        save_model(shipped_zoo() / "modl-4x", build_model("modl", SMALL), {})
    code, err = run_cli(["train", "--model", "modl", "--out", str(target)], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "inside the robustkit package" in err
    code, err = run_cli(["--zoo", str(shipped_zoo()), "train", "--model", "modl"], capsys)
    assert code == 2 and "inside the robustkit package" in err
    assert not target.exists() and snapshot(shipped_zoo()) == before


def test_train_writes_to_the_user_zoo_by_default(tmp_path, monkeypatch):
    import robustkit.recipes

    seen: dict[str, Any] = {}

    def fake_run(config, out, device, resume=False, recipe="default"):  # the CLI's training entry point
        seen["out"] = Path(out)
        return {"epochs_done": 0, "validation": {}}

    monkeypatch.setattr(robustkit.recipes, "run", fake_run)
    monkeypatch.delenv("ROBUSTKIT_ZOO", raising=False)
    monkeypatch.chdir(tmp_path)
    assert CliRunner().invoke(cli, ["train", "--model", "mol", "--accel", "8"]).exit_code == 0
    assert seen["out"].resolve() == (tmp_path / "models" / "mol-8x").resolve()
    assert CliRunner().invoke(cli, ["--zoo", str(tmp_path / "z"), "train", "--model", "modl"]).exit_code == 0
    assert seen["out"] == tmp_path / "z" / "modl-4x"


# ------------------------------------------------------------------ study files by name
def test_run_takes_a_shipped_suite_by_name_or_a_file(tmp_path, monkeypatch, capsys):
    from robustkit.studies.suite import study_file

    monkeypatch.chdir(tmp_path)
    assert study_file("quick") == shipped_suites()["quick"]
    (tmp_path / "quick").write_text("[attack]\n")
    assert study_file("quick") == Path("quick")  # an existing file wins
    for ref, match in [("nope", "no shipped suite 'nope'"), ("studies/quick.toml", "does not exist")]:
        code, err = run_cli(["run", ref, "--reports-dir", str(tmp_path / "reports")], capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1 and match in err and "paper, quick" in err
    assert not (tmp_path / "reports").exists()


# ------------------------------------------------------------------ bad cards (issue 19)
def _edit_card(change: Callable[[dict], Any]) -> Callable[[Path], None]:
    def make(folder: Path) -> None:
        card = json.loads((folder / CARD).read_text())
        (folder / CARD).write_text(json.dumps(change(card)))

    return make


def _without(key: str) -> Callable[[dict], dict]:
    return lambda card: {k: v for k, v in card.items() if k != key}


BAD_CARDS: dict[str, tuple[Callable[[Path], None], str]] = {
    "missing model": (_edit_card(_without("model")), r"has no 'model'"),
    "unknown model": (_edit_card(lambda c: {**c, "model": "unet"}), r"'model' is 'unet'"),
    "weights of the wrong shape": (_edit_card(lambda c: {**c, "config": {**c["config"], "width": 16}}),
                                   r"does not fit the modl config on its card: .* is \[8, 2, 3, 3\], the model expects \[16, 2, 3, 3\]"),
    "config is a list": (_edit_card(lambda c: {**c, "config": [["width", 8]]}), r"'config' must be a JSON object, not a list"),
    "card is a JSON list": (_edit_card(lambda c: [c]), r"holds a JSON list, not an object"),
    "unknown config key": (_edit_card(lambda c: {**c, "config": {**c["config"], "wdith": 8}}), r"unknown config key\(s\) wdith"),
    "accel is a word": (_edit_card(lambda c: {**c, "data": {"accel": "four"}}), r"'data.accel' must be a number ≥ 1 .* not 'four'"),
    "data is a string": (_edit_card(lambda c: {**c, "data": "brain"}), r"'data' must be a JSON object"),
    "not JSON": (lambda folder: (folder / CARD).write_text("{nope"), r"is not valid JSON"),
    "not UTF-8": (lambda folder: (folder / CARD).write_bytes(b"\xff\xfe{}"), r"cannot be read"),
}


@pytest.fixture
def bad_zoo(zoo, request) -> Path:
    make, _ = BAD_CARDS[request.param]
    save_model(zoo / "bad", build_model("modl", SMALL), {})
    make(zoo / "bad")
    return zoo


@pytest.mark.parametrize("bad_zoo", BAD_CARDS, indirect=True)
def test_a_bad_card_is_one_clear_error_and_affects_only_itself(bad_zoo, request, capsys):
    _, match = BAD_CARDS[request.node.callspec.params["bad_zoo"]]
    before = snapshot(bad_zoo)
    with pytest.raises(RobustkitError, match=match) as exc:
        load_model("bad")
    assert "\n" not in str(exc.value) and ";" in str(exc.value)
    code, err = run_cli(["models", "show", "bad"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and err.startswith("robustkit: error: ")
    # the other entries: lookups by folder and registry name, listing
    assert load_model("good")[0].name == "modl" and resolve("modl") == bad_zoo / "good"
    assert load_model("mnmmol")[1]["model"] == "mnmmol"
    assert [m["folder"] for m in list_models() if m["folder"] != "bad"] == ["good", *SHIPPED]
    result = CliRunner().invoke(cli, ["models", "list"])
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line for line in result.output.splitlines()[1:]}
    assert rows["bad"].startswith("bad") and "unusable (user): " in rows["bad"]
    assert rows["good"].split()[1] == "modl" and all(rows[name].split()[-1] == "shipped" for name in SHIPPED)
    assert snapshot(bad_zoo) == before  # nothing written


def test_a_bad_card_named_in_a_study_stops_it_before_anything_is_written(zoo, tmp_path, capsys):
    save_model(zoo / "bad", build_model("modl", SMALL), {})
    _edit_card(lambda c: {**c, "data": {"accel": "four"}})(zoo / "bad")
    from tests.test_training import tiny_dataset

    data, reports = tiny_dataset(tmp_path / "tiny.h5", n=4), tmp_path / "reports"
    code, err = run_cli(["attack", "--model", "bad", "--data", str(data), "--split", "val", "--accel", "2",
                         "--reports-dir", str(reports)], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "'data.accel'" in err
    assert not reports.exists() or not any(reports.iterdir())
