"""The zoo's convergence checks on a tiny, contractive MnM-MOL."""

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
    rows = deq_checks(model, ds, delta=0.3, steps=5, restarts=1)
    s = summarize_checks(rows, threshold=0.98)
    assert s["n"] == 2 and s["residual_le_1e-3"] == 1.0
    assert s["ball_start_same_fixed_point"] == 1.0
    # H_θ = −F_θ/λ with a small F_θ: a small positive constant.
    assert 0 < s["L_ball_max"] < 0.5 and s["L_slow_max"] > 0
