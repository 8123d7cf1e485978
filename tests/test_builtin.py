"""The built-in MNI152 dataset: deterministic, split by separated slice ranges, targets equal the
coil-combined fully sampled image, and its coils encode well enough for SENSE at 4×."""

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from robustkit.data import builtin
from robustkit.data.prepared import PreparedDataset, read_provenance, read_samples
from robustkit.errors import RobustkitError
from robustkit.metrics import psnr
from robustkit.physics.fft import ifft2c
from robustkit.physics.masks import MaskSpec
from robustkit.physics.sense import SenseOperator, sense_init


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    return builtin.build_builtin(tmp_path_factory.mktemp("builtin") / "mni.h5", progress=False)


@pytest.fixture(scope="module")
def samples(built):
    return read_samples(built)


def test_same_seed_gives_the_same_bytes(built, tmp_path):
    again = builtin.build_builtin(tmp_path / "again.h5", progress=False)
    assert again.read_bytes() == built.read_bytes()


def test_other_seed_changes_the_phase_only(samples):
    volume = builtin.load_template(2)
    other = next(builtin._samples(volume, 2, seed=1, n_coils=12, progress=False))
    first = samples[0]
    assert other.meta["slice"] == first.meta["slice"] and other.meta["seed"] == 1
    np.testing.assert_allclose(np.abs(other.target), np.abs(first.target), atol=1e-5)
    brain = np.abs(first.target) > 0.1
    assert np.abs(np.angle(other.target[brain] * first.target[brain].conj())).mean() > 0.1


def test_splits_are_disjoint_ranges_separated_by_gaps(built, samples):
    z = {name: {s.meta["slice"] for s in samples if s.meta["split"] == name} for name in ("train", "val", "test")}
    assert len(z["test"]) == 10 and len(z["val"]) == 5 and len(z["train"]) >= 30
    assert not (z["train"] & z["test"] or z["train"] & z["val"] or z["val"] & z["test"])
    gap = min(abs(a - b) for a in z["test"] for b in z["train"] | z["val"])
    assert gap >= 3  # at least two dropped slices between test and any other block
    assert min(abs(a - b) for a in z["val"] for b in z["train"]) >= 3
    prov = read_provenance(built)
    assert prov["split_ranges"]["test"] == [[min(z["test"]), max(z["test"]) + 1]]
    assert prov["seed"] == 0 and prov["coils"] == 12 and "licence" in prov and "nilearn" in prov


def test_target_is_the_coil_combined_fully_sampled_image(samples):
    for s in samples[::10]:
        assert s.kspace.shape == (12, 120, 104) and s.mask is None
        combined = (s.maps.conj() * ifft2c(torch.from_numpy(s.kspace)).numpy()).sum(0)
        np.testing.assert_allclose(combined, s.target, atol=1e-5)
        assert np.abs(s.target).max() == pytest.approx(1.0, abs=1e-6)
        ss = (np.abs(s.maps) ** 2).sum(0)
        assert np.all((np.abs(ss - 1) < 1e-5) | (ss == 0))
        assert np.abs(s.target[ss == 0]).max(initial=0) == 0  # the support contains the brain
        assert s.meta["scale"] > 0 and s.meta["source"] == "builtin-mni152"


def test_sense_at_4x_beats_zero_filling_and_a_floor(built):
    data = PreparedDataset(built, split="test", mask=MaskSpec(accel=4))
    batch = [data[i] for i in (0, 5)]
    k = torch.stack([b["kspace"] for b in batch])
    op = SenseOperator(torch.stack([b["maps"] for b in batch]), torch.stack([b["mask"] for b in batch]))
    target = torch.stack([b["target"] for b in batch])
    sense = psnr(sense_init(op, k), target)
    zero_filled = psnr(op.adjoint(k), target)
    assert (sense > 25).all() and (sense > zero_filled + 3).all()


def test_bad_arguments_are_user_errors(tmp_path, built):
    with pytest.raises(RobustkitError):
        builtin.build_builtin(tmp_path / "x.h5", resolution=3)
    with pytest.raises(RobustkitError):
        builtin.build_builtin(built)  # exists, no overwrite


def test_cli_build_out_cache_and_sense_report(tmp_path, monkeypatch):
    from robustkit.cli.data_build import build

    monkeypatch.setenv("ROBUSTKIT_CACHE", str(tmp_path / "cache"))
    runner = CliRunner()
    out = tmp_path / "out.h5"
    result = runner.invoke(build, ["--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "test 10" in result.output and "12 coils" in result.output and out.exists()
    refused = runner.invoke(build, ["--out", str(out)])
    assert isinstance(refused.exception, RobustkitError)

    result = runner.invoke(build, ["--sense-report"], obj={"seed": 0})
    assert result.exit_code == 0, result.output
    cached = builtin.builtin_path(2, 0)
    assert cached.parent == tmp_path / "cache" and cached.exists()
    assert "SENSE 4x noise 0:" in result.output and "SENSE 6x noise 0.01:" in result.output
    stamp = cached.stat().st_mtime_ns
    assert builtin.ensure_builtin(2, 0) == cached and cached.stat().st_mtime_ns == stamp


@pytest.mark.parametrize("plane", list(builtin.PLANES))
def test_each_plane_slices_its_own_axis_with_ten_test_slices(plane):
    volume = builtin.load_template(2)
    axis = builtin.PLANES[plane]
    z0, z1 = builtin.kept_slices(volume, plane)
    ranges = builtin.split_ranges(z0, z1, 2)
    assert sum(b - a for a, b in ranges["test"]) == 10 and 0 <= z0 < z1 <= volume.shape[axis]
    image = builtin.plane_slice(volume, (z0 + z1) // 2, plane)
    expected = {"axial": volume[:, :, (z0 + z1) // 2], "coronal": volume[:, (z0 + z1) // 2, :],
                "sagittal": volume[(z0 + z1) // 2, :, :]}[plane].T[::-1]
    np.testing.assert_array_equal(image, expected)
    h, w = builtin.padded_shape(2, plane)
    assert image.shape[0] <= h and image.shape[1] <= w
    sample = next(builtin._samples(volume, 2, seed=0, n_coils=4, progress=False, plane=plane))
    assert sample.kspace.shape == (4, h, w) and sample.meta["plane"] == plane
    assert plane in builtin.builtin_path(2, 0, 12, plane).name
    with pytest.raises(RobustkitError, match="plane"):
        builtin.builtin_path(2, 0, 12, "oblique") and builtin.ensure_builtin(plane="oblique")
