"""On a CUDA machine: robustkit computes in full fp32 there, draws the CPU's random numbers, and
reaches the CPU's fixed points. Skipped without a GPU (CI has none); run them with
``python -m pytest tests/test_gpu.py`` wherever one is lent (docs/gpu.md)."""

import pytest
import torch

from robustkit import rng

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_resolve_device_gives_full_fp32_convolutions():
    from robustkit.device import resolve_device

    device = resolve_device("cuda")
    conv = torch.nn.Conv2d(8, 8, 3, padding=1).to(device)
    x = torch.randn(1, 8, 64, 64, generator=rng.generator(0)).to(device)
    with torch.no_grad():
        exact = torch.nn.functional.conv2d(x.double(), conv.weight.double(), conv.bias.double(), padding=1)
        got = conv(x).double()
    # TF32 rounds to ≈ 1e-3; full fp32 stays near 1e-6
    assert ((got - exact).norm() / exact.norm()).item() < 1e-5


def test_one_seed_gives_the_same_draws_on_the_cpu_and_the_gpu():
    for dtype in (torch.float32, torch.complex64):
        on_cpu = rng.randn((3, 5), generator=rng.generator(4), dtype=dtype, device="cpu")
        on_gpu = rng.randn((3, 5), generator=rng.generator(4), dtype=dtype, device="cuda")
        assert on_gpu.device.type == "cuda" and torch.equal(on_gpu.cpu(), on_cpu)


def test_the_gaussian_attack_draws_the_same_noise_on_both_devices():
    from robustkit.attacks.gaussian import KSpaceGaussian

    k = torch.randn(1, 2, 8, 8, dtype=torch.complex64, generator=rng.generator(1))
    mask = torch.ones(1, 1, 8, 8)
    gammas = []
    for device in ("cpu", "cuda"):
        attack = KSpaceGaussian(torch.nn.Identity(), mask.to(device), 0.05, seed=3)
        attack(k.to(device))
        gammas.append(attack.last_gamma.cpu())
    assert torch.allclose(gammas[0], gammas[1], rtol=1e-6, atol=1e-9)


def test_the_shipped_mnmmol_reaches_the_cpus_fixed_point_on_the_gpu():
    from robustkit.data.evaluation import eval_dataset
    from robustkit.device import resolve_device
    from robustkit.evaluate import evaluate
    from robustkit.models.adapter import as_model

    dataset, _ = eval_dataset("builtin", "test", 4.0, samples=1)
    rows = {}
    for name in ("cpu", "cuda"):
        device = resolve_device(name)
        rows[name] = evaluate(as_model("mnmmol-4x").to(device), dataset, device=device)[0]
    assert rows["cpu"]["converged"] and rows["cuda"]["converged"]
    # both stop at residual 1e-5, ≈ 2e-3 of ‖x*‖ from it (docs/convergence.md): PSNR within ≈ 0.02 dB
    assert abs(rows["cpu"]["psnr"] - rows["cuda"]["psnr"]) < 0.02
