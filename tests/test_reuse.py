"""Warm starts and the shared clean-solve cache (robustkit.models.reuse): the same numbers as the
old code paths within the solver's tolerance, and no cached result crossing models, data or settings."""

import numpy as np
import pandas as pd
import pytest
import torch

from robustkit.batch import operator_of
from robustkit.models.adapter import ModelAdapter
from robustkit.models.reuse import CLEAN_SOLVES, SPEEDUPS, clean_solve, solve_key, speedups, warm_start
from robustkit.studies import make_config, run
from robustkit.studies.common import batches, load_models, study_dataset
from tests.test_studies import STUDY_SETTINGS, common, zoo  # noqa: F401 - the tiny zoo fixture


def _frames(zoo, name, **settings):  # noqa: F811
    """The study's frame with the old paths, then with warm starts and the cache."""
    config = make_config(name, common(zoo, **{**STUDY_SETTINGS[name], **settings}))
    with speedups(warm_start=False, cache=False):
        before = run(name, config, reports_dir=zoo["reports"], progress=False)
    CLEAN_SOLVES.clear()
    with speedups():
        after = run(name, config, reports_dir=zoo["reports"], progress=False)
    return before, after


def test_speedups_are_on_by_default_and_the_switch_restores_them():
    assert SPEEDUPS.warm_start and SPEEDUPS.cache
    with speedups(warm_start=False, cache=False):
        assert not SPEEDUPS.warm_start and not SPEEDUPS.cache
    assert SPEEDUPS.warm_start and SPEEDUPS.cache


def test_warm_started_attack_gives_the_old_numbers_within_solver_tolerance(zoo):  # noqa: F811
    before, after = _frames(zoo, "attack", models=["modl", "mol", "mnmmol"], eps=[0.02, 0.05])
    assert list(before["kind"]) == list(after["kind"]) and list(before["sample"]) == list(after["sample"])
    # Equal within tolerance where both solves converged (MoDL has none: NaN). The tiny MnM-MOL
    # hits its cap, and an unconverged solve depends on its start: that is what its flag says.
    solved = np.array([c != c or bool(c and d) for c, d in zip(before["converged"], after["converged"])], dtype=bool)
    assert sum(solved) >= 20 and (before.loc[solved, "model"] == "mol-2x").sum() >= 10
    # A solve stopped at residual t lies ≈ t/(1 − q) from x* (q: the slow mode's rate, ≈ 0.99 for
    # MOL's small step), ≈ 1e-3 relative at t = 1e-5: up to ≈ 0.1 dB of PSNR, 1 % of a loss ratio.
    for column in ("psnr", "psnr_clean"):
        np.testing.assert_allclose(after.loc[solved, column], before.loc[solved, column], atol=0.1, err_msg=column)
    for column in ("ssim", "attack_loss", "perturbation"):
        np.testing.assert_allclose(after.loc[solved, column], before.loc[solved, column], rtol=1e-2, err_msg=column)
    # amplification ‖f(b+γ) − f(b)‖/‖γ‖ divides a DIFFERENCE of two solves (≈ 2 % of ‖x‖ at ε = 0.02)
    # by ‖γ‖: the ≈ 1e-3‖x‖ each solve may sit from its fixed point is ≈ 5 % of it (docs/performance.md)
    np.testing.assert_allclose(after.loc[solved, "amplification"], before.loc[solved, "amplification"], rtol=5e-2)
    np.testing.assert_array_equal(after["converged"].isna(), before["converged"].isna())
    # the clean rows come from the very same solve: identical, not just close
    clean = before["kind"] == "clean"
    np.testing.assert_array_equal(after.loc[clean, "psnr"], before.loc[clean, "psnr"])
    np.testing.assert_array_equal(after.loc[clean, "iterations"], before.loc[clean, "iterations"])


def test_a_warm_started_attack_solve_starts_at_the_clean_fixed_point(loaded):
    from robustkit.attacks import BoundReconstructor

    (lm, _), batch = loaded
    op, b = operator_of(batch), batch["kspace"]
    x_clean, _ = clean_solve(lm, b, op)
    b_near = b * 1.001
    with torch.no_grad():
        BoundReconstructor(lm, op)(b_near)
        cold = lm.last_stats.trace[0]
        BoundReconstructor(lm, op, x_clean)(b_near)
        warm = lm.last_stats.trace[0]
    assert (warm < 0.5 * cold).all()  # the first residual: at x_clean, not at the SENSE init


def test_audit_with_the_cache_gives_the_same_certificates(zoo):  # noqa: F811
    before, after = _frames(zoo, "audit", models=["mol", "mnmmol"])
    # x* is the same tensor, so every estimator sees the same centre and random draws
    for column in ("L", "L_slow", "L_top", "jacobian_norm", "L_max", "rate", "iterations", "residual"):
        np.testing.assert_allclose(after[column], before[column], rtol=1e-6, err_msg=column)
    assert list(after["L_source"]) == list(before["L_source"])
    # the probe's perturbed solves start at x*: equal within tolerance where they converged (the tiny
    # MnM-MOL hits its cap, and an unconverged solve depends on its start)
    solved = (before["probe_converged"].astype(bool) & after["probe_converged"].astype(bool)).to_numpy()
    assert solved.sum() >= 2
    np.testing.assert_allclose(after.loc[solved, "amplification"], before.loc[solved, "amplification"], rtol=5e-2)


@pytest.mark.parametrize("name", ["init-test", "sweep-delta"])
def test_other_studies_give_the_old_numbers(zoo, name):  # noqa: F811
    before, after = _frames(zoo, name)
    # the attacked solve's own statistics describe how it ran (from another start), not its result
    numeric = [c for c in before.columns if pd.api.types.is_numeric_dtype(before[c])
               and c not in ("adv_psnr_drop", "adv_residual")]
    for column in numeric:
        np.testing.assert_allclose(after[column].astype(float), before[column].astype(float), rtol=1e-3, atol=1e-6,
                                   err_msg=column)
    if "adv_psnr_drop" in before:  # a difference of two PSNRs, equal where the attacked solves converged
        solved = (before["adv_converged"].astype(bool) & after["adv_converged"].astype(bool)).to_numpy()
        np.testing.assert_allclose(after.loc[solved, "adv_psnr_drop"], before.loc[solved, "adv_psnr_drop"], atol=0.1)


@pytest.fixture
def loaded(zoo):  # noqa: F811
    config = make_config("attack", common(zoo, models=["mnmmol", "mnmmol-2x-delta0.1"]))
    dataset = study_dataset(config)
    models = load_models(config.models, dataset, config.accel, torch.device("cpu"), data=config.data)
    batch = next(batches(dataset, 2, torch.device("cpu")))
    return models, batch


def test_a_cached_solve_is_the_fresh_solve_and_is_reused(loaded):
    (lm, _), batch = loaded
    op, b = operator_of(batch), batch["kspace"]
    CLEAN_SOLVES.clear()
    x, stats = clean_solve(lm, b, op)
    with torch.no_grad():
        fresh, fresh_stats = lm.solve(b, op)
    torch.testing.assert_close(x, fresh, rtol=0, atol=0)
    assert torch.equal(stats.iterations, fresh_stats.iterations)
    again, _ = clean_solve(lm, b, op)
    assert again is x and CLEAN_SOLVES.hits == 1 and CLEAN_SOLVES.misses == 1


def test_no_cached_result_crosses_models_data_or_settings(loaded):
    (lm, other), batch = loaded
    op, b = operator_of(batch), batch["kspace"]
    key = solve_key(lm, b, op)
    assert solve_key(other, b, op) != key  # another model (other weights, other δ)
    assert solve_key(lm, b + 1e-6, op) != key  # other measurements
    assert solve_key(lm, b, operator_of({**batch, "mask": torch.flip(batch["mask"], [-1])})) != key  # other mask
    assert solve_key(lm, b, operator_of({**batch, "maps": batch["maps"] * 0.5})) != key  # other coil maps
    twin = ModelAdapter(lm.name, lm.model, lm.card)  # same name and card, weights changed in place
    with torch.no_grad():
        next(twin.model.parameters()).add_(1e-3)
    assert solve_key(twin, b, op) != key
    with torch.no_grad():
        next(twin.model.parameters()).sub_(1e-3)
    key = solve_key(lm, b, op)
    lm.model.config.eval_tol = 1e-3  # another tolerance
    tighter = solve_key(lm, b, op)
    lm.model.config.eval_tol = 1e-5
    assert tighter != key and solve_key(lm, b, op) == key
    lm.set_backward("jfb")  # the backward does not change the no-grad forward: same key, a hit
    assert solve_key(lm, b, op) == key
    lm.set_backward("implicit")
    lm.model.config.backward_method = "anderson"  # nor does the backward's solver
    assert solve_key(lm, b, op) == key
    lm.model.config.backward_method = "gmres"


def test_warm_start_only_for_fixed_point_models_and_when_on(zoo):  # noqa: F811
    config = make_config("attack", common(zoo, models=["modl", "mnmmol"]))
    dataset = study_dataset(config)
    modl, mnm = load_models(config.models, dataset, config.accel, torch.device("cpu"))
    x = torch.ones(2, 4, 4, dtype=torch.complex64)
    assert warm_start(modl, x) is None and warm_start(mnm, None) is None
    assert torch.equal(warm_start(mnm, x), x)
    with speedups(warm_start=False):
        assert warm_start(mnm, x) is None
