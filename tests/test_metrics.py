import numpy as np
import pytest
import torch

from robustkit.metrics import nmse, psnr, ssim

skimage_metrics = pytest.importorskip("skimage.metrics")


def pair(seed, shape=(3, 20, 17)):
    g = np.random.default_rng(seed)
    t = g.random(shape) + 1j * g.random(shape)
    p = t + 0.1 * (g.standard_normal(shape) + 1j * g.standard_normal(shape))
    return torch.from_numpy(p), torch.from_numpy(t)


@pytest.mark.parametrize("seed", [0, 1])
def test_psnr_and_ssim_match_skimage_with_fastmri_settings(seed):
    p, t = pair(seed)
    for b in range(p.shape[0]):
        pm, tm = p[b].abs().numpy(), t[b].abs().numpy()
        ref_psnr = skimage_metrics.peak_signal_noise_ratio(tm, pm, data_range=tm.max())
        ref_ssim = skimage_metrics.structural_similarity(tm, pm, data_range=tm.max())
        assert psnr(p, t)[b].item() == pytest.approx(ref_psnr, rel=1e-10)
        assert ssim(p, t)[b].item() == pytest.approx(ref_ssim, rel=1e-8)


def test_known_values():
    t = torch.ones(1, 8, 8)
    p = t.clone()
    p[0, 0, 0] = 0.0  # one pixel off by 1: MSE = 1/64, peak 1
    assert psnr(p, t).item() == pytest.approx(10 * np.log10(64))
    assert nmse(p, t).item() == pytest.approx(1 / 64)
    assert ssim(t, t).item() == pytest.approx(1.0)
    assert nmse(t, t).item() == 0.0
