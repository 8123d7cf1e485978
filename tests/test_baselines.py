"""The classical baselines (docs/maths.md §13): CG-SENSE and ℓ1-wavelet FISTA as maths, as
attackable models, and in the studies and the CLI."""

import math

import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from robustkit.cli import cli
from robustkit.errors import RobustkitError
from robustkit.models.adapter import as_model
from robustkit.models.baselines import Wavelet, build_baseline, fista, l1_objective, parse_baseline, soft_threshold
from robustkit.physics.sense import SenseOperator
from tests.conftest import random_complex


def _problem(shape=(8, 8), coils=2, accel_keep=0.5, seed=0, dtype=torch.complex128):
    """A tiny undersampled multi-coil problem: smooth normalised coil maps, a random line mask."""
    g = torch.Generator().manual_seed(seed)
    maps = random_complex((1, coils, *shape), dtype, seed) + 2.0
    maps = maps / maps.abs().pow(2).sum(1, keepdim=True).sqrt()
    mask = (torch.rand(shape[1], generator=g) < accel_keep).to(torch.float64).expand(shape).clone()
    mask[:, shape[1] // 2] = 1
    op = SenseOperator(maps, mask)
    x = random_complex((1, *shape), dtype, seed + 1)
    return op, op.forward(x) + 0.05 * op.mask * random_complex((1, coils, *shape), dtype, seed + 2)


def _flat(bands):
    return torch.cat([c.flatten(1) for c in bands], 1)


@pytest.mark.parametrize("shape", [(16, 16), (24, 20), (8, 12)])
def test_wavelet_is_orthonormal(shape):
    """‖Ψx‖ = ‖x‖, ΨᴴΨ = I, ΨΨᴴ = I (as many coefficients as pixels) and ⟨Ψx, c⟩ = ⟨x, Ψᴴc⟩."""
    psi = Wavelet(shape, levels=4)
    x = random_complex((2, *shape), torch.complex128, 0)
    c = psi.forward(x)
    assert _flat(c).shape[1] == shape[0] * shape[1]
    torch.testing.assert_close(_flat(c).norm(dim=1), x.flatten(1).norm(dim=1))
    torch.testing.assert_close(psi.adjoint(c), x)
    d = [random_complex(t.shape, torch.complex128, k + 5) for k, t in enumerate(c)]
    torch.testing.assert_close(_flat(psi.forward(psi.adjoint(d))), _flat(d))
    torch.testing.assert_close((_flat(c).conj() * _flat(d)).sum(), (x.conj() * psi.adjoint(d)).sum())


def test_wavelet_levels_follow_the_image_size_and_odd_sides_are_refused():
    assert Wavelet((24, 20), 4).levels == 2 and Wavelet((120, 104), 4).levels == 3 and Wavelet((64, 64), 4).levels == 4
    with pytest.raises(RobustkitError, match="even image sides"):
        Wavelet((15, 16), 4)


def test_soft_threshold_shrinks_complex_magnitude():
    z = torch.tensor([3 + 4j, 0.3 + 0.4j, 0j], dtype=torch.complex128)
    torch.testing.assert_close(soft_threshold(z, 1.0), torch.tensor([2.4 + 3.2j, 0, 0], dtype=torch.complex128))


@pytest.mark.parametrize("scale", [1.0, 2.0])
def test_l1_with_a_unitary_operator_matches_the_closed_form(scale):
    """A = c·F (full mask, one coil of constant map c): the minimiser of ½‖Ax − b‖² + λ‖Ψx‖₁ is
    Ψᴴ soft(Ψ Aᴴb / c², λ / c²)."""
    shape, lam = (16, 16), 0.8 * scale  # thresholds about a quarter of the coefficients
    op = SenseOperator(torch.full((1, 1, *shape), scale, dtype=torch.complex128), torch.ones(shape, dtype=torch.float64))
    b = random_complex((1, 1, *shape), torch.complex128, 3)
    psi = Wavelet(shape, 4)
    closed = psi.adjoint([soft_threshold(c, lam / scale**2) for c in psi.forward(op.adjoint(b) / scale**2)])
    assert (_flat(psi.forward(closed)).abs() < 1e-12).float().mean() > 0.1  # the threshold is active
    torch.testing.assert_close(fista(b, op, lam, iters=20), closed)


def _dense(op):
    """A as a dense matrix ``(C·H·W, H·W)`` (tiny problems only)."""
    h, w = op.maps.shape[-2:]
    eye = torch.eye(h * w, dtype=op.maps.dtype).reshape(h * w, 1, h, w)
    return torch.stack([op.forward(e)[0].flatten() for e in eye], 1)


def _admm(b, op, lam, psi, rho=1.0, iters=400):
    """An independent solver of the same problem: ADMM on x and u = Ψx, its x-update an exact
    dense solve of (AᴴA + ρI) x = Aᴴb + ρΨᴴ(u − w)."""
    A = _dense(op)
    shape = op.maps.shape[-2:]
    inverse = torch.linalg.inv(A.conj().T @ A + rho * torch.eye(A.shape[1], dtype=A.dtype))
    aty = (A.conj().T @ b.flatten()).reshape(1, *shape)
    u = [torch.zeros_like(c) for c in psi.forward(aty)]
    w = [torch.zeros_like(c) for c in u]
    for _ in range(iters):
        rhs = aty + rho * psi.adjoint([a - c for a, c in zip(u, w)])
        x = (inverse @ rhs.flatten()).reshape(1, *shape)
        px = psi.forward(x)
        u = [soft_threshold(p + c, lam / rho) for p, c in zip(px, w)]
        w = [c + p - a for c, p, a in zip(w, px, u)]
    return x


def test_fista_on_an_undersampled_problem_is_optimal_and_matches_admm():
    op, b = _problem(shape=(8, 8), coils=2)
    lam = 0.05
    psi = Wavelet((8, 8), 4)
    x = fista(b, op, lam, iters=500)
    # optimality: x is a fixed point of the proximal-gradient step with step 1/L
    L = float(op.maps.abs().pow(2).sum(1).amax())
    step = psi.adjoint([soft_threshold(c, lam / L) for c in psi.forward(x - (op.normal(x) - op.adjoint(b)) / L)])
    assert float((step - x).norm() / x.norm()) < 1e-7
    reference = _admm(b, op, lam, psi)
    assert float((x - reference).norm() / reference.norm()) < 1e-5
    torch.testing.assert_close(l1_objective(x, b, op, lam, psi), l1_objective(reference, b, op, lam, psi))
    # and a short run has already come down close to that minimum
    assert float(l1_objective(fista(b, op, lam, iters=100), b, op, lam, psi)) < float(l1_objective(x, b, op, lam, psi)) * 1.01


def test_sense_equals_a_direct_solve_of_the_normal_equations():
    """``sense`` = (λAᴴA + μI)⁻¹ λAᴴb, A written out as a dense matrix on a 6×6 problem."""
    op, b = _problem(shape=(6, 6), coils=2)
    A = _dense(op)
    lam, mu = 100.0, 1.001
    direct = torch.linalg.solve(lam * A.conj().T @ A + mu * torch.eye(A.shape[1], dtype=A.dtype), lam * A.conj().T @ b.flatten())
    model = build_baseline("sense:iters=60")
    torch.testing.assert_close(model(b, op).flatten(), direct)


@pytest.mark.parametrize("ref", ["sense:iters=8", "l1-wavelet:iters=8,lam=0.05"])
def test_gradients_with_respect_to_kspace_match_finite_differences(ref):
    op, b = _problem(shape=(8, 8), coils=2)
    model = build_baseline(ref)
    target = random_complex((1, 8, 8), torch.complex128, 9)
    b = b.detach().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda k: (model(k, op) - target).abs().pow(2).sum(), (b,), eps=1e-6, atol=1e-6,
                                     fast_mode=True)


def test_references_settings_and_names():
    assert parse_baseline("l1-wavelet:lam=0.01, iters=20") == ("l1-wavelet", {"lam": 0.01, "iters": 20, "levels": 4})
    assert build_baseline("l1-wavelet").name == "l1-wavelet"
    assert build_baseline("l1-wavelet:lam=0.01").name == "l1-wavelet_lam0.01"
    for ref, message in [("sense:lamb=2", "not a setting of sense; .* lam, mu, iters"),
                         ("l1-wavelet:iters=2.5", "iters must be an integer"),
                         ("l1-wavelet:lam=-1", "lam must be a number > 0"),
                         ("l1-wavelet:lam", "not a setting")]:
        with pytest.raises(RobustkitError, match=message):
            build_baseline(ref)
    lm = as_model("l1-wavelet:lam=0.01")
    assert lm.source == "baseline" and not lm.is_deq and lm.meta()["is_deq"] is False
    assert lm.meta()["weights_sha256"] != as_model("l1-wavelet").meta()["weights_sha256"]  # settings are recorded
    with pytest.raises(RobustkitError, match="classical baseline with no fixed point"):
        lm.require("fixed_point_map", "init-test")


def invoke(args):
    return CliRunner().invoke(cli, args, catch_exceptions=False)


def test_attack_on_both_baselines_runs_end_to_end_within_the_ball(toy_data, tmp_path):
    eps = 0.05
    reports = tmp_path / "reports"
    result = invoke(["attack", "--model", "sense", "--model", "l1-wavelet:iters=10", "--eps", str(eps), "--steps", "2",
                     "--draws", "1", "--samples", "1", "--data", toy_data, "--reports-dir", str(reports), "--no-report"])
    assert result.exit_code == 0, result.output
    (run_dir,) = list(reports.iterdir())
    frame = pd.read_csv(run_dir / "results.csv")
    assert set(frame["model"]) == {"sense", "l1-wavelet_iters10"}
    attacked = frame[frame["kind"] != "clean"]
    assert len(attacked) == 4 and (attacked["perturbation"] <= eps * (1 + 1e-5)).all()
    adversarial = attacked[attacked["kind"] == "adversarial"]
    assert (adversarial["perturbation"] > 0.5 * eps).all() and (adversarial["psnr_drop"] > 0).all()
    assert frame[["iterations", "residual", "converged"]].isna().all().all()


def test_studies_take_baselines_or_refuse_them_in_one_line(toy_data, tmp_path, capsys):
    from robustkit.cli import main
    from robustkit.studies import make_config, run

    config = make_config("audit", {"models": ["sense"], "data": toy_data, "samples": 1, "probe_steps": 1})
    frame = run("audit", config, reports_dir=tmp_path / "r", progress=False)
    assert frame["amplification"].notna().all() and frame["L_max"].isna().all()
    for study, message in [("init-test", "init-test needs .* 'sense' is a classical baseline with no fixed point"),
                           ("sweep-delta", "sweep-delta needs .* 'l1-wavelet' is a classical baseline")]:
        config = make_config(study, {"models": ["sense" if study == "init-test" else "l1-wavelet"], "data": toy_data})
        with pytest.raises(RobustkitError, match=message):
            run(study, config, reports_dir=tmp_path / study, progress=False)
        assert not (tmp_path / study).exists()
    for args, message in [(["init-test", "--model", "l1-wavelet"], "'l1-wavelet' is a classical baseline with no fixed point"),
                          (["attack", "--model", "l1-wavelet:lam=-1"], "lam must be a number > 0")]:
        with pytest.raises(SystemExit) as info:
            main(args + ["--data", toy_data, "--reports-dir", str(tmp_path / "cli")])
        err = capsys.readouterr().err.strip()
        assert info.value.code == 2 and len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "cli").exists()


def test_models_list_and_evaluate_show_the_baselines(toy_data):
    listing = invoke(["models", "list"])
    assert "sense" in listing.output and "l1-wavelet" in listing.output and "baseline" in listing.output
    result = invoke(["models", "evaluate", "sense", "l1-wavelet:iters=30", "--data", toy_data])
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line.split() for line in result.output.splitlines() if line.strip()}
    # the sense baseline is the DEQs' initialisation, which evaluate prints as SENSE unless it is named
    assert "SENSE" not in lines and math.isfinite(float(lines["l1-wavelet_iters30"][1]))
    unnamed = invoke(["models", "evaluate", "l1-wavelet:iters=30", "--data", toy_data])
    assert unnamed.exit_code == 0, unnamed.output
    row = {line.split()[0]: line.split() for line in unnamed.output.splitlines() if line.strip()}["SENSE"]
    assert row[1] == lines["sense"][1]  # one SENSE, the same numbers under either name


def test_attacking_a_baseline_prints_no_device_warning(capsys):
    """torchattacks finds the device from a parameter; a baseline has none (the bound reconstructor
    carries an empty one), so nothing like "Failed to set device" reaches the user."""
    import numpy as np
    import torch

    from robustkit.attacks import KSpacePGD
    from robustkit.attacks.target import BoundReconstructor
    from robustkit.models.baselines import build_baseline
    from robustkit.physics import SenseOperator
    from robustkit.physics.masks import cartesian_mask

    maps = torch.ones(1, 1, 8, 8, dtype=torch.complex64)
    mask = torch.from_numpy(cartesian_mask((8, 8), 2, np.random.default_rng(0)))
    op = SenseOperator(maps, mask)
    b = op(torch.randn(1, 8, 8, dtype=torch.complex64))
    target = BoundReconstructor(build_baseline("sense"), op)
    assert next(target.parameters()).device == b.device
    KSpacePGD(target, op.mask, eps=0.05, steps=1)
    assert "Failed to set device" not in capsys.readouterr().out


def test_models_evaluate_prints_spread_zero_for_one_slice(toy_data):
    """One slice: std 0, as the study tables print it (not NaN); more slices: the sample std."""
    one = invoke(["models", "evaluate", "l1-wavelet:iters=30", "--data", toy_data, "--samples", "1"])
    assert one.exit_code == 0, one.output
    row = {line.split()[0]: line.split() for line in one.output.splitlines() if line.strip()}["SENSE"]
    assert float(row[2]) == 0.0 and float(row[4]) == 0.0 and "NaN" not in " ".join(row)
    two = invoke(["models", "evaluate", "l1-wavelet:iters=30", "--data", toy_data, "--samples", "2"])
    row = {line.split()[0]: line.split() for line in two.output.splitlines() if line.strip()}["SENSE"]
    assert float(row[2]) > 0
