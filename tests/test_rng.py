"""Device-independent draws: a CPU stream moved to the device, the same numbers for one seed."""

import torch

from robustkit import rng


def test_generator_is_a_seeded_cpu_stream():
    g = rng.generator(7)
    assert g.device.type == "cpu"
    assert torch.equal(torch.randn(5, generator=g), torch.randn(5, generator=torch.Generator().manual_seed(7)))


def test_randn_and_rand_on_the_cpu_equal_torch_with_the_same_seed():
    # on the CPU nothing changes: robustkit's draws are PyTorch's for the same generator
    expect = torch.randn((2, 3), generator=torch.Generator().manual_seed(1), dtype=torch.complex64)
    assert torch.equal(rng.randn((2, 3), generator=rng.generator(1), dtype=torch.complex64, device="cpu"), expect)
    expect = torch.rand((4,), generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    assert torch.equal(rng.rand((4,), generator=rng.generator(2), dtype=torch.float64, device="cpu"), expect)


def test_draws_for_another_device_come_from_the_cpu_stream_and_land_there():
    # 'meta' stands in for a GPU here: a CPU generator used to fail for a tensor on another device
    # (torch.randn(..., device=d, generator=cpu_gen) raises); now it draws on the CPU and moves
    g = rng.generator(3)
    out = rng.randn((2, 2), generator=g, dtype=torch.float32, device="meta")
    assert out.device.type == "meta" and out.shape == (2, 2)
    # the stream advanced exactly as a CPU draw of that size would
    reference = torch.Generator().manual_seed(3)
    torch.randn((2, 2), generator=reference)
    assert torch.equal(torch.randn(3, generator=g), torch.randn(3, generator=reference))


def test_without_a_generator_the_global_rng_is_used_on_the_device():
    torch.manual_seed(11)
    a = rng.randn((3,), generator=None, dtype=torch.float32, device="cpu")
    torch.manual_seed(11)
    assert torch.equal(a, torch.randn(3))
