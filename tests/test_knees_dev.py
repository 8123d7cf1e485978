"""scripts/knees_dev.py on a synthetic magnitude file (the real knees are never needed by a test):
splits by image, shifted training crops, and validation/test slices equal to a file written
without those options."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "knees_dev.py"


@pytest.fixture(scope="module")
def knees_dev():
    spec = importlib.util.spec_from_file_location("knees_dev", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def npz(tmp_path):
    """5 magnitude images (40, 32): an ellipse with a random texture."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:40, :32]
    disc = ((yy - 20) / 17.0) ** 2 + ((xx - 16) / 13.0) ** 2 < 1
    rss = np.stack([disc * (0.5 + rng.random((40, 32))) for _ in range(5)]).astype(np.float32)
    path = tmp_path / "rss.npz"
    np.savez(path, rss=rss)
    return path


def test_splits_and_training_crops(knees_dev, npz, tmp_path):
    from robustkit.data.prepared import read_samples, split_counts

    out = knees_dev.main([str(npz), "--out", str(tmp_path / "t.h5"), "--crop", "24x20", "--coils", "4",
                          "--splits", "3,1,1", "--train-crops", "5"])
    assert split_counts(out) == {"train": 15, "val": 1, "test": 1}
    train = read_samples(out, "train")
    assert [(s.meta["slice"], s.meta.get("crop_index", 0)) for s in train[:5]] == [(0, t) for t in range(5)]
    assert all(s.shape == (24, 20) for s in train)
    # the four shifted crops hold other pixels than the centre crop (magnitudes, whatever the phase)
    magnitude = [np.abs(s.target) / np.abs(s.target).max() for s in train[:5]]
    assert all(np.abs(magnitude[t] - magnitude[0]).max() > 0.1 for t in range(1, 5))

    plain = read_samples(knees_dev.main([str(npz), "--out", str(tmp_path / "p.h5"), "--crop", "24x20", "--coils", "4"]))
    for name, index in (("val", 3), ("test", 4)):
        (held_out,) = read_samples(out, name)
        assert held_out.meta["slice"] == index
        np.testing.assert_array_equal(held_out.kspace, plain[index].kspace)


@pytest.mark.parametrize("options", [["--splits", "3,1"], ["--splits", "3,1,2"], ["--crop", "24x20", "--train-crops", "5"]])
def test_bad_options_write_nothing(knees_dev, npz, tmp_path, options):
    with pytest.raises(SystemExit) as exc:
        knees_dev.main([str(npz), "--out", str(tmp_path / "x.h5"), *options])
    assert exc.value.code == 2
    assert not (tmp_path / "x.h5").exists()
