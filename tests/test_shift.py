"""The shift study: each condition produces the acquisition it claims, and the study runs end to end."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from robustkit.cli import cli
from robustkit.data.prepared import read_samples, write_prepared
from robustkit.data.sample import Sample
from robustkit.data.shift import Condition, coil_subset, condition_dataset, fewer_coils
from robustkit.errors import RobustkitError
from robustkit.physics.fft import fft2c
from robustkit.studies import make_config, run, study_module
from tests.test_studies import ACCEL, common, zoo  # noqa: F401 - the tiny zoo fixture
from tests.test_training import smooth_image, tiny_dataset


@pytest.fixture
def wide(tmp_path):
    """Tiny data wide enough for masks to reach their acceleration: 2 slices, 4 coils, 24 × 40."""
    h, w, rng = 24, 40, np.random.default_rng(0)
    yy, xx = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    maps = np.stack([np.exp(-((yy - np.cos(a)) ** 2 + (xx - np.sin(a)) ** 2) + 1j * a)
                     for a in np.linspace(0, 2 * np.pi, 4, endpoint=False)])
    maps /= np.sqrt((np.abs(maps) ** 2).sum(0))
    samples = []
    for _ in range(2):
        x = smooth_image(rng, h, w)
        x /= np.abs(x).max()
        k = fft2c(torch.from_numpy(maps * x)).numpy()
        samples.append(Sample(kspace=k.astype(np.complex64), maps=maps.astype(np.complex64),
                              target=x.astype(np.complex64), meta={"scale": 1.0}))
    return write_prepared(tmp_path / "wide.h5", samples, {"source": "test"})


@pytest.mark.parametrize("kind", ["random", "equispaced", "variable-density-2d"])
@pytest.mark.parametrize("accel", [2.0, 4.0, 8.0])
def test_masks_have_the_claimed_acceleration(wide, kind, accel):
    ds = condition_dataset(wide, None, Condition(accel=accel, mask=kind))
    for i in range(len(ds)):
        mask = ds[i]["mask"][0].numpy()
        assert set(np.unique(mask)) <= {0.0, 1.0}
        measured = mask.size / mask.sum()
        assert abs(measured - accel) / accel < 0.12, (kind, accel, measured)
        if kind != "variable-density-2d":  # whole phase-encode lines
            assert (mask == mask[:1]).all()
        else:
            assert not (mask == mask[:1]).all()


def test_equispaced_lines_are_equally_spaced_outside_the_centre(wide):
    ds = condition_dataset(wide, None, Condition(accel=4.0, mask="equispaced"))
    lines = np.flatnonzero(ds[0]["mask"][0, 0].numpy())
    gaps = np.diff(lines)
    outer = gaps[gaps > 1]  # the centre block has gaps of 1
    assert len(outer) >= 4 and outer.max() - outer.min() <= 1


def test_noise_has_the_claimed_relative_sigma(wide):
    clean = condition_dataset(wide, None, Condition(accel=2.0))
    sigma = 0.05
    noisy = condition_dataset(wide, None, Condition(accel=2.0, noise=sigma))
    for i in range(len(clean)):
        b0, b1, m = clean[i]["kspace"].numpy(), noisy[i]["kspace"].numpy(), clean[i]["mask"].numpy()
        n = b1 - b0  # the noise alone: what a zero image would measure
        sampled = np.broadcast_to(m, n.shape) > 0
        assert np.abs(n[~sampled]).max() == 0
        rms = np.linalg.norm(b0) / np.sqrt(sampled.sum())
        measured = np.sqrt(np.mean(np.abs(n[sampled]) ** 2))  # complex std
        assert abs(measured / rms - sigma) / sigma < 0.1
        assert abs(n[sampled].real.std() - n[sampled].imag.std()) / n[sampled].real.std() < 0.15


def test_fewer_coils_keeps_that_many_renormalised_and_consistent(wide):
    sample = read_samples(wide)[0]
    assert coil_subset(12, 4).tolist() == [0, 3, 6, 9]
    small = fewer_coils(sample, 2)
    assert small.maps.shape[0] == 2 and small.kspace.shape[0] == 2
    rss = (np.abs(small.maps) ** 2).sum(0)
    assert np.allclose(rss[rss > 0], 1, atol=1e-5)
    k = fft2c(torch.from_numpy(small.maps * small.target)).numpy()
    assert np.allclose(k, small.kspace, atol=1e-5)
    np.testing.assert_allclose(small.target[rss > 0], sample.target[rss > 0], atol=1e-5)
    ds = condition_dataset(wide, None, Condition(accel=2.0, coils=3))
    assert ds[0]["maps"].shape[0] == 3 and ds[0]["kspace"].shape[0] == 3
    with pytest.raises(RobustkitError, match="coils"):
        fewer_coils(sample, 5)


def test_the_nominal_condition_is_the_usual_evaluation_data(wide):
    from robustkit.data.evaluation import eval_dataset

    ds, _ = eval_dataset(str(wide), None, 4.0, seed=3)
    mine = condition_dataset(wide, "all", Condition(accel=4.0), seed=3)
    for i in range(len(ds)):
        for key in ("kspace", "mask", "maps", "target"):
            assert torch.equal(ds[i][key], mine[i][key])


SETTINGS = {"accels": [ACCEL, 4.0], "masks": ["equispaced"], "noises": [0.05], "coils": [2]}


def test_shift_study_end_to_end(zoo, tmp_path):  # noqa: F811
    other = tiny_dataset(tmp_path / "other.h5", n=4)
    config = make_config("shift", common(zoo, models=["modl", "mnmmol"], anatomy=[str(other)], **SETTINGS))
    frame = run("shift", config, reports_dir=zoo["reports"], progress=False)
    module = study_module("shift")
    assert list(frame.columns) == list(module.COLUMNS)
    for column in module.COLUMNS:
        assert column in module.__doc__
    assert set(frame["axis"]) == {"accel", "mask", "noise", "coils", "anatomy"}
    n = 2  # the val split of the tiny data
    for (model, axis), rows in frame.groupby(["model", "axis"]):
        nominal = rows[rows["nominal"]]
        assert len(nominal) == n  # each axis has its nominal rows, once
        assert np.allclose(nominal["psnr_drop"], 0)
    # the nominal rows are one reconstruction, whichever axis shows them
    nom = frame[frame["nominal"]].groupby(["model", "sample"])["psnr"].agg(["min", "max"])
    assert np.allclose(nom["min"], nom["max"])
    mod = frame[frame["model"] == "modl-2x"]
    assert mod["converged"].isna().all()
    deq = frame[frame["model"] == "mnmmol-2x"]
    assert deq["converged"].notna().all() and (deq["iterations"] > 0).all()
    assert set(frame.loc[frame["axis"] == "accel", "condition"]) == {"2x", "4x"}
    four = frame[(frame["axis"] == "accel") & (frame["condition"] == "4x")]
    assert (four["mask_accel"] > 2.5).all() and not four["nominal"].any()
    coils = frame[frame["axis"] == "coils"]
    assert set(coils["coils"]) == {2, 4} and set(coils.loc[coils["nominal"], "condition"]) == {"4 coils"}
    noise = frame[(frame["axis"] == "noise") & ~frame["nominal"]]
    assert (noise["noise"] == 0.05).all() and (noise["psnr_drop"] > 0).all()  # noise costs PSNR on every slice
    anatomy = frame[(frame["axis"] == "anatomy") & ~frame["nominal"]]
    assert set(anatomy["condition"]) == {"other.h5"} and set(anatomy["split"]) == {"val"}
    row = frame.iloc[0]
    assert np.isclose(row["psnr_drop"], row["psnr_nominal"] - row["psnr"])
    run_dir = zoo["reports"] / frame.attrs["run_dir"].split("/")[-1]
    pd.testing.assert_frame_equal(pd.read_csv(run_dir / "results.csv"), frame)


def test_bad_shift_settings_write_nothing(zoo):  # noqa: F811
    for bad, match in [({"axes": ["tilt"]}, "unknown axis"), ({"masks": ["spiral"]}, "unknown mask"),
                       ({"anatomy": ["nowhere.h5"]}, "anatomy"), ({"noises": [-0.1]}, "eps|number")]:
        with pytest.raises(RobustkitError, match=match):
            make_config("shift", common(zoo, **bad))
    config = make_config("shift", common(zoo, models=["modl"], axes=["coils"], coils=[9]))
    with pytest.raises(RobustkitError, match="4 coils"):
        run("shift", config, reports_dir=zoo["reports"], progress=False)
    assert not zoo["reports"].exists() or not any(zoo["reports"].iterdir())


def test_shift_cli_prints_the_table_and_builds_the_report(zoo):  # noqa: F811
    args = ["shift", "--model", "mnmmol", "--data", zoo["data"], "--split", "val", "--accel", str(ACCEL),
            "--axis", "accel", "--axis", "noise", "--eval-accel", "4", "--noise", "0.05",
            "--reports-dir", str(zoo["reports"])]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "shift:" in result.output and "4x" in result.output and "report:" in result.output
    run_dir = next(zoo["reports"].glob("shift-*"))
    assert json.loads((run_dir / "config.json").read_text())["noises"] == [0.05]
    html = (run_dir / "report.html").read_text()
    assert "Distribution shift" in html and "could not be drawn" not in html and "data:image/png" in html
    bad = CliRunner().invoke(cli, [*args[:6], "--axis", "coils", "--coils", "9", "--reports-dir", str(zoo["reports"])])
    assert bad.exit_code == 2 and "coils" in bad.output
