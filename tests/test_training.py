"""A short training run lowers the loss; checkpoints resume; the CLI trains into a zoo folder."""

import csv
import functools

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from robustkit.cli import cli
from robustkit.data.prepared import write_prepared
from robustkit.data.sample import Sample
from robustkit.errors import RobustkitError
from robustkit.physics.fft import fft2c
from robustkit.training import TrainConfig, train

H, W, C = 16, 16, 4


def smooth_image(rng, h=H, w=W):
    yy, xx = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    img = np.zeros((h, w))
    for _ in range(3):
        cy, cx, r = rng.uniform(-0.4, 0.4, 2).tolist() + [rng.uniform(0.2, 0.5)]
        img += ((yy - cy) ** 2 + (xx - cx) ** 2 < r**2) * rng.uniform(0.3, 1)
    return img * np.exp(1j * 0.3 * (yy + xx))


def tiny_dataset(path, n=6):
    rng = np.random.default_rng(0)
    yy, xx = np.meshgrid(np.linspace(-1, 1, H), np.linspace(-1, 1, W), indexing="ij")
    maps = np.stack([np.exp(-((yy - np.cos(a)) ** 2 + (xx - np.sin(a)) ** 2)) * np.exp(1j * a) for a in np.linspace(0, 2 * np.pi, C, endpoint=False)])
    maps = maps / np.sqrt((np.abs(maps) ** 2).sum(0, keepdims=True))
    samples = []
    for i in range(n):
        x = smooth_image(rng)
        x = x / np.abs(x).max()
        k = fft2c(torch.from_numpy(maps * x)).numpy()
        split = "train" if i < n - 2 else "val"
        samples.append(Sample(kspace=k.astype(np.complex64), maps=maps.astype(np.complex64), target=x.astype(np.complex64), meta={"split": split, "scale": 1.0}))
    write_prepared(path, samples, {"source": "test"})
    return path


@pytest.fixture
def data(tmp_path):
    return str(tiny_dataset(tmp_path / "tiny.h5"))


def test_short_training_lowers_the_loss_and_resumes(data, tmp_path):
    cfg = TrainConfig(model="modl", data=data, accel=2, epochs=3, lr=3e-3, model_config={"width": 8, "depth": 3, "K": 2})
    out = tmp_path / "modl"
    card = train(cfg, out, torch.device("cpu"), progress=False)
    losses = [row["train_mse"] for row in card["history"]]
    assert losses[-1] < losses[0]
    assert card["epochs_done"] == 3 and len(card["weights_sha256"]) == 64
    with open(out / "log.csv") as f:
        assert len(list(csv.DictReader(f))) == 3
    cfg.epochs = 4
    card = train(cfg, out, torch.device("cpu"), resume=True, progress=False)
    assert card["epochs_done"] == 4 and len(card["history"]) == 4


def test_existing_output_is_not_overwritten(data, tmp_path):
    cfg = TrainConfig(model="modl", data=data, accel=2, epochs=1, model_config={"width": 4, "depth": 2, "K": 1})
    train(cfg, tmp_path / "m", torch.device("cpu"), progress=False)
    before = (tmp_path / "m" / "weights.safetensors").read_bytes()
    with pytest.raises(RobustkitError, match="--resume"):
        train(cfg, tmp_path / "m", torch.device("cpu"), progress=False)
    assert (tmp_path / "m" / "weights.safetensors").read_bytes() == before


def test_mnmmol_training_records_lipschitz_and_iterations(data, tmp_path):
    cfg = TrainConfig(model="mnmmol", data=data, accel=2, epochs=1, lr=1e-3, lipschitz_steps=2, gate=False,
                      model_config={"width": 8, "depth": 3, "max_iter": 30, "eval_max_iter": 40})
    card = train(cfg, tmp_path / "mnm", torch.device("cpu"), progress=False)
    row = card["history"][0]
    assert "train_L" in row and "val_iterations" in row and np.isfinite(row["train_L"])


def test_mnmmol_with_a_modl_anchor_trains_f_theta_and_leaves_the_anchor_as_warm_started(data, tmp_path):
    """``leak_to = "modl"``: the anchor comes from --init-from and stays frozen through training;
    without --init-from the run is refused before anything is written."""
    from robustkit.models.zoo import load_model

    small = {"width": 8, "depth": 3}
    train(TrainConfig(model="modl", data=data, accel=2, epochs=1, model_config={**small, "K": 2}), tmp_path / "modl",
          torch.device("cpu"), progress=False)
    mnm = {**small, "leak": 0.04, "leak_to": "modl", "anchor_K": 2, "max_iter": 30, "eval_max_iter": 40}
    cfg = TrainConfig(model="mnmmol", data=data, accel=2, epochs=1, lr=1e-3, lipschitz_steps=2, gate=False,
                      init_from=str(tmp_path / "modl"), model_config=mnm)
    train(cfg, tmp_path / "mnm", torch.device("cpu"), progress=False)
    modl, _ = load_model(str(tmp_path / "modl"))
    trained, _ = load_model(str(tmp_path / "mnm"))
    assert all(torch.equal(v, trained.anchor.state_dict()[k]) for k, v in modl.state_dict().items())
    assert not all(torch.equal(a, b) for a, b in zip(trained.cnn.parameters(), modl.cnn.parameters()))
    cfg.init_from = None
    with pytest.raises(RobustkitError, match="--init-from"):
        train(cfg, tmp_path / "fresh", torch.device("cpu"), progress=False)
    assert not (tmp_path / "fresh").exists()


def test_cli_train(data, tmp_path):
    out = tmp_path / "cli-modl"
    result = CliRunner().invoke(cli, ["--seed", "1", "train", "--model", "modl", "--data", data, "--accel", "2", "--epochs", "1",
                                      "--set", "width=4", "--set", "depth=2", "--set", "K=1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "card.json").exists()


def constrained_mnmmol(data, delta: float = 0.3):
    """A tiny MnM-MOL at its fixed point on one training slice, and ``term_of(**TrainConfig fields)``
    → ``constraint_term``'s (term, L) there, with a fixed generator for the ascent's pairs."""
    from robustkit.batch import operator_of
    from robustkit.data.prepared import PreparedDataset
    from robustkit.models import build_model
    from robustkit.physics.masks import MaskSpec
    from robustkit.training import constraint_term

    ds = PreparedDataset(data, split="train", mask=MaskSpec(accel=2.0))
    batch = {k: v[None] for k, v in ds[0].items()}
    op = operator_of(batch)
    torch.manual_seed(0)
    model = build_model("mnmmol", {"width": 8, "depth": 3, "delta": delta}).eval()
    with torch.no_grad():
        x = model(batch["kspace"], op)

    def term_of(state: dict | None = None, **fields):
        config = TrainConfig(model="mnmmol", **fields)
        return constraint_term(model, x, batch["kspace"], op, config, torch.Generator().manual_seed(0), state=state)

    term_of.x, term_of.op = x, op
    return model, term_of


def test_mnmmol_constraint_depends_on_the_ball_radius(data):
    """The training estimate of L[H_θ](x*; δ) changes with δ (a larger ball holds more of H_θ's
    nonlinearity), so models trained at different δ are constrained differently."""
    estimates = []
    for delta in (0.05, 1.0):
        _, term_of = constrained_mnmmol(data, delta)
        term, L = term_of(penalty_threshold=0.0, penalty_weight=1.0)
        assert term > 0 and term.requires_grad
        estimates.append(float(L))
    assert estimates[0] != estimates[1]


def test_penalty_acts_on_the_chosen_lipschitz_estimate(data):
    """"both" is the larger of the "ball" and "slow" estimates, "all" the largest of "ball", "slow"
    and "top", per sample; each is recomputed with a graph; an unknown name is refused."""
    _, term_of = constrained_mnmmol(data)
    L = {}
    for kind in ("ball", "slow", "top", "both", "all"):
        term, L[kind] = term_of(penalty_threshold=0.0, penalty_weight=1.0, lipschitz_estimate=kind)
        assert term.requires_grad and float(term.detach()) == pytest.approx(float(L[kind]) ** 2, rel=1e-5)
    assert float(L["ball"]) != float(L["slow"])
    assert float(L["both"]) == pytest.approx(max(float(L["ball"]), float(L["slow"])), rel=1e-6)
    assert float(L["all"]) == pytest.approx(max(float(L[k]) for k in ("ball", "slow", "top")), rel=1e-6)
    with pytest.raises(RobustkitError, match="Lipschitz estimate"):
        TrainConfig(model="mnmmol", lipschitz_estimate="power")


def test_the_top_estimate_tracks_its_singular_vector_between_steps(data):
    """"top": a few Lanczos steps per training step from the previous step's vector (kept in
    ``state``), so repeated calls climb towards ‖J_H(x*)‖₂: after four calls of 3 steps the pair
    estimate is within 2 % of what a 60-step Lanczos run finds."""
    from robustkit.analysis.lipschitz import jacobian_spectral_norm

    model, term_of = constrained_mnmmol(data)
    state: dict = {}
    values = [float(term_of(state, lipschitz_estimate="top", penalty_threshold=0.0, lipschitz_steps=3)[1])
              for _ in range(4)]
    assert "top" in state and state["top"].shape == term_of.x.shape
    norm = float(jacobian_spectral_norm(model.H_map(term_of.op), term_of.x, iters=60, tol=1e-6).estimate)
    assert values[-1] > values[0]
    assert values[-1] >= 0.98 * norm


def test_penalty_kind_and_separate_slow_threshold(data):
    """The barrier kind replaces relu(L − T)²; with a slow-mode threshold each estimate is penalised
    against its own T (and summed) and the reported L is the larger; bad combinations are refused."""
    from robustkit.analysis.lipschitz import penalty

    model, term_of = constrained_mnmmol(data)
    term_of = functools.partial(term_of, penalty_weight=2.0)
    L = {kind: float(term_of(lipschitz_estimate=kind, penalty_threshold=0.0)[1]) for kind in ("ball", "slow")}
    T = 2 * max(L.values())  # feasible for both: the barrier is finite and smooth there
    term, L_ball = term_of(lipschitz_estimate="ball", penalty_threshold=T, penalty_kind="barrier")
    assert float(term.detach()) == pytest.approx(2 * float(penalty(L_ball, T, "barrier")), rel=1e-5)
    assert float(term.detach()) == pytest.approx(-2 * np.log(T - L["ball"]), rel=1e-5)
    term.backward()  # differentiable in θ
    assert model.cnn.net[0].weight.grad is not None

    T_ball, T_slow = L["ball"] / 2, L["slow"] / 4  # both violated, by different margins
    term, L_both = term_of(lipschitz_estimate="both", penalty_threshold=T_ball, slow_threshold=T_slow)
    expected = 2 * ((L["ball"] - T_ball) ** 2 + (L["slow"] - T_slow) ** 2)
    assert float(term.detach()) == pytest.approx(expected, rel=1e-4)
    assert float(L_both) == pytest.approx(max(L.values()), rel=1e-6)
    term, _ = term_of(lipschitz_estimate="both", penalty_threshold=T_ball, slow_threshold=L["slow"] + 0.1)
    assert float(term.detach()) == pytest.approx(2 * (L["ball"] - T_ball) ** 2, rel=1e-4)  # slow mode below its T

    with pytest.raises(RobustkitError, match="penalty kind"):
        TrainConfig(model="mnmmol", penalty_kind="hinge")
    with pytest.raises(RobustkitError, match="lipschitz-estimate both"):
        TrainConfig(model="mnmmol", lipschitz_estimate="ball", slow_threshold=0.99)
    result = CliRunner().invoke(cli, ["train", "--model", "modl", "--data", data, "--slow-threshold", "0.99"])
    assert result.exit_code != 0 and "lipschitz-estimate both" in str(result.exception)


def test_train_help_states_the_penalty_defaults_in_use():
    from robustkit.training import PENALTY_DEFAULTS

    import re

    text = CliRunner().invoke(cli, ["train", "--help"], terminal_width=400).output
    weights = re.search(r"Weight of the constraint term\. \[default: MnM-MOL (\S+), MOL (\S+)\]", text)
    threshold = re.search(r"MOL barrier\. \[default: MnM-MOL (\S+), MOL 1 − m\]", text)
    assert (float(weights[1]), float(weights[2])) == (PENALTY_DEFAULTS["mnmmol"][0], PENALTY_DEFAULTS["mol"][0])
    assert float(threshold[1]) == PENALTY_DEFAULTS["mnmmol"][1] and PENALTY_DEFAULTS["mol"][1] is None
    kinds = re.search(r"\[default: MnM-MOL (\w+), MOL (\w+)\]\s+--slow-threshold", text)
    assert (kinds[1], kinds[2]) == (PENALTY_DEFAULTS["mnmmol"][2], PENALTY_DEFAULTS["mol"][2])


def test_cosine_schedule_anneals_to_one_hundredth_and_is_logged(data, tmp_path):
    from robustkit.training import lr_at

    cfg = TrainConfig(model="modl", data=data, accel=2, epochs=5, lr=2e-3, lr_schedule="cosine",
                      model_config={"width": 4, "depth": 2, "K": 1})
    rates = [lr_at(cfg, e) for e in range(5)]
    assert rates[0] == pytest.approx(2e-3) and rates[-1] == pytest.approx(2e-5)
    assert all(a > b for a, b in zip(rates, rates[1:]))
    assert lr_at(TrainConfig(model="modl", lr=1e-3), 7) == 1e-3
    cfg.epochs = 3
    card = train(cfg, tmp_path / "cos", torch.device("cpu"), progress=False)
    assert [row["lr"] for row in card["history"]] == pytest.approx([2e-3, 1.01e-3, 2e-5])
    with pytest.raises(RobustkitError, match="cosine"):
        TrainConfig(model="modl", epochs=3, lr_schedule="step")


def test_lambda_learns_at_its_own_rate(data, tmp_path):
    """Adam moves a parameter by ≈ its lr per step: λ ≈ 10 sharing the network's lr would stay put."""
    from safetensors.torch import load_file

    small = {"width": 4, "depth": 2, "K": 1}
    lams = {}
    for name, lam_lr in (("own", None), ("frozen", 0.0)):
        cfg = TrainConfig(model="modl", data=data, accel=2, epochs=1, lr=1e-4, lam_lr=lam_lr, model_config=small)
        card = train(cfg, tmp_path / name, torch.device("cpu"), progress=False)
        lams[name] = card["history"][-1]["lam"]
        assert float(load_file(tmp_path / name / "weights.safetensors")["lam"]) == pytest.approx(lams[name])
    steps = 4  # 4 training slices, batch 1
    assert abs(lams["own"] - 10.0) > 100 * steps * 1e-4  # far beyond what the network's lr allows
    assert lams["frozen"] == 10.0


def _tiny_modl_batch(data):
    from robustkit.batch import operator_of
    from robustkit.data.prepared import PreparedDataset
    from robustkit.models import build_model
    from robustkit.physics.masks import MaskSpec

    ds = PreparedDataset(data, split="train", mask=MaskSpec(accel=2.0))
    batch = {k: torch.stack([ds[i][k] for i in range(2)]) for k in ("kspace", "maps", "mask", "target")}
    torch.manual_seed(0)
    return build_model("modl", {"width": 8, "depth": 3, "K": 2}).train(), batch, operator_of(batch)


def test_adversarial_kspace_stays_in_the_ball_and_hurts_more_than_noise_of_its_size(data):
    """The inner attack of adversarial training: γ = b̃ − b lies on the sampled locations with
    ‖γ_i‖ ≤ ε‖b_i‖, and raises the training error more than a random γ of the same norm."""
    from robustkit.attacks.pgd import relative_error
    from robustkit.attacks.threat import KSpaceBall
    from robustkit.training import adversarial_kspace

    model, batch, op = _tiny_modl_batch(data)
    b, target, eps = batch["kspace"], batch["target"], 0.05
    b_adv = adversarial_kspace(model, b, target, op, eps, steps=3, seed=0)
    gamma = b_adv - b
    ball = KSpaceBall(b, op.mask, eps)
    assert ball.contains(gamma).all() and not b_adv.requires_grad
    assert model.training  # the attack left the model in training mode
    norm = torch.linalg.vector_norm(gamma.reshape(2, -1), dim=1)
    noise = ball.random_direction(b, torch.Generator().manual_seed(1)) * norm.reshape(-1, 1, 1, 1)
    with torch.no_grad():
        adv, rand = relative_error(model(b_adv, op), target), relative_error(model(b + noise, op), target)
        clean = relative_error(model(b, op), target)
    assert (adv > rand).all() and (adv > clean).all()
    assert model.lam.grad is None and all(p.grad is None for p in model.parameters())  # no parameter gradient kept


def test_adversarial_training_changes_the_steps_and_resumes_exactly(data, tmp_path):
    """ε > 0 trains on other k-space than ε = 0; the PGD starts come from the checkpointed global
    generator, so 1 epoch + resume gives the weights of 2 epochs in one call, bit for bit."""
    from safetensors.torch import load_file

    small = {"width": 4, "depth": 2, "K": 1}
    common = dict(model="modl", data=data, accel=2, lr=3e-3, model_config=small)
    train(TrainConfig(epochs=2, **common), tmp_path / "plain", torch.device("cpu"), progress=False)
    card = train(TrainConfig(epochs=2, adversarial=0.05, adversarial_steps=2, **common), tmp_path / "adv",
                 torch.device("cpu"), progress=False)
    assert card["training"]["adversarial"] == 0.05 and card["data"]["adversarial"] == 0.05
    train(TrainConfig(epochs=1, adversarial=0.05, adversarial_steps=2, **common), tmp_path / "split", torch.device("cpu"),
          progress=False)
    train(TrainConfig(epochs=2, adversarial=0.05, adversarial_steps=2, **common), tmp_path / "split", torch.device("cpu"),
          resume=True, progress=False)
    plain, adv, split = (load_file(tmp_path / n / "weights.safetensors") for n in ("plain", "adv", "split"))
    assert any(not torch.equal(plain[k], adv[k]) for k in plain)
    assert all(torch.equal(adv[k], split[k]) for k in adv)
    with pytest.raises(RobustkitError, match="would change adversarial"):
        train(TrainConfig(epochs=3, adversarial=0.02, adversarial_steps=2, **common), tmp_path / "split", torch.device("cpu"),
              resume=True, progress=False)


@pytest.mark.parametrize("option,value", [("--adversarial", "-0.1"), ("--adversarial-steps", "0")])
def test_cli_refuses_a_bad_adversarial_setting(data, tmp_path, option, value, capsys):
    from tests.test_bad_input import run_cli

    out = tmp_path / "m"
    code, err = run_cli(["train", "--model", "modl", "--data", data, "--accel", "2", "--epochs", "1", option, value,
                         "--out", str(out)], capsys)
    assert code == 2 and f"{option} must be" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
