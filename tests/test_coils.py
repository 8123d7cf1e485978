"""Simulated ring-coil maps: shape, finiteness, normalisation, and the SENSE bound ‖A‖ ≤ 1."""

import numpy as np
import pytest
import torch

from robustkit.errors import RobustkitError
from robustkit.physics.coils import birdcage_maps, normalise_maps
from robustkit.physics.sense import SenseOperator


@pytest.mark.parametrize("loop_radius", [0.2, None])
@pytest.mark.parametrize("shape", [(12, 120, 104), (5, 33, 48), (2, 16, 16)])
def test_maps_shape_finite_and_distinct(shape, loop_radius):
    maps = birdcage_maps(shape, radius=1.0, loop_radius=loop_radius)
    assert maps.shape == shape and maps.dtype == np.complex128
    assert np.isfinite(maps).all() and (np.abs(maps) > 0).all()
    # every coil sees the image differently: no two maps are proportional
    flat = maps.reshape(shape[0], -1)
    flat = flat / np.linalg.norm(flat, axis=1, keepdims=True)
    overlap = np.abs(flat.conj() @ flat.T) - np.eye(shape[0])
    assert overlap.max() < 0.99


def test_coil_is_strongest_near_its_position():
    maps = np.abs(birdcage_maps((4, 64, 64), radius=1.0))
    # coil 0 at θ = 0 sits at x = +1 (right edge, last column); coil 2 at x = −1
    assert maps[0, 32, -1] > 10 * maps[0, 32, 0]
    assert maps[2, 32, 0] > 10 * maps[2, 32, -1]


def test_normalise_maps_on_support():
    maps = birdcage_maps((8, 40, 30))
    support = np.zeros((40, 30), bool)
    support[10:30, 5:25] = True
    out = normalise_maps(maps, support)
    ss = (np.abs(out) ** 2).sum(0)
    np.testing.assert_allclose(ss[support], 1.0, atol=1e-12)
    assert (ss[~support] == 0).all()
    np.testing.assert_allclose((np.abs(normalise_maps(maps)) ** 2).sum(0), 1.0, atol=1e-12)


def test_normalised_maps_keep_sense_operator_norm_at_most_one():
    maps = normalise_maps(birdcage_maps((6, 24, 20)), np.pad(np.ones((16, 12), bool), 4))
    s = torch.from_numpy(maps)[None].to(torch.complex128)
    op = SenseOperator(s, torch.ones(24, 20))
    x = torch.randn(1, 24, 20, dtype=torch.complex128, generator=torch.Generator().manual_seed(0))
    for _ in range(30):  # power iteration on AᴴA
        x = op.normal(x)
        x = x / x.norm()
    assert float(op.normal(x).norm()) <= 1 + 1e-9


def test_bad_geometry_is_a_user_error():
    with pytest.raises(RobustkitError):
        birdcage_maps((4, 16, 16), radius=0)
    with pytest.raises(RobustkitError):
        birdcage_maps((0, 16, 16))
