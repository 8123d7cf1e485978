"""Small features and false negatives: the inserted feature is what it claims, the detector finds it
in the ground truth, an identity-like reconstructor recovers it, a heavy low-pass one misses it, and
the adversarial search is never kinder to the model than the random candidates it contains."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from robustkit.data.features import (KINDS, Candidate, detect, draw_candidates, insert, inside_centres, kernel,
                                     region, support)
from robustkit.errors import RobustkitError
from robustkit.physics.fft import fft2c, ifft2c
from robustkit.studies import make_config, run


class Adjoint(torch.nn.Module):
    """``x = Aᴴb``: the ground truth itself when the mask is all ones (Σ_c |S_c|² = 1 on the anatomy)."""

    def forward(self, kspace, op):
        return op.adjoint(kspace)


class LowPass(Adjoint):
    """``Aᴴb`` with every k-space frequency but the central 3 × 3 removed: a heavy blur."""

    def forward(self, kspace, op):
        k = fft2c(op.adjoint(kspace))
        h, w = k.shape[-2:]
        keep = torch.zeros(h, w)
        keep[h // 2 - 1:h // 2 + 2, w // 2 - 1:w // 2 + 2] = 1
        return ifft2c(k * keep)


def _target(toy_data) -> torch.Tensor:
    from robustkit.data.prepared import PreparedDataset

    return PreparedDataset(toy_data, split="test")[0]["target"]


def _config(toy_data, models, **kw):
    return make_config("features", {"models": models, "data": toy_data, "accel": 1.0, "sizes": [2, 4],
                                    "contrasts": [0.5], "budget": 3, **kw})


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("size", [1, 2, 3, 4])
def test_the_profile_has_its_size(kind, size):
    p = kernel(kind, size)
    c = p.shape[-1] // 2
    assert p[c, c] == 1 and p.max() == 1 and torch.equal(p, p.flip(0)) and torch.equal(p, p.flip(1))
    if kind == "gaussian":  # full width at half maximum s: p(s/2) = ½
        assert math.exp(-4 * math.log(2) * (size / 2) ** 2 / size**2) == pytest.approx(0.5)
        assert p[c, c + 1].item() == pytest.approx(math.exp(-4 * math.log(2) / size**2))
    else:  # the span along the centre row is s rounded down to odd, within s/2 of the centre
        assert int(p[c].sum()) == 2 * math.floor(size / 2) + 1


@pytest.mark.parametrize("kind", KINDS)
def test_an_inserted_feature_has_the_claimed_amplitude_inside_the_anatomy(toy_data, kind):
    x = _target(toy_data)
    (cand,) = draw_candidates(x, [kind], 3, 0.4, 1, np.random.default_rng(0))
    x_f, t, a = insert(x, cand)
    p = kernel(kind, 3)
    foot = torch.nonzero(p >= 0.5) - p.shape[-1] // 2 + torch.tensor([cand.row, cand.col])
    anatomy = support(x)
    assert all(anatomy[r, c] for r, c in foot.tolist())  # the footprint lies in the anatomy
    w = t.abs()
    local = float((w * x.abs()).sum() / w.sum())
    assert a == pytest.approx(0.4 * local, rel=1e-6)
    assert float(x_f.abs().max()) == pytest.approx(a, rel=1e-6)
    assert float(x_f[cand.row, cand.col].abs()) == pytest.approx(a, rel=1e-6)  # the peak is at the centre
    assert float((x_f[cand.row, cand.col] / (x * w).sum()).angle()) == pytest.approx(0, abs=1e-5)  # local phase


def test_centres_keep_the_footprint_inside():
    mask = torch.zeros(12, 12, dtype=torch.bool)
    mask[2:9, 3:10] = True  # a 7 × 7 square
    ok = inside_centres(mask, kernel("disc", 4))  # 5-pixel-wide footprint
    assert torch.nonzero(ok).tolist() == [[r, c] for r in range(4, 7) for c in range(5, 8)]


def test_the_detector_finds_the_feature_in_the_ground_truth_and_nothing_in_its_absence(toy_data):
    x = _target(toy_data)
    for cand in draw_candidates(x, list(KINDS), 2, 0.2, 6, np.random.default_rng(1)):
        x_f, t, a = insert(x, cand)
        r = region(tuple(x.shape), cand.row, cand.col, cand.size)
        truth = detect((x + x_f) - x, t, a, r)
        assert truth.detected and truth.contrast_recovered == pytest.approx(1, abs=1e-5)
        assert truth.correlation == pytest.approx(1, abs=1e-5)
        assert not detect(torch.zeros_like(x), t, a, r).detected
        assert not detect(0.3 * x_f, t, a, r).detected  # a third of the contrast is below the threshold
        assert not detect(-x_f, t, a, r).detected  # a dark spot is not the bright feature


def test_identity_like_reconstructor_recovers_and_lowpass_misses(toy_data):
    config = _config(toy_data, [Adjoint(), LowPass()], features=["disc", "cross"], searches=["random"])
    frame = run("features", config, reports_dir=toy_data + ".reports", progress=False)
    ident, blur = frame[frame["model"] == "Adjoint"], frame[frame["model"] == "LowPass"]
    assert len(ident) == len(blur) == 2 * 2 * 2 * 2  # slices × features × sizes × positions
    assert ident["detected"].all() and not ident["false_negative"].any()
    np.testing.assert_allclose(ident["contrast_recovered"], 1, atol=1e-4)
    np.testing.assert_allclose(ident["error_feature"], 0, atol=1e-4)
    assert blur["false_negative"].all() and (blur["contrast_recovered"] < 0.5).all()
    assert (blur["error_feature"] > 0.1).all()
    assert (frame["false_negative"] == ~frame["detected"]).all()
    assert frame["converged"].isna().all()  # no DEQ here


def test_adversarial_search_is_never_kinder_than_its_random_candidates(toy_data):
    config = _config(toy_data, [LowPass()], features=list(KINDS))
    frame = run("features", config, reports_dir=toy_data + ".reports", progress=False)
    rand, adv = frame[frame["search"] == "random"], frame[frame["search"] == "adversarial"]
    assert len(adv) == 2 * 2 and (adv["candidates"] == 3 * 2 + 3).all()  # slices × sizes; kinds × positions + budget
    for _, row in adv.iterrows():
        same = rand[(rand["sample"] == row["sample"]) & (rand["size"] == row["size"]) & (rand["contrast"] == row["contrast"])]
        assert len(same) == 6 and row["feature_loss"] >= same["feature_loss"].max()
        assert row["contrast_recovered"] <= same.loc[same["feature_loss"].idxmax(), "contrast_recovered"] + 1e-12


def test_every_model_sees_the_same_random_features(toy_data):
    frame = run("features", _config(toy_data, [Adjoint(), LowPass()], searches=["random"]),
                reports_dir=toy_data + ".reports", progress=False)
    keys = ["sample", "feature", "size", "contrast", "row", "col", "amplitude"]
    a, b = (frame[frame["model"] == m][keys].reset_index(drop=True) for m in ("Adjoint", "LowPass"))
    pd.testing.assert_frame_equal(a, b)


def test_features_from_the_command_line(toy_data, tmp_path, capsys):
    from robustkit.cli import cli

    reports = tmp_path / "reports"
    args = ["features", "--model", "tests/user_nets.py:tiny_deq", "--data", toy_data, "--accel", "2",
            "--size", "2", "--contrast", "0.5", "--feature", "disc", "--budget", "1", "--positions", "1",
            "--reports-dir", str(reports)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "false_negative" in result.output and "report:" in result.output
    (run_dir,) = reports.glob("features-*")
    frame = pd.read_csv(run_dir / "results.csv")
    assert set(frame["search"]) == {"random", "adversarial"} and frame["iterations"].notna().all()
    assert frame["converged"].notna().all()
    bad = CliRunner().invoke(cli, ["features", "--model", "tests/user_nets.py:tiny_net", "--data", toy_data,
                                   "--size", "0", "--reports-dir", str(reports)])
    assert bad.exit_code == 2 and "--size" in bad.output
    # a feature larger than the image (it used to exhaust the memory) is refused before anything is written
    from robustkit.cli import main

    with pytest.raises(SystemExit) as huge:
        main(["features", "--model", "tests/user_nets.py:tiny_net", "--data", toy_data, "--accel", "2",
              "--size", "500", "--reports-dir", str(tmp_path / "huge")])
    assert huge.value.code == 2 and not (tmp_path / "huge").exists()
    assert "a disc of size 500 px spans 503 px, more than the 16×16 image; give sizes up to 12" in capsys.readouterr().err


@pytest.mark.parametrize("mapping, words", [
    ({"sizes": [0]}, "sizes must be whole pixels"),
    ({"contrasts": [-0.1]}, "contrasts must be finite numbers > 0"),
    ({"features": ["square"]}, "unknown feature 'square'"),
    ({"searches": ["greedy"]}, "unknown search 'greedy'"),
    ({"threshold": 1.5}, "threshold must be in (0, 1]"),
    ({"budget": -1}, "budget >= 0"),
])
def test_bad_settings_are_one_line_errors(mapping, words):
    with pytest.raises(RobustkitError, match=words.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        make_config("features", {"models": ["modl"], **mapping})


def test_a_slice_without_anatomy_is_refused():
    with pytest.raises(RobustkitError, match="no anatomy"):
        draw_candidates(torch.zeros(8, 8, dtype=torch.complex64), ["disc"], 2, 0.5, 1, np.random.default_rng(0))
    with pytest.raises(RobustkitError, match="unknown feature"):
        insert(torch.ones(8, 8, dtype=torch.complex64), Candidate("blob", 2, 0.5, 4, 4))


def test_report_page_quotes_the_false_negatives_of_the_results(toy_data, tmp_path):
    from robustkit.report import build_run_page, tables
    from tests.test_report import csv_links, read_page

    frame = run("features", _config(toy_data, [Adjoint(), LowPass()], features=["disc"]), reports_dir=tmp_path,
                progress=False)
    run_dir = tmp_path / frame.attrs["run_dir"].split("/")[-1]
    page_path = build_run_page(run_dir)
    page = read_page(page_path)
    assert any(src.startswith("data:image/png;base64,") for src in page.imgs) and "could not be drawn" not in "".join(page.text)
    results = pd.read_csv(run_dir / "results.csv")
    (csv,) = [p for p in csv_links(page, page_path) if p.name == "features_summary.csv"]
    pd.testing.assert_frame_equal(pd.read_csv(csv), tables.features_summary(results), check_dtype=False)
    conclusion = " ".join("".join(page.conclusion).split())
    for model in ("Adjoint", "LowPass"):
        for search in ("random", "adversarial"):
            for size in (2, 4):
                rows = results[(results["model"] == model) & (results["search"] == search) & (results["size"] == size)]
                k, n = int(rows["false_negative"].sum()), len(rows)
                assert f"{size:g} px {k}/{n} ({100 * k / n:.0f} %)" in conclusion.split(f"{model} misses")[1].split(".")[0]
    worst = results[results["search"] == "adversarial"]["contrast_recovered"].min()
    assert f"{worst:.3f} of its contrast recovered" in conclusion


def test_an_unconverged_deq_is_flagged_in_rows_and_conclusion(toy_data, tmp_path):
    from robustkit.report import build_run_page
    from tests.test_report import read_page
    from tests.user_nets import MapOnlyDEQ

    class Stopped(MapOnlyDEQ):
        solver_settings = {"tol": 1e-12, "max_iter": 2}  # f(x) = x/2 + Aᴴb needs ~40 steps to 1e-12

    frame = run("features", _config(toy_data, [Stopped()], features=["disc"], sizes=[2]), reports_dir=tmp_path,
                progress=False)
    assert not frame["converged"].any() and (frame["iterations"] == 2).all() and (frame["residual"] > 1e-12).all()
    page = read_page(build_run_page(tmp_path / frame.attrs["run_dir"].split("/")[-1]))
    conclusion = " ".join("".join(page.conclusion).split())
    assert f"Stopped: solve with or without the feature converged on 0 of {len(frame)} slices" in conclusion
