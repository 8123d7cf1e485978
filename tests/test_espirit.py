"""ESPIRiT: on smooth simulated maps the estimated maps span the same coil profile at every pixel.

A map set is defined up to a phase per pixel, so the comparison is through the projection
``S Sᴴ`` of the coil images ``c = S x`` (``S_est S_estᴴ c = c``) and through magnitudes of the
SENSE adjoint ``Σ_c conj(S_c) Fᴴ k_c``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robustkit.errors import RobustkitError
from robustkit.physics.espirit import calibration_matrix, calibration_shape, espirit
from robustkit.physics.sense import SenseOperator
from tests.test_loaders import fft2c, line_mask, magnitude_error, phantom


def projection_error(maps: np.ndarray, coil_images: np.ndarray, support: np.ndarray) -> float:
    """``‖S Sᴴ c − c‖ / ‖c‖`` on the support."""
    projected = maps * (maps.conj() * coil_images).sum(0)
    return float(np.linalg.norm((projected - coil_images)[:, support]) / np.linalg.norm(coil_images[:, support]))


@pytest.mark.parametrize("shape", [(64, 64, 8), (48, 40, 4), (33, 27, 6)])
def test_maps_reproduce_coil_images(shape):
    h, w, c = shape
    x, maps, support = phantom(h, w, c, seed=3)
    coil = maps * x
    result = espirit(fft2c(coil), calib=24 if h >= 48 else 20, kernel=6 if h >= 48 else 5)
    est = result.maps.astype(np.complex128)
    assert est.shape == (c, h, w) and est.dtype == np.complex128
    assert projection_error(est, coil, support) < 1e-2
    # eigenvalue ≈ 1 on the object; maps unit-norm there
    assert result.eigenvalues[support].min() > 0.97
    np.testing.assert_allclose((np.abs(est) ** 2).sum(0)[support], 1, atol=1e-5)
    ss = (np.abs(est) ** 2).sum(0)
    assert set(np.round(ss[ss > 0], 4)) == {1.0}  # Σ|S|² is 1 where kept, 0 where cropped


def test_sense_adjoint_with_estimated_maps_matches_the_image():
    x, maps, support = phantom(64, 64, 8, seed=5)
    k = fft2c(maps * x)
    est = espirit(k).maps
    op = SenseOperator(torch.from_numpy(est)[None], torch.ones(64, 64))
    adjoint = op.adjoint(torch.from_numpy(k.astype(np.complex64))[None])[0].numpy()
    assert magnitude_error(adjoint, x, support) < 0.02
    # the virtual-coil phase alignment leaves a smooth phase: neighbouring pixels differ little
    ratio = adjoint[support] / x[support]
    phase = np.angle(ratio / ratio.mean())
    assert np.abs(phase).max() < 1.0


def test_undersampled_calibration_uses_the_sampled_centre():
    x, maps, support = phantom(64, 64, 8, seed=7)
    lines = line_mask(64, 64, centre=14, every=4)
    mask = np.broadcast_to(lines, (64, 64))
    result = espirit(fft2c(maps * x) * mask, mask=mask)
    left, right = 32, 32
    while lines[left - 1]:
        left -= 1
    while lines[right + 1]:
        right += 1
    assert result.calib_shape == (24, min(24, right - left + 1))  # the contiguous sampled centre lines
    assert projection_error(result.maps.astype(complex), maps * x, support) < 2e-2


def test_calibration_matrix_is_the_hankel_matrix():
    rng = np.random.default_rng(0)
    cal = rng.standard_normal((2, 5, 4)) + 1j * rng.standard_normal((2, 5, 4))
    mat = calibration_matrix(cal, 3)
    assert mat.shape == (3 * 2, 2 * 9)
    # row of patch (1, 1): coil-major, then the 3 x 3 window
    np.testing.assert_array_equal(mat[1 * 2 + 1], cal[:, 1:4, 1:4].reshape(-1))


def test_calibration_shape_grows_inside_the_mask():
    assert calibration_shape((64, 48), 24, 6) == (20, 12, 24, 24)
    mask = np.zeros((64, 48))
    mask[:, 20:30] = 1
    y0, x0, h, w = calibration_shape((64, 48), 24, 6, mask)
    assert (h, w) == (24, 10) and x0 == 20
    with pytest.raises(RobustkitError, match="too small"):
        calibration_shape((64, 48), 24, 12, mask)
    with pytest.raises(RobustkitError, match="too small"):
        calibration_shape((64, 48), 24, 6, np.zeros((64, 48)))


def test_bad_input_is_a_user_error():
    x, maps, _ = phantom(32, 24, 4)
    k = fft2c(maps * x)
    with pytest.raises(RobustkitError, match="coils, H, W"):
        espirit(k[0])
    bad = k.copy()
    bad[0, 3, 3] = np.nan
    with pytest.raises(RobustkitError, match="NaN"):
        espirit(bad)
    with pytest.raises(RobustkitError, match="crop"):
        espirit(k, crop=1.5)
