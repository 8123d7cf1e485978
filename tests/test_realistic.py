"""Realistic k-space perturbations (docs/maths.md §14): each family does what its definition says, the
worst case is the most damaging candidate, and the attack study runs them end to end."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from robustkit.attacks import relative_error
from robustkit.attacks.realistic import (candidates, coil_maps, motion, moved_lines, phase_ramp, rigid_motion,
                                         rotate, spikes, translate, worst_case)
from robustkit.errors import RobustkitError
from robustkit.physics.fft import fft2c
from tests.test_studies import cli_common, invoke, zoo  # noqa: F401 - zoo is a fixture

H, W, C = 24, 20, 3


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _mask(batch=2):
    """Columns 0, 2, 4, … and the four centre columns measured: 12 of 20 lines."""
    mask = torch.zeros(batch, 1, H, W)
    mask[..., ::2] = 1
    mask[..., W // 2 - 2: W // 2 + 2] = 1
    return mask


def _maps(batch=2, coils=C, seed=1):
    maps = torch.randn(batch, coils, H, W, dtype=torch.complex128, generator=_gen(seed))
    maps = maps / (maps.abs() ** 2).sum(1, keepdim=True).sqrt()
    maps[..., :2, :] = 0  # an empty border: maps 0 off the support
    return maps


def _image(batch=2, seed=2):
    return torch.randn(batch, H, W, dtype=torch.complex128, generator=_gen(seed))


def _kspace(maps, mask, x):
    return mask * fft2c(maps * x.unsqueeze(1))


# ------------------------------------------------------------------ spikes
@pytest.mark.parametrize("n", [1, 5])
def test_spikes_have_the_claimed_number_support_and_energy(n):
    maps, mask = _maps(), _mask()
    b = _kspace(maps, mask, _image())
    gamma, positions = spikes(b, mask, 0.1, n, _gen())
    for i in range(2):
        hit = gamma[i].abs().sum(0) > 0  # (H, W): positions with a spike in some coil
        assert int(hit.sum()) == n
        assert set(map(tuple, hit.nonzero().tolist())) == set(map(tuple, positions[i].tolist()))
        assert (mask[i, 0][hit] == 1).all()  # only measured samples
        assert (gamma[i][:, hit] != 0).all()  # every coil carries each spike
        per_spike = torch.linalg.vector_norm(gamma[i][:, hit], dim=0)
        np.testing.assert_allclose(per_spike, 0.1 * b[i].norm() / math.sqrt(n), rtol=1e-10)
        np.testing.assert_allclose(gamma[i].norm() / b[i].norm(), 0.1, rtol=1e-10)


def test_spikes_that_do_not_fit_are_refused():
    mask = torch.zeros(1, 1, H, W)
    mask[..., 0, 0] = 1
    with pytest.raises(RobustkitError, match="do not fit"):
        spikes(torch.ones(1, C, H, W, dtype=torch.complex64), mask, 0.1, 2, _gen())


# ------------------------------------------------------------------ motion
def test_motion_of_angle_zero_and_shift_zero_is_the_identity():
    x, maps, mask = _image(), _maps(), _mask()
    assert torch.equal(rigid_motion(x, 0.0, (0.0, 0.0)), x)
    assert torch.equal(motion(maps, mask, x, 0.0, (0.0, 0.0), 0.5), torch.zeros(2, C, H, W, dtype=x.dtype))


def test_a_pure_translation_of_a_line_set_is_a_phase_ramp_on_those_lines():
    # uniform coil maps: moving the object moves every coil image, so F S T x = ramp ⊙ F S x
    maps = torch.ones(2, C, H, W, dtype=torch.complex128) / math.sqrt(C)
    x, mask, shift = _image(), _mask(), (1.5, -2.25)
    b = _kspace(maps, mask, x)
    moved = b + motion(maps, mask, x, 0.0, shift, 0.5)
    lines = moved_lines(mask, 0.5)[:, None, None, :]
    expected = torch.where(lines, phase_ramp((H, W), shift) * b, b)
    torch.testing.assert_close(moved, expected, rtol=0, atol=1e-12)


def test_translation_by_whole_pixels_is_a_roll_and_rotation_by_a_right_angle_is_rot90():
    x = torch.randn(2, 9, 9, dtype=torch.complex128, generator=_gen())
    torch.testing.assert_close(translate(x, (2.0, -3.0)), torch.roll(x, (2, -3), dims=(-2, -1)))
    torch.testing.assert_close(rotate(x, math.pi / 2), torch.rot90(x, -1, dims=(-2, -1)))


@pytest.mark.parametrize("fraction", [0.25, 0.5, 1.0])
def test_motion_changes_the_claimed_fraction_of_the_measured_lines_the_last_ones(fraction):
    x, maps, mask = _image(), _maps(), _mask()
    gamma = motion(maps, mask, x, 0.05, (0.0, 1.0), fraction)
    measured = torch.nonzero(mask[0, 0].amax(0)).flatten()
    changed = torch.nonzero(gamma[0].abs().amax(dim=(0, 1)) > 0).flatten()
    assert len(changed) == round(fraction * len(measured))
    assert torch.equal(changed, measured[len(measured) - len(changed):])  # sequential order: the last lines
    assert (gamma * (1 - mask)).abs().max() == 0


# ------------------------------------------------------------------ coil maps
@pytest.mark.parametrize("eps", [0.01, 0.3, 2.0])
def test_coil_map_error_has_the_documented_size_and_keeps_the_normalisation(eps):
    maps = _maps()
    wrong = coil_maps(maps, eps, _gen())
    power, power_wrong = (maps.abs() ** 2).sum(1), (wrong.abs() ** 2).sum(1)
    torch.testing.assert_close(power_wrong, power, rtol=0, atol=1e-12)  # Σ_c |S̃_c|² = Σ_c |S_c|², 0 off support
    pixel_error = torch.linalg.vector_norm(wrong - maps, dim=1)
    torch.testing.assert_close(pixel_error, eps * power.sqrt(), rtol=0, atol=1e-12)
    np.testing.assert_allclose((wrong - maps).norm() / maps.norm(), eps, rtol=1e-10)
    # smooth: the error is no rougher than the maps themselves (finite differences along x)
    assert (wrong - maps).diff(dim=-1).norm() < 2 * eps * maps.diff(dim=-1).norm() + 1e-12


def test_coil_map_error_needs_two_coils_and_eps_at_most_two():
    with pytest.raises(RobustkitError, match="at least 2 coils"):
        coil_maps(_maps(coils=1), 0.1, _gen())
    with pytest.raises(RobustkitError, match=r"not in \[0, 2\]"):
        coil_maps(_maps(), 2.5, _gen())


# ------------------------------------------------------------------ worst case
@pytest.mark.parametrize("family", ["spikes", "motion", "coil-map"])
def test_the_worst_case_is_at_least_as_damaging_as_every_candidate(family):
    """Damage of a zero-filled reconstruction Aᴴb̃ (with the maps of the candidate) against Aᴴb."""
    maps, mask, x = _maps(), _mask(), _image()
    b = _kspace(maps, mask, x)

    def recon(kspace, m):
        return (m.conj() * torch.fft.ifftshift(torch.fft.ifft2(torch.fft.fftshift(kspace, dim=(-2, -1)), norm="ortho"),
                                               dim=(-2, -1))).sum(1)

    clean = recon(b, maps)
    found = list(candidates(family, b, maps, mask, x, 0.05, 4, _gen(), n_spikes=3))
    assert len(found) == 4
    index, losses = worst_case(found, lambda c: relative_error(recon(c.kspace, c.maps), clean))
    for j, c in enumerate(found):
        assert (relative_error(recon(c.kspace, c.maps), clean) <= losses[index, range(2)] + 1e-15).all()
        torch.testing.assert_close(losses[j], relative_error(recon(c.kspace, c.maps), clean))
    assert losses.std(0).max() > 0  # the candidates differ, so the search is not vacuous


def test_motion_candidates_span_the_angle_range():
    maps, mask, x = _maps(), _mask(), _image()
    found = list(candidates("motion", _kspace(maps, mask, x), maps, mask, x, 0.04, 5, _gen()))
    angles = [float(c.params["angle"][0]) for c in found]
    np.testing.assert_allclose(angles, np.degrees(np.linspace(-0.04, 0.04, 5)))
    assert all(float(c.params["shift_px"][0]) == pytest.approx(0.04 * W) for c in found)


# ------------------------------------------------------------------ the attack study
def test_attack_study_with_realistic_kinds_end_to_end(zoo):  # noqa: F811
    from robustkit.report.conclusions import conclude
    from robustkit.report.runs import load_run
    from robustkit.studies import study_module

    result = invoke(["attack", "--model", "modl", "--model", "mnmmol", "--kind", "spikes", "--kind", "motion",
                     "--kind", "coil-map", "--eps", "0.05", "--candidates", "2", "--spikes", "3", "--samples", "2",
                     "--motion-lines", "0.5"] + cli_common(zoo))
    assert result.exit_code == 0, result.output
    (run_dir,) = list(zoo["reports"].iterdir())
    frame = pd.read_csv(run_dir / "results.csv")
    assert list(frame.columns) == list(study_module("attack").COLUMNS)
    assert set(frame["kind"]) == {"clean", "spikes", "motion", "coil-map"}
    perturbed = frame[frame["kind"] != "clean"]
    assert (perturbed["candidates"] == 2).all() and (perturbed["psnr_drop"].abs() > 0).all()
    np.testing.assert_allclose(perturbed.loc[perturbed["kind"] == "spikes", "perturbation"], 0.05, rtol=1e-4)
    assert (perturbed.loc[perturbed["kind"] == "spikes", "spikes"] == 3).all()
    np.testing.assert_allclose(perturbed.loc[perturbed["kind"] == "coil-map", "map_error"], 0.05, rtol=1e-4)
    mo = perturbed[perturbed["kind"] == "motion"]
    assert set(np.round(mo["angle"], 6)) <= {round(math.degrees(-0.05), 6), round(math.degrees(0.05), 6)}
    assert (mo["lines_fraction"] > 0).all() and (mo["lines_fraction"] <= 0.5 + 1e-9).all()
    assert frame.loc[frame["kind"] != "motion", "angle"].isna().all()
    deq = perturbed[perturbed["model"] == "mnmmol-2x"]
    assert deq[["iterations", "residual", "converged"]].notna().all().all()
    assert perturbed.loc[perturbed["model"] == "modl-2x", "iterations"].isna().all()
    assert (run_dir / "examples" / "mnmmol-2x__motion__eps0.05.npz").exists()
    sentences = conclude(load_run(run_dir))
    for family in ("spikes", "motion", "coil-map"):
        assert sum(s.startswith(f"At ε = 5 % {family}") for s in sentences) == 1, sentences


def test_bad_realistic_settings_are_one_line_errors(zoo, capsys):  # noqa: F811
    from robustkit.cli import main

    for args, words in ((["--kind", "coil-map", "--eps", "3"], "coil-map needs ε ≤ 2"),
                        (["--kind", "motion", "--motion-lines", "0"], "--motion-lines"),
                        (["--kind", "spikes", "--candidates", "0"], "--candidates")):
        with pytest.raises(SystemExit) as info:
            main(["attack", "--model", "modl"] + args + cli_common(zoo))
        err = capsys.readouterr().err
        assert info.value.code == 2 and words in err, err
        assert "Traceback" not in err
    assert not zoo["reports"].exists()
