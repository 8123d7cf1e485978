"""The zoo's convergence checks on a tiny, contractive MnM-MOL."""

import pytest
import torch

from robustkit.analysis.checks import deq_checks, summarize_checks
from robustkit.data.prepared import PreparedDataset
from robustkit.models import build_model
from robustkit.physics.masks import MaskSpec
from tests.test_training import tiny_dataset


def test_contractive_model_passes_and_reports_every_check(tmp_path):
    torch.manual_seed(0)
    model = build_model("mnmmol", {"width": 8, "depth": 3})
    for p in model.cnn.parameters():
        p.data.mul_(0.1)
    ds = PreparedDataset(tiny_dataset(tmp_path / "d.h5"), split="val", mask=MaskSpec(accel=1))  # AᴴA = I: H_θ = −F_θ/λ contracts
    rows = deq_checks(model, ds, delta=0.3, steps=5, restarts=1, power_iters=30)
    s = summarize_checks(rows, threshold=0.98)
    assert s["n"] == 2 and s["residual_le_1e-3"] == 1.0 and s["converged"] == 1.0
    assert s["ball_start_same_fixed_point"] == 1.0
    # H_θ = −F_θ/λ with a small F_θ: a small positive constant.
    assert 0 < s["L_ball_max"] < 0.5 and s["L_slow_max"] > 0
    for row in rows:  # the pass/fail bound is the largest of the four lower bounds
        assert row["L_max"] == max(row["L_ball"], row["L_slow"], row["L_top"], row["jacobian_norm"])
        # the plain iteration contracts no slower than ρ(J_H) ≤ ‖J_H‖₂ allows
        assert 0 < row["rate"] <= row["L_max"] + 0.005 and not row["rate_exceeds_L"]
    assert s["L_le_T"] == 1.0 and s["rate_exceeds_L"] == 0.0


def test_same_fixed_point_solves_past_the_slow_mode():
    """x = Mx + c with a slow mode (q = 0.995): solves stopped at residual 1e-5 from two starts sit
    ≈ 1e-5/(1 − q) from the fixed point and so look like different points; solved to 1e-9 they agree
    with each other and with the exact solution (I − M)⁻¹c."""
    from robustkit.analysis.checks import same_fixed_point
    from robustkit.solvers import solve

    q = torch.tensor([0.995, 0.5, -0.3, 0.1], dtype=torch.float64)
    c = torch.tensor([[1.0, -2.0, 0.5, 3.0]], dtype=torch.float64)
    f = lambda x: q * x + c  # noqa: E731
    exact = c / (1 - q)
    a, b = exact + 0.3 * exact.norm(), exact - 0.3 * exact.norm()
    xa, _ = solve(f, a, method="damped", tol=1e-5, max_iter=20000)
    xb, _ = solve(f, b, method="damped", tol=1e-5, max_iter=20000)
    loose = float((xa - xb).norm() / exact.norm())
    assert loose > 1e-3  # the artefact the check must not report as "different fixed points"
    distance, converged = same_fixed_point(f, xa, [b], tol=1e-9, max_iter=20000, method="damped")
    assert distance.shape == (1, 1) and bool(converged[0, 0]) and float(distance[0, 0]) < 1e-6
    x_ref, _ = solve(f, xa, method="damped", tol=1e-9, max_iter=20000)
    assert float((x_ref - exact).norm() / exact.norm()) < 1e-6


def test_same_fixed_point_tells_two_fixed_points_apart():
    """x = tanh(2x) has the stable fixed points ±0.9575: per start (rows) and sample (columns),
    starts on the other side end ≈ 2 apart, starts on the same side at distance 0."""
    from robustkit.analysis.checks import same_fixed_point

    f = lambda x: torch.tanh(2 * x)  # noqa: E731
    x_star = torch.tensor([[1.0], [-3.0]], dtype=torch.float64)
    starts = [-x_star, 0.5 * x_star, torch.tensor([[0.2], [0.2]], dtype=torch.float64)]
    distance, converged = same_fixed_point(f, x_star, starts, tol=1e-10, max_iter=1000, method="damped")
    assert distance.shape == (3, 2) and bool(converged.all())
    expected = torch.tensor([[2.0, 2.0], [0.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    torch.testing.assert_close(distance, expected, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="at least one start"):
        same_fixed_point(f, x_star, [], tol=1e-10, max_iter=10, method="damped")


def test_lipschitz_at_without_the_slow_mode_gives_the_same_ball_estimate(tmp_path):
    """``slow_steps = 0`` skips the slow-mode ascent (sweep-delta's common δ needs the ball estimate
    only); the ball estimate, drawn first from the generator, is unchanged."""
    from robustkit.analysis.checks import lipschitz_at
    from robustkit.batch import operator_of
    from robustkit.studies.common import batches

    torch.manual_seed(0)
    model = build_model("mnmmol", {"width": 8, "depth": 3})
    ds = PreparedDataset(tiny_dataset(tmp_path / "d.h5"), split="val", mask=MaskSpec(accel=2))
    batch = next(iter(batches(ds, 2, "cpu")))
    op, b = operator_of(batch), batch["kspace"]
    with torch.no_grad():
        x = model(b, op)
        ball, slow = lipschitz_at(model, x, b, op, 0.3, 5, 2, 3, torch.Generator().manual_seed(1))
        ball_only, none = lipschitz_at(model, x, b, op, 0.3, 5, 2, 0, torch.Generator().manual_seed(1))
    assert none is None and slow is not None
    torch.testing.assert_close(ball_only.estimate, ball.estimate, rtol=0, atol=0)


def test_models_check_warns_on_every_failed_check():
    from robustkit.cli.models import check_warnings

    ok = {"converged": 1.0, "L_le_T": 1.0, "L_max_max": 0.97, "rate_exceeds_L": 0.0, "rate_max": 0.96,
          "jacobian_converged": 1.0}
    assert check_warnings(ok, 0.98) == []
    bad = {**ok, "converged": 0.5, "L_le_T": 0.0, "L_max_max": 0.995, "rate_exceeds_L": 1.0, "rate_max": 0.999,
           "jacobian_converged": 0.0}
    lines = check_warnings(bad, 0.98)
    assert len(lines) == 4
    assert "converged on 50% of slices" in lines[0] and "0.9950" in lines[1] and "miss a direction" in lines[2]


def test_evaluate_reports_the_observed_rate_of_deq_models(tmp_path):
    from robustkit.evaluate import evaluate

    torch.manual_seed(0)
    model = build_model("mnmmol", {"width": 8, "depth": 3})
    for p in model.cnn.parameters():
        p.data.mul_(0.1)
    ds = PreparedDataset(tiny_dataset(tmp_path / "d.h5"), split="val", mask=MaskSpec(accel=1))
    rows = evaluate(model, ds, rate=True)
    assert all(0 <= r["rate"] < 0.5 and not r["rate_gt_T"] and r["converged"] for r in rows)
    assert "rate" not in evaluate(model, ds)[0] and "rate" not in evaluate(None, ds, rate=True)[0]
