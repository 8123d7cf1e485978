"""Training-time augmentation: the new sample obeys the forward model exactly, keeps the magnitude
(or its mirror image), changes the phase, is drawn anew per epoch and never touches evaluation."""

from pathlib import Path

import numpy as np
import pytest
import torch

from robustkit.data.augment import augment_sample
from robustkit.data.prepared import PreparedDataset, write_prepared
from robustkit.data.sample import Sample
from robustkit.errors import RobustkitError
from robustkit.physics.fft import fft2c, ifft2c
from robustkit.physics.masks import MaskSpec

H, W, C = 16, 12, 3


def _sample(seed: int, with_target: bool = True) -> Sample:
    rng = np.random.default_rng(seed)
    support = np.zeros((H, W), bool)
    support[2:-2, 2:-3] = True  # not left-right symmetric, so a flip is visible
    maps = rng.standard_normal((C, H, W)) + 1j * rng.standard_normal((C, H, W))
    maps = np.where(support, maps / np.sqrt((np.abs(maps) ** 2).sum(0)), 0).astype(np.complex64)
    x = np.where(support, rng.random((H, W)) * np.exp(1j * rng.random((H, W))), 0).astype(np.complex64)
    k = fft2c(torch.from_numpy(maps * x)).numpy()
    return Sample(kspace=k, maps=maps, target=x if with_target else None, meta={"split": "train"})


@pytest.fixture
def prepared(tmp_path) -> Path:
    return write_prepared(tmp_path / "tiny.h5", [_sample(i) for i in range(3)], {"source": "test"})


def test_augmented_sample_obeys_the_forward_model_and_keeps_the_magnitude():
    s = _sample(0)
    flips = set()
    for seed in range(12):
        k, maps, x = augment_sample(s.maps, s.target, np.random.default_rng(seed))
        assert k.dtype == maps.dtype == x.dtype == np.complex64 and k.shape == (C, H, W)
        combined = (maps.conj() * ifft2c(torch.from_numpy(k)).numpy()).sum(0)
        np.testing.assert_allclose(combined, x, atol=1e-5)  # Σ_c conj(S'_c) Fᴴ k'_c = x'
        flipped = np.allclose(np.abs(x), np.abs(s.target[:, ::-1]), atol=1e-6)
        assert flipped or np.allclose(np.abs(x), np.abs(s.target), atol=1e-6)
        np.testing.assert_allclose(np.abs(maps), np.abs(s.maps[..., ::-1] if flipped else s.maps), atol=1e-6)
        original = s.target[:, ::-1] if flipped else s.target
        inside = np.abs(original) > 0
        assert np.abs(np.angle(x[inside] / original[inside])).max() > 0.1  # a new phase
        flips.add(flipped)
    assert flips == {True, False}


def test_dataset_draws_a_new_sample_per_epoch_and_only_when_training(prepared):
    spec = MaskSpec(accel=2)
    plain = PreparedDataset(prepared, mask=spec, vary=True)
    aug = PreparedDataset(prepared, mask=spec, vary=True, augment=True)
    again = PreparedDataset(prepared, mask=spec, vary=True, augment=True)
    a, b = aug[1], again[1]
    assert all(torch.equal(a[key], b[key]) for key in a)  # deterministic for one seed and epoch
    assert torch.equal(a["mask"], plain[1]["mask"]) and not torch.allclose(a["target"], plain[1]["target"])
    aug.set_epoch(1)
    assert not torch.allclose(aug[1]["target"], a["target"])
    frozen = PreparedDataset(prepared, mask=spec, vary=False, augment=True)
    fixed = PreparedDataset(prepared, mask=spec, vary=False)
    assert all(torch.equal(frozen[2][key], fixed[2][key]) for key in fixed[2])  # evaluation untouched


def test_augmentation_refuses_samples_without_a_target(tmp_path):
    path = write_prepared(tmp_path / "no-target.h5", [_sample(0, with_target=False)], {"source": "test"})
    with pytest.raises(RobustkitError, match="without --augment"):
        PreparedDataset(path, augment=True)
    PreparedDataset(path)  # fine without it


def test_train_cli_offers_augment():
    from click.testing import CliRunner

    from robustkit.cli import cli

    result = CliRunner().invoke(cli, ["train", "--help"])
    assert result.exit_code == 0 and "--augment" in result.output and "left-right flip" in result.output
