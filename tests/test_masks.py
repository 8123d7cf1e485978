"""Masks: acceleration, fully sampled centre, determinism, and no use of the global RNG."""

import numpy as np
import pytest
import torch

from robustkit.errors import RobustkitError
from robustkit.physics.masks import MaskSpec, cartesian_mask


@pytest.mark.parametrize("kind", ["random", "equispaced", "variable-density-2d"])
@pytest.mark.parametrize("accel", [4, 6])
@pytest.mark.parametrize("shape", [(120, 104), (33, 47)])
def test_acceleration_and_centre(kind, accel, shape):
    mask = cartesian_mask(shape, accel, np.random.default_rng(0), kind=kind)
    assert mask.shape == shape and mask.dtype == np.float32 and set(np.unique(mask)) <= {0.0, 1.0}
    achieved = mask.size / mask.sum()
    assert achieved == pytest.approx(accel, rel=0.15)
    h, w = shape
    assert mask[h // 2, w // 2] == 1  # the centre of k-space is always sampled
    if kind != "variable-density-2d":
        assert (mask == mask[:1]).all()  # whole phase-encode lines


def test_fastmri_centre_fraction_at_4x():
    mask = cartesian_mask((64, 100), 4, np.random.default_rng(0))
    w = 100
    centre = mask[0, (w - 8 + 1) // 2 : (w - 8 + 1) // 2 + 8]
    assert centre.all()  # 8 % of 100 lines, fully sampled


def test_seeded_and_global_rng_untouched():
    np.random.seed(5)
    torch.manual_seed(5)
    np_state, torch_state = np.random.get_state()[1].copy(), torch.get_rng_state().clone()
    a = MaskSpec(accel=4).draw((32, 40), seed=3)
    b = MaskSpec(accel=4).draw((32, 40), seed=3)
    c = MaskSpec(accel=4).draw((32, 40), seed=4)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.array_equal(np.random.get_state()[1], np_state)
    assert torch.equal(torch.get_rng_state(), torch_state)


@pytest.mark.parametrize("accel", [0, -4, float("nan")])
def test_bad_acceleration(accel):
    with pytest.raises(RobustkitError, match="acceleration"):
        cartesian_mask((16, 16), accel, np.random.default_rng(0))
