"""The monotone bound study: the maths on linear and piecewise-linear toys, the study on a tiny zoo."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from robustkit.analysis.monotone_bound import check_bound, measure_shift
from robustkit.studies import make_config, run, study_module
from tests.test_studies import common, invoke, cli_common, zoo  # noqa: F401 - the tiny-zoo fixture


def _rotation_with_fixed_axis(n: int, seed: int = 0) -> torch.Tensor:
    """A real orthogonal n×n matrix with eigenvalue 1 along e₁ (a random rotation of the rest)."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n - 1, n - 1, generator=g, dtype=torch.float64))
    U = torch.eye(n, dtype=torch.float64)
    U[1:, 1:] = q
    return U


@pytest.mark.parametrize("m", [0.05, 0.3])
def test_the_bound_holds_for_a_linear_monotone_toy_and_is_tight_along_the_fixed_axis(m):
    """H = (1 − m)U, U orthogonal: Q = I − H is m-monotone, so ‖Δx‖/‖Δrhs‖ ≤ 1/m for every Δrhs,
    with equality for Δrhs along U's eigenvalue-1 axis (there Q = m·I)."""
    n = 6
    U = _rotation_with_fixed_axis(n)
    H = lambda x: (1 - m) * x @ U.T  # noqa: E731 - rows are samples
    Q = torch.eye(n, dtype=torch.float64) - (1 - m) * U
    g = torch.Generator().manual_seed(1)
    rhs1 = torch.randn(3, n, generator=g, dtype=torch.float64)
    d = torch.randn(3, n, generator=g, dtype=torch.float64)
    d[0] = torch.zeros(n, dtype=torch.float64)
    d[0, 0] = 0.7  # the tight direction
    rhs2 = rhs1 + d
    x1, x2 = torch.linalg.solve(Q, rhs1.T).T, torch.linalg.solve(Q, rhs2.T).T
    shift = measure_shift(H, x1, x2, rhs1, rhs2)
    L = torch.full((3,), 1 - m, dtype=torch.float64)  # ‖H‖₂ exactly
    check = check_bound(L, shift.measured, shift.slack)
    assert check.status == ["holds"] * 3
    assert torch.allclose(check.bound, torch.full((3,), 1 / m, dtype=torch.float64))
    assert (shift.measured <= check.bound * (1 + 1e-12)).all()
    assert shift.measured[0].item() == pytest.approx(1 / m, rel=1e-10)  # tight
    assert (shift.measured[1:] < 1 / m).all() and (shift.slack < 1e-10).all()


def _kinked(x: torch.Tensor) -> torch.Tensor:
    """H(x) = x/2 for x ≤ 1, slope 0.95 beyond: contractive near 0.5, nearly not monotone past 1."""
    return torch.where(x <= 1, 0.5 * x, 0.5 + 0.95 * (x - 1))


def _solve_kinked(rhs: torch.Tensor) -> torch.Tensor:
    """The solution of x = H(x) + rhs (Q(x) = x/2 below 1, 0.05x + 0.45 above)."""
    return torch.where(rhs <= 0.5, 2 * rhs, (rhs - 0.45) / 0.05)


def test_a_toy_built_to_violate_the_bound_is_reported_violated():
    """At x* = 0.5 every local estimate is L = 0.5 (bound 2), but a perturbation of the right-hand
    side by 1 lands in the region of slope 0.95: the measured ratio 15.5 exceeds the bound."""
    rhs1, rhs2 = torch.tensor([[0.25]], dtype=torch.float64), torch.tensor([[1.25]], dtype=torch.float64)
    x1, x2 = _solve_kinked(rhs1), _solve_kinked(rhs2)
    shift = measure_shift(_kinked, x1, x2, rhs1, rhs2)
    assert shift.measured.item() == pytest.approx(15.5) and shift.slack.item() < 1e-12
    check = check_bound(torch.tensor([0.5]), shift.measured, shift.slack)
    assert check.status == ["violated"] and check.bound.item() == pytest.approx(2.0)
    # a small perturbation stays in the linear piece: the bound holds there, with equality
    x3 = _solve_kinked(rhs1 + 0.1)
    assert check_bound(torch.tensor([0.5]), measure_shift(_kinked, x1, x3, rhs1, rhs1 + 0.1).measured).status == ["holds"]


def test_vacuous_and_solve_slack():
    check = check_bound(torch.tensor([1.0, 1.2, float("nan"), 0.9]), torch.tensor([5.0, 5.0, 5.0, 10.5]),
                        torch.tensor([0.0, 0.0, 0.0, 0.1]))
    assert check.status == ["vacuous", "vacuous", "vacuous", "holds"]  # 10.5 ≤ 10·(1 + 0.1)
    assert math.isinf(check.bound[0]) and check.m_eff[1].item() == pytest.approx(-0.2)
    assert check_bound(torch.tensor([0.9]), torch.tensor([11.5]), torch.tensor([0.1])).status == ["violated"]


def test_mol_is_checked_on_its_own_equation(zoo):
    """MOL's fixed point solves x = H(x) + Aᴴb for its own H (not the generic H_θ)."""
    from robustkit.batch import operator_of
    from robustkit.models.adapter import ModelAdapter
    from robustkit.models.zoo import load_model
    from robustkit.studies.common import study_dataset

    model, card = load_model("mol")
    lm = ModelAdapter("mol", model.eval(), card)
    ds = study_dataset(make_config("bound", common(zoo, samples=1)))
    batch = {k: v[None] for k, v in ds[0].items()}
    op, b = operator_of(batch), batch["kspace"]
    with torch.no_grad():
        x, stats = lm.solve(b, op)
        own = torch.linalg.vector_norm(x - lm.H_map(op)(x) - op.adjoint(b))
        H_generic = x - op.normal(x) - model.cnn(x) / model.lam_value  # the MnM-MOL operator of its network
        generic = torch.linalg.vector_norm(x - H_generic - op.adjoint(b))
    assert bool(stats.converged[0])
    assert own < 1e-3 * torch.linalg.vector_norm(x) and generic > 10 * own


def test_bound_study_schema_and_rows(zoo):
    config = make_config("bound", common(zoo, eps=[0.05], adv_steps=2, steps=3, restarts=1, slow_steps=2,
                                         power_iters=3))
    frame = run("bound", config, reports_dir=zoo["reports"], progress=False)
    module = study_module("bound")
    assert list(frame.columns) == list(module.COLUMNS)
    for column in module.COLUMNS:
        assert column in module.__doc__
    assert set(frame["model"]) == {"mol-2x", "mnmmol-2x"}
    assert set(frame["estimator"]) == set(module.ESTIMATOR_ROWS) and set(frame["status"]) <= {"holds", "vacuous", "violated"}
    for (model, sample), rows in frame.groupby(["model", "sample"]):
        by = rows.set_index("estimator")
        assert by.loc["max", "L"] == pytest.approx(by.loc[["ball", "slow", "top", "power"], "L"].max())
        assert rows["measured"].nunique() == 1
    finite = frame[frame["m_eff"] > 0]
    assert np.allclose(finite["bound"], 1 / finite["m_eff"])
    assert (frame.loc[frame["m_eff"] <= 0, "status"] == "vacuous").all()
    assert (frame["perturbation"] <= 0.05 + 1e-6).all()
    saved = pd.read_csv(zoo["reports"] / frame.attrs["run_dir"].split("/")[-1] / "results.csv")
    pd.testing.assert_frame_equal(saved, frame)


def test_bound_cli_and_bad_input(zoo, capsys):
    from robustkit.cli import main

    result = invoke(["bound", "--model", "mnmmol", "--eps", "0.05", "--adv-steps", "1", "--steps", "2",
                     "--restarts", "1", "--power-iters", "2", "--samples", "1"] + cli_common(zoo))
    assert result.exit_code == 0, result.output
    assert "results:" in result.output
    for args, message in [(["bound", "--model", "modl"], "unrolled"), (["bound", "--eps", "0"], "eps must be a finite number > 0, got 0.0 (an attack of size 0")]:
        with pytest.raises(SystemExit) as info:
            main(args + cli_common(zoo) + ["--reports-dir", str(zoo["reports"] / "bad")])
        assert info.value.code == 2
        assert message in capsys.readouterr().err
    assert not (zoo["reports"] / "bad").exists()


def _hand_run(tmp_path, rows):
    """A bound run folder written by hand (config, meta, results)."""
    import json

    run_dir = tmp_path / "bound-hand"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps({"study": "bound", "models": ["mnmmol-4x"], "eps": [0.05]}))
    (run_dir / "meta.json").write_text(json.dumps({"status": "complete", "models": [{"name": "mnmmol-4x", "source": "plug-in"}]}))
    pd.DataFrame(rows).to_csv(run_dir / "results.csv", index=False)
    return run_dir


def _row(sample, estimator, L, measured, converged=True, adv_converged=True):
    check = check_bound(torch.tensor([L]), torch.tensor([measured]))
    return {"study": "bound", "model": "mnmmol-4x", "sample": sample, "eps": 0.05, "estimator": estimator, "L": L,
            "m_eff": 1 - L, "measured": measured, "bound": float(check.bound[0]), "status": check.status[0],
            "slack": 0.0, "shift": 0.01, "in_ball": True, "delta": 0.3, "perturbation": 0.05, "iterations": 10,
            "residual": 1e-6, "converged": converged, "adv_iterations": 12, "adv_residual": 1e-6,
            "adv_converged": adv_converged, "adv_steps": 2, "seed": 0}


def test_bound_conclusion_calls_a_converged_violation_a_proof_and_an_unconverged_one_not(tmp_path):
    from robustkit.report.conclusions import conclude
    from robustkit.report.runs import load_run

    rows = [_row(0, "ball", 0.9, 20.0), _row(0, "max", 0.99, 20.0),
            _row(1, "ball", 0.9, 30.0, adv_converged=False), _row(1, "max", 1.01, 30.0, adv_converged=False)]
    text = " ".join(conclude(load_run(_hand_run(tmp_path, rows))))
    assert "attacked solve converged on 1 of 2 slices" in text
    assert "holds on 1, is vacuous (m_eff ≤ 0) on 1 and is violated on 0 of 2 slices" in text
    assert "exceeds the ball bound on 2 of 2 slices; with both solves converged on 1 of them, this proves" in text
    assert "on 1 a solve did not converge, so those violations are flagged, not proofs" in text


def test_bound_report_page_has_the_figure(zoo):
    from robustkit.report import build_run_page

    config = make_config("bound", common(zoo, models=["mnmmol"], eps=[0.05], samples=1, adv_steps=1, steps=2, restarts=1,
                                         slow_steps=1, power_iters=2))
    frame = run("bound", config, reports_dir=zoo["reports"], progress=False)
    html = build_run_page(frame.attrs["run_dir"]).read_text()
    assert "Bound 1/(1 − L) per estimator vs measured amplification" in html and "data:image/png;base64" in html
    assert "could not be drawn" not in html
