"""Models, registry and zoo on tiny problems."""

import json

import numpy as np
import pytest
import torch

from robustkit.errors import RobustkitError
from robustkit.models import MODELS, build_model
from robustkit.models.zoo import load_model, resolve, save_model
from robustkit.physics import SenseOperator
from robustkit.physics.masks import cartesian_mask
from tests.conftest import random_complex

H, W, C = 16, 12, 3
SMALL = {"width": 8, "depth": 3}


def tiny_problem(batch=2, dtype=torch.complex64):
    maps = random_complex((batch, C, H, W), dtype, 1)
    maps = maps / (maps.abs() ** 2).sum(1, keepdim=True).sqrt()
    mask = torch.from_numpy(cartesian_mask((H, W), 2, np.random.default_rng(0)))
    op = SenseOperator(maps, mask)
    x = random_complex((batch, H, W), dtype, 2)
    return op, op(x), x


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_reconstructs_with_one_call(name):
    torch.manual_seed(0)
    model = build_model(name, SMALL).eval()
    op, b, _ = tiny_problem()
    with torch.no_grad():
        x = model(b, op)
    assert x.shape == (2, H, W) and x.is_complex() and torch.isfinite(x).all()
    if model.is_deq:
        stats = model.last_stats
        assert stats.iterations.shape == (2,) and stats.converged.shape == (2,)
        assert stats.residual.shape == (2,)


def test_mnmmol_fixed_point_solves_the_model_equation():
    """x* = H_θ(x*) + Aᴴb  ⇔  AᴴA x* + F_θ(x*)/λ = Aᴴb (docs/maths.md §4)."""
    torch.manual_seed(0)
    model = build_model("mnmmol", {**SMALL, "lam": 10.0}).eval()
    for p in model.cnn.parameters():  # a small F_θ keeps the iteration contractive
        p.data.mul_(0.2)
    op, b, _ = tiny_problem()
    with torch.no_grad():
        x = model(b, op)
        lhs = op.normal(x) + model.cnn(x) / model.lam_value
        rel = torch.linalg.vector_norm((lhs - op.adjoint(b)).flatten(1), dim=1) / torch.linalg.vector_norm(op.adjoint(b).flatten(1), dim=1)
    assert model.last_stats.converged.all()
    assert (rel < 1e-4).all()
    with torch.no_grad():  # the same point is a fixed point of H_θ + Aᴴb, the map the audits use
        fixed = model.H_map(op)(x) + op.adjoint(b)
        assert torch.allclose(fixed, x, atol=1e-4 * float(x.abs().max()))
        H = x - op.normal(x) - model.cnn(x) / model.lam_value  # H_θ = I − Q_θ, Q_θ = AᴴA + F_θ/λ
        assert torch.equal(model.H_map(op)(x), H)


def test_mnmmol_leak_solves_its_equation_and_contracts_what_f_theta_does_not_see():
    """With a leak κ the fixed point solves AᴴA x + κ (I − AᴴA) x + F_θ(x)/λ = Aᴴb, and on a null-space
    direction that F_θ ignores (here F_θ = 0: every weight zeroed) J_H is exactly 1 − κ, where the
    paper's H_θ (κ = 0) leaves it at 1 (docs/maths.md §4)."""
    from robustkit.analysis.lipschitz import jacobian_spectral_norm

    torch.manual_seed(0)
    kappa = 0.05
    model = build_model("mnmmol", {**SMALL, "lam": 10.0, "leak": kappa}).eval()
    for p in model.cnn.parameters():
        p.data.mul_(0.2)
    op, b, _ = tiny_problem()
    with torch.no_grad():
        x = model(b, op)
        lhs = op.normal(x) + kappa * (x - op.normal(x)) + model.cnn(x) / model.lam_value
        rel = torch.linalg.vector_norm((lhs - op.adjoint(b)).flatten(1), dim=1) / torch.linalg.vector_norm(op.adjoint(b).flatten(1), dim=1)
    assert model.last_stats.converged.all() and (rel < 1e-4).all()

    # One coil of modulus 1 at 2×: AᴴA is a projection with a null space, so ‖I − AᴴA‖ = 1.
    maps = torch.exp(1j * torch.rand(2, 1, H, W)).to(torch.complex64)
    op = SenseOperator(maps, op.mask)
    for p in model.cnn.parameters():
        p.data.zero_()  # F_θ ≡ 0: J_H = (1 − κ)(I − AᴴA), of norm 1 − κ
    leaky = jacobian_spectral_norm(model.H_map(op), x, iters=60, tol=1e-7)
    model.config.leak = 0.0
    plain = jacobian_spectral_norm(model.H_map(op), x, iters=60, tol=1e-7)
    assert torch.allclose(leaky.estimate, torch.full((2,), 1 - kappa), atol=1e-4), leaky.estimate
    assert torch.allclose(plain.estimate, torch.ones(2), atol=1e-4), plain.estimate
    with pytest.raises(RobustkitError, match="leak"):
        build_model("mnmmol", {"leak": 1.0})


def test_mnmmol_image_leak_solves_its_equation_and_contracts_the_null_space():
    """``leak_on = "image"``: the fixed point solves (AᴴA + κ I) x + F_θ(x)/λ = Aᴴb; with F_θ ≡ 0 and
    AᴴA a projection, J_H = (1 − κ) I − AᴴA has norm exactly 1 − κ (null space: 1 − κ; range: −κ)."""
    from robustkit.analysis.lipschitz import jacobian_spectral_norm

    torch.manual_seed(0)
    kappa = 0.05
    model = build_model("mnmmol", {**SMALL, "lam": 10.0, "leak": kappa, "leak_on": "image"}).eval()
    for p in model.cnn.parameters():
        p.data.mul_(0.2)
    op, b, _ = tiny_problem()
    with torch.no_grad():
        x = model(b, op)
        lhs = op.normal(x) + kappa * x + model.cnn(x) / model.lam_value
        rel = torch.linalg.vector_norm((lhs - op.adjoint(b)).flatten(1), dim=1) / torch.linalg.vector_norm(op.adjoint(b).flatten(1), dim=1)
    assert model.last_stats.converged.all() and (rel < 1e-4).all()

    maps = torch.exp(1j * torch.rand(2, 1, H, W)).to(torch.complex64)
    op = SenseOperator(maps, op.mask)
    for p in model.cnn.parameters():
        p.data.zero_()
    leaky = jacobian_spectral_norm(model.H_map(op), x, iters=60, tol=1e-7)
    assert torch.allclose(leaky.estimate, torch.full((2,), 1 - kappa), atol=1e-4), leaky.estimate
    with pytest.raises(RobustkitError, match="leak_on"):
        build_model("mnmmol", {"leak_on": "kspace"})


@pytest.mark.parametrize("leak_to", ["sense", "modl"])
def test_mnmmol_leak_towards_an_image_solves_its_equation_and_differentiates_through_it(leak_to):
    """``leak_to = "sense"`` / ``"modl"``: the pull acts on ``x − x_a`` (x_a the SENSE image of b, or
    the frozen anchor MoDL's), so the fixed point solves AᴴA x + κ (I − AᴴA)(x − x_a) + F_θ(x)/λ = Aᴴb,
    H_θ is the ``leak_to = "zero"`` one, x* = H_θ(x*) + drive(b) (what plain_map iterates), and
    ∂x*/∂b, which also runs through x_a(b), matches central finite differences; the anchor MoDL's
    weights take no gradient."""
    from robustkit.analysis.contraction import plain_map
    from robustkit.physics.sense import sense_init

    torch.manual_seed(0)
    kappa = 0.05
    model = build_model("mnmmol", {**SMALL, "lam": 10.0, "leak": kappa, "leak_to": leak_to, "anchor_K": 2,
                                   "eval_tol": 1e-12, "eval_max_iter": 2000, "backward_tol": 1e-12,
                                   "backward_max_iter": 300}).double().eval()
    anchor_params = [] if model.anchor is None else list(model.anchor.parameters())
    assert (model.anchor is not None) == (leak_to == "modl") and not any(p.requires_grad for p in anchor_params)
    for p in [*model.cnn.parameters(), *(p for p in anchor_params if p.dim() > 0)]:
        p.data.mul_(0.2)
    op, b, _ = tiny_problem(dtype=torch.complex128)
    with torch.no_grad():
        x = model(b, op)
        xa = sense_init(op, b) if leak_to == "sense" else model.anchor(b, op)
        if leak_to == "modl":
            assert model.anchor.config.K == 2 and not torch.allclose(xa, sense_init(op, b))
        lhs = op.normal(x) + kappa * ((x - xa) - op.normal(x - xa)) + model.cnn(x) / model.lam_value
        rel = torch.linalg.vector_norm((lhs - op.adjoint(b)).flatten(1), dim=1) / torch.linalg.vector_norm(op.adjoint(b).flatten(1), dim=1)
        assert model.last_stats.converged.all() and (rel < 1e-9).all()
        assert torch.allclose(plain_map(model, b, op)(x), x, atol=1e-9)
        H_leaky = model.H_map(op)(x)
        model.config.leak_to = "zero"
        assert torch.equal(model.H_map(op)(x), H_leaky)
        model.config.leak_to = leak_to

    w, d = torch.randn_like(x), torch.randn_like(b) * op.mask
    bb = b.clone().requires_grad_(True)
    (g,) = torch.autograd.grad((w.conj() * model(bb, op)).real.sum(), bb)
    with torch.no_grad():
        step = 1e-6
        fd = ((w.conj() * model(b + step * d, op)).real.sum() - (w.conj() * model(b - step * d, op)).real.sum()) / (2 * step)
    assert abs(float((g.conj() * d).real.sum() - fd)) < 1e-7 * abs(float(fd))
    (w.conj() * model(b, op)).real.sum().backward()
    assert all(p.grad is not None for p in model.cnn.parameters()) and model.lam.grad is not None
    assert all(p.grad is None for p in anchor_params)
    with pytest.raises(RobustkitError, match="leak_to"):
        build_model("mnmmol", {"leak_to": "ground-truth"})


def test_deq_gradients_reach_parameters_lambda_and_kspace():
    torch.manual_seed(0)
    model = build_model("mnmmol", SMALL).eval()
    for p in model.cnn.parameters():
        p.data.mul_(0.2)
    op, b, target = tiny_problem()
    b = b.clone().requires_grad_(True)
    x = model(b, op)
    (x - target).abs().pow(2).sum().backward()
    assert b.grad is not None and b.grad.abs().sum() > 0
    assert model.lam.grad is not None and model.lam.grad.abs() > 0
    assert all(p.grad is not None for p in model.cnn.parameters())


def test_unknown_model_lists_the_available_ones():
    with pytest.raises(RobustkitError, match="available: mnmmol, modl, mol, mol-sn"):
        build_model("unet")


def test_unknown_config_key_is_named():
    with pytest.raises(RobustkitError, match="widht"):
        build_model("modl", {"widht": 3})


def test_mol_fixed_point_is_a_fixed_point_of_its_own_H():
    """MOL's step converges to x* = H_θ(x*) + Aᴴb with MOL's own H_θ = I − AᴴA − (cI − F_θ)/λ,
    c = 1 + (μ − 1)/α (docs/maths.md §4), so audits and contraction rates measure MOL's map."""
    torch.manual_seed(0)
    model = build_model("mol", {**SMALL, "lam": 5.0, "tol": 1e-7, "eval_tol": 1e-7, "eval_max_iter": 20000}).eval()
    op, b, _ = tiny_problem()
    with torch.no_grad():
        x = model(b, op)
        fixed = model.H_map(op)(x) + op.adjoint(b)
        generic = x - op.normal(x) - model.cnn(x) / model.lam_value + op.adjoint(b)
    assert model.last_stats.converged.all()
    scale = float(x.abs().max())
    assert torch.allclose(fixed, x, atol=1e-4 * scale)
    assert not torch.allclose(generic, x, atol=1e-2 * scale)  # the MnM-MOL operator's map does not fix it
    assert model.c == pytest.approx(1 + (model.config.mu - 1) / model.config.alpha)


def test_mol_sn_constraint_bounds_L_of_its_H():
    """L[F_θ] ≤ 1 − m_F (MOL-SN, by construction) ⇒ L[H_θ] ≤ 1 − m with m = (c − 1 + m_F)/λ: the
    strongest pair the two-point ascent finds stays below it, anywhere (a large ball)."""
    from robustkit.analysis.lipschitz import local_lipschitz

    torch.manual_seed(0)
    model = build_model("mol-sn", {**SMALL, "lam": 2.5})  # c/λ = 0.44 ≤ 1/2: the bound applies
    for _ in range(30):  # converge the persistent power iterations
        model.cnn(torch.zeros(1, H, W, dtype=torch.complex64))
    model.eval()
    op, _, x = tiny_problem()
    m = model.m
    assert m == pytest.approx((model.c - 1 + model.config.m) / 2.5)
    est = local_lipschitz(model.H_map(op), x, 1.0, steps=30, restarts=2, generator=torch.Generator().manual_seed(0))
    assert (est.estimate <= 1 - m + 1e-3).all()
    # the generic MnM-MOL operator of the same network is not bound by it (so the test can fail)
    generic = local_lipschitz(lambda v: v - op.normal(v) - model.cnn(v) / model.lam_value, x, 1.0, steps=30,
                              restarts=2, generator=torch.Generator().manual_seed(0))
    assert (generic.estimate > 1 - m + 1e-2).any()


def test_mol_sn_bounds_the_cnn_lipschitz_constant():
    torch.manual_seed(0)
    model = build_model("mol-sn", SMALL)
    for _ in range(30):  # converge the persistent power iterations
        model.cnn(torch.zeros(1, H, W, dtype=torch.complex64))
    model.eval()
    x, y = random_complex((64, H, W), torch.complex64, 3), random_complex((64, H, W), torch.complex64, 4)
    with torch.no_grad():
        ratio = torch.linalg.vector_norm((model.cnn(x) - model.cnn(y)).flatten(1), dim=1) / torch.linalg.vector_norm((x - y).flatten(1), dim=1)
    assert ratio.max() <= 1 - model.config.m + 1e-3


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    model = build_model("mnmmol", {**SMALL, "delta": 0.1})
    save_model(tmp_path / "m", model, {"note": "test"})
    loaded, card = load_model(str(tmp_path / "m"))
    assert card["model"] == "mnmmol" and card["config"]["delta"] == 0.1 and card["note"] == "test"
    for (k, v), (k2, v2) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)


def test_anchor_weights_round_trip_and_come_from_the_warm_start(tmp_path):
    """An MnM-MOL with ``leak_to = "modl"`` saves and loads its anchor with it; ``warm_start`` copies
    a MoDL into the anchor (and F_θ, λ into the model), an MnM-MOL's anchor into another's, and
    refuses a MoDL whose K differs from ``anchor_K`` or a source with no MoDL to take."""
    from robustkit.training import warm_start

    torch.manual_seed(0)
    modl = build_model("modl", {**SMALL, "K": 3})
    save_model(tmp_path / "modl", modl, {})
    model = build_model("mnmmol", {**SMALL, "leak": 0.04, "leak_to": "modl", "anchor_K": 3})
    warm_start(model, str(tmp_path / "modl"))
    for k, v in modl.state_dict().items():
        assert torch.equal(model.anchor.state_dict()[k], v)
    assert torch.equal(model.lam, modl.lam)
    assert all(torch.equal(a, b) for a, b in zip(model.cnn.parameters(), modl.cnn.parameters()))
    save_model(tmp_path / "m", model, {})
    loaded, card = load_model(str(tmp_path / "m"))
    assert card["config"]["leak_to"] == "modl" and card["config"]["anchor_K"] == 3
    for (k, v), (k2, v2) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    assert any(k.startswith("anchor.") for k in loaded.state_dict())
    other = build_model("mnmmol", {**SMALL, "leak": 0.04, "leak_to": "modl", "anchor_K": 3})
    warm_start(other, str(tmp_path / "m"))
    assert all(torch.equal(v, other.anchor.state_dict()[k]) for k, v in modl.state_dict().items())
    with pytest.raises(RobustkitError, match="anchor_K"):
        warm_start(build_model("mnmmol", {**SMALL, "leak": 0.04, "leak_to": "modl"}), str(tmp_path / "modl"))
    save_model(tmp_path / "plain", build_model("mnmmol", SMALL), {})
    with pytest.raises(RobustkitError, match="warm-start from a trained MoDL"):
        warm_start(build_model("mnmmol", {**SMALL, "leak_to": "modl", "anchor_K": 3}), str(tmp_path / "plain"))


def test_tampered_weights_are_refused(tmp_path):
    model = build_model("modl", SMALL)
    save_model(tmp_path / "m", model, {})
    weights = tmp_path / "m" / "weights.safetensors"
    blob = bytearray(weights.read_bytes())
    blob[-1] ^= 0xFF
    weights.write_bytes(bytes(blob))
    with pytest.raises(RobustkitError, match="does not match the sha256"):
        load_model(str(tmp_path / "m"))


def test_registry_name_resolves_to_default_entry(tmp_path):
    save_model(tmp_path / "mnmmol-a", build_model("mnmmol", SMALL), {})
    save_model(tmp_path / "mnmmol-b", build_model("mnmmol", SMALL), {"default": True})
    assert resolve("mnmmol", tmp_path).name == "mnmmol-b"
    with pytest.raises(RobustkitError, match="available: mnmmol-a, mnmmol-b"):
        resolve("modl", tmp_path)
    assert json.loads((tmp_path / "mnmmol-b" / "card.json").read_text())["default"] is True


def test_models_list_counts_every_training_stage(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from robustkit.cli import cli

    save_model(tmp_path / "staged", build_model("mnmmol", SMALL),
               {"epochs_done": 2, "lineage": [{"epochs": 14}, {"epochs": 6}, {"epochs": 2}], "default": True})
    save_model(tmp_path / "single", build_model("modl", SMALL), {"epochs_done": 16})
    monkeypatch.setenv("ROBUSTKIT_ZOO", str(tmp_path))
    result = CliRunner().invoke(cli, ["models", "list"])
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line.split() for line in result.output.splitlines()[1:]}
    assert lines["staged"][4] == "22" and lines["single"][3] == "16"


def test_cli_choices_are_the_registry_and_training_names():
    """The CLI offers robustkit.choices (torch-free); the registry and training accept exactly those."""
    import subprocess
    import sys

    from robustkit import training
    from robustkit.choices import LIPSCHITZ_ESTIMATES, LR_SCHEDULES, MODEL_NAMES

    assert set(MODELS) == set(MODEL_NAMES)
    assert training.LR_SCHEDULES is LR_SCHEDULES and training.LIPSCHITZ_ESTIMATES is LIPSCHITZ_ESTIMATES
    code = ("import sys; from click.testing import CliRunner; from robustkit.cli import cli; "
            "r = CliRunner().invoke(cli, ['train', '--help']); assert r.exit_code == 0, r.output; "
            "assert 'mnmmol' in r.output; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_a_cold_solve_with_the_leak_towards_sense_solves_sense_once(sense_solve_calls):
    """The start and the drive of ``leak_to = "sense"`` share one SENSE solve; the fixed point is
    the one a second, separate SENSE solve gives (bit for bit, CG is deterministic)."""
    import robustkit.physics.sense as sense
    from robustkit.solvers.implicit import deq_fixed_point

    torch.manual_seed(0)
    model = build_model("mnmmol", {**SMALL, "leak": 0.04, "leak_to": "sense", "eval_tol": 1e-8, "eval_max_iter": 300}).eval()
    op, kspace, _ = tiny_problem()
    calls = sense_solve_calls
    with torch.no_grad():
        x = model(kspace, op)
        assert len(calls) == 1
        start, drive = sense.sense_init(type(op)(op.maps, op.mask), kspace), model.drive(kspace.clone(), op)
        assert len(calls) == 3
        f = model.fixed_point_map(kspace.clone(), op)
        x_ref, _ = deq_fixed_point(f, start, model.solver_kwargs())
    assert torch.equal(x, x_ref) and drive.shape == x.shape
    with torch.inference_mode():  # a user's inference mode: no memo, the same fixed point
        assert torch.equal(model(kspace.clone(), op), x)


def test_the_sense_anchor_takes_its_own_lambda_and_cg_steps():
    """``sense_lam`` and ``sense_iters`` set the SENSE anchor: ``(λ_S AᴴA + 1.001 I) x = λ_S Aᴴb`` by
    that many CG steps from 0. The defaults give the SENSE start itself, bit for bit."""
    from robustkit.physics.sense import sense_init, sense_solve

    op, b, _ = tiny_problem()
    default = build_model("mnmmol", {**SMALL, "leak": 0.04, "leak_to": "sense"})
    custom = build_model("mnmmol", {**SMALL, "leak": 0.04, "leak_to": "sense", "sense_lam": 1e4, "sense_iters": 7})
    with torch.no_grad():
        start = sense_init(type(op)(op.maps, op.mask), b)
        assert torch.equal(default.anchor_image(b, op), start)
        x = custom.anchor_image(b, op)
        assert torch.equal(x, sense_solve(type(op)(op.maps, op.mask), b, lam=1e4, iters=7)[0])
        assert not torch.allclose(x, start, atol=1e-4)
    with pytest.raises(RobustkitError, match="sense_iters=0 is not valid"):
        build_model("mnmmol", {**SMALL, "sense_iters": 0})


def test_a_sense_anchor_with_its_own_lambda_does_not_evict_the_sense_start(monkeypatch):
    """With ``sense_lam`` other than the start's, a solve asks for two SENSE images (the start and
    the anchor); solving the same k-space again reuses both: two CG solves in all, not four."""
    import robustkit.physics.sense as sense

    op, b, _ = tiny_problem()
    model = build_model("mnmmol", {**SMALL, "leak": 0.04, "leak_to": "sense", "sense_lam": 1e3}).eval()
    solves, solve = [], sense.sense_solve
    monkeypatch.setattr(sense, "sense_solve", lambda *a, **k: (solves.append(k["lam"]), solve(*a, **k))[1])
    with torch.no_grad():
        first = model(b, op)
        again = model(b, op)
    assert sorted(solves) == [100.0, 1e3] and torch.equal(first, again)


def test_the_anchor_image_is_remembered_until_its_inputs_or_weights_change():
    """``leak_to = "modl"``: a second drive of the same k-space tensor and operator reuses the
    anchor's image (one MoDL pass, the same values bit for bit); an in-place change of the k-space,
    loaded weights, or a k-space that needs a graph gets a fresh pass, equal to a fresh anchor's."""
    torch.manual_seed(0)
    model = build_model("mnmmol", {**SMALL, "leak": 0.04, "leak_to": "modl", "anchor_K": 2}).eval()
    op, b, _ = tiny_problem()
    calls = []
    model.anchor.register_forward_hook(lambda *_: calls.append(1))
    with torch.no_grad():
        first = model.drive(b, op)
        assert torch.equal(model.drive(b, op), first) and len(calls) == 1
        x = model(b, op)  # the solve's drive: still one pass
        assert len(calls) == 1 and model.last_stats.converged.all()
        b.mul_(2)  # the caller's in-place change is seen
        doubled = model.drive(b, op)
        assert len(calls) == 2 and not torch.equal(doubled, first) and torch.equal(model.drive(b.clone(), op), doubled)
        model.drive(b, op)  # the memo held the clone: one pass, then b is remembered again
        assert torch.equal(model.drive(b, op), doubled) and len(calls) == 4
        other = build_model("mnmmol", {**SMALL, "leak": 0.04, "leak_to": "modl", "anchor_K": 2}).anchor
        model.anchor.load_state_dict(other.state_dict())  # new weights are seen
        reloaded = model.drive(b, op)
        assert len(calls) == 5 and torch.equal(model.anchor_image(b, op), other.eval()(b, op)) and len(calls) == 5
        assert not torch.equal(reloaded, doubled)
    needs_graph = b.clone().requires_grad_(True)
    for _ in range(2):
        model.drive(needs_graph, op)
    assert len(calls) == 7 and x.shape == b.shape[:1] + b.shape[2:]
