"""The largest lower bound and the observed contraction rate against known answers: a linear map
with a known spectral norm, a slow mode hidden from random pairs, a slowly rising power iteration."""

import math

import pytest
import torch

from robustkit.analysis.contraction import observed_contraction_rate, rate_exceeds
from robustkit.analysis.lipschitz import jacobian_spectral_norm, plateaued
from robustkit.analysis.lower_bound import ESTIMATORS, lipschitz_lower_bound

N = 24


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _complex(shape, seed: int) -> torch.Tensor:
    g = _gen(seed)
    return torch.complex(torch.randn(shape, generator=g, dtype=torch.float64), torch.randn(shape, generator=g, dtype=torch.float64))


def _real_form(m: torch.Tensor) -> torch.Tensor:
    return torch.cat([torch.cat([m.real, -m.imag], 1), torch.cat([m.imag, m.real], 1)], 0)


def test_linear_map_power_iteration_hits_the_norm_and_no_pair_exceeds_it():
    m = _complex((N, N), seed=1) / math.sqrt(2 * N)
    norm = torch.linalg.matrix_norm(_real_form(m), ord=2).item()
    x = _complex((3, N), seed=2)
    H = lambda z: z @ m.T  # noqa: E731
    f = lambda z: H(z) + 1.0  # noqa: E731
    res = lipschitz_lower_bound(H, x, 0.3, f=f, power_iters=500, power_tol=1e-10, generator=_gen(0))
    assert res.power.converged.all()
    torch.testing.assert_close(res.power.estimate, torch.full((3,), norm, dtype=torch.float64), rtol=1e-5, atol=0)
    for name, value in res.by_estimator().items():
        assert (value <= norm * (1 + 1e-9)).all(), name
    # the pair seeded on the top singular vector reaches the norm too (the map is linear)
    torch.testing.assert_close(res.top.estimate, torch.full((3,), norm, dtype=torch.float64), rtol=1e-4, atol=0)
    assert torch.equal(res.estimate, torch.stack(list(res.by_estimator().values())).max(0).values)
    assert set(res.source) <= set(ESTIMATORS)


def test_a_slow_mode_hidden_from_random_pairs_is_found_by_the_seeded_pairs():
    # H(z) = 0.5 z + 0.49 e c·tanh(⟨e, z − x*⟩/c), c = 0.02‖x*‖: gain 0.99 along e only near x*.
    g = _gen(5)
    e = torch.complex(torch.randn(N, generator=g, dtype=torch.float64), torch.randn(N, generator=g, dtype=torch.float64))
    e = e / torch.linalg.vector_norm(e)
    x_star = _complex((2, N), seed=6)
    c = 0.02 * torch.linalg.vector_norm(x_star, dim=1, keepdim=True)

    def H(z):
        t = ((z - x_star) * e.conj()).sum(-1, keepdim=True).real
        return 0.5 * z + 0.49 * e * c * torch.tanh(t / c)

    f = lambda z: H(z) + (x_star - H(x_star))  # noqa: E731
    x = x_star + 1e-2 * _complex((2, N), seed=7)
    for _ in range(20):
        x = f(x)
    res = lipschitz_lower_bound(H, x, 0.3, f=f, steps=10, power_iters=200, generator=_gen(0))
    assert (res.ball.estimate < 0.98).all(), res.ball.estimate  # random pairs (10 steps) miss it
    assert (res.slow.estimate >= 0.98).all() and (res.top.estimate >= 0.98).all()
    assert (res.estimate >= 0.98).all() and (res.estimate <= 0.99 + 1e-9).all()
    assert all(s != "ball" for s in res.source)


def test_stopping_rule_does_not_fire_on_a_slowly_rising_sequence():
    k = torch.arange(1, 200, dtype=torch.float64)
    rising = (1 - 0.5 / k)[:, None]  # each step adds < 1e-3 after k ≈ 22, yet it climbs to 1
    for end in range(30, 120):
        one_step = (rising[end] - rising[end - 1]) / rising[end]
        assert float(one_step) < 1e-3  # the old single-step rule (tol 1e-3) would stop here
        assert not bool(plateaued(rising[: end + 1], window=5, tol=1e-4)[0])
    flat = torch.ones(10, 1, dtype=torch.float64)
    assert bool(plateaued(flat, window=5, tol=1e-4)[0])


@pytest.mark.parametrize("method", ["power", "lanczos"])
def test_power_iteration_on_a_dense_spectrum_never_claims_convergence_below_the_norm(method):
    # Diagonal map with 400 singular values packed below 1: the estimate climbs slowly.
    sv = torch.linspace(0.5, 1.0, 400, dtype=torch.float64)
    H = lambda z: z * sv  # noqa: E731
    x = torch.ones(2, 400, dtype=torch.float64)
    for iters in (30, 100, 300):
        res = jacobian_spectral_norm(H, x, iters=iters, generator=_gen(1), method=method)
        assert (res.estimate <= 1.0 + 1e-12).all()
        # "converged" never stands next to an estimate 0.5 % or more below the norm
        assert not bool((res.converged & (res.estimate < 0.995)).any()), (res.estimate, res.converged)
    short = jacobian_spectral_norm(H, x, iters=30, generator=_gen(1), method=method)
    assert not short.converged.any() and short.iterations == 30


def test_observed_rate_of_a_linear_iteration_is_its_spectral_radius():
    q = torch.tensor([0.97, 0.5, -0.3, 0.1], dtype=torch.float64)
    c = torch.tensor([[1.0, -2.0, 0.5, 3.0], [2.0, 1.0, 1.0, 1.0]], dtype=torch.float64)
    f = lambda z: q * z + c  # noqa: E731
    x_star = c / (1 - q)
    res = observed_contraction_rate(f, x_star, iters=80, tail=20, generator=_gen(0))
    torch.testing.assert_close(res.rate, torch.full((2,), 0.97, dtype=torch.float64), rtol=2e-3, atol=0)
    assert (res.ratios_used == 20).all()
    assert rate_exceeds(res.rate, torch.tensor([0.9, 0.97])).tolist() == [True, False]


def test_power_estimate_is_valid_on_a_relu_kink():
    """H(x) = x − ½(ReLU(x) − ReLU(−x)) = ½x exactly (L = ½), but at pixels that are exactly 0 autograd
    takes ReLU'(0) = 0 and would report ‖J‖ = 1 there. The power iteration linearises off the kink."""
    import torch

    from robustkit.analysis.lower_bound import lipschitz_lower_bound

    def H(v):
        r = torch.view_as_real(v)
        return v - 0.5 * torch.view_as_complex((torch.relu(r) - torch.relu(-r)).contiguous())

    x = torch.randn(2, 8, 8, dtype=torch.complex64, generator=torch.Generator().manual_seed(0))
    x[:, :4] = 0  # an empty background of exact zeros
    bound = lipschitz_lower_bound(H, x, 0.3, steps=5, power_iters=30)
    assert torch.all(bound.power.estimate <= 0.5 + 1e-4) and torch.all(bound.estimate <= 0.5 + 1e-4)
    assert torch.all(bound.estimate >= 0.5 - 1e-3)


def test_a_map_with_no_finite_estimate_gets_an_unknown_bound_that_never_passes():
    x = _complex((2, N), seed=3)
    H = lambda z: z * float("nan")  # noqa: E731
    res = lipschitz_lower_bound(H, x, 0.3, f=lambda z: H(z) + 1.0, steps=2, restarts=1, seeded_steps=2, slow_iters=2,
                                power_iters=3, generator=_gen(0))
    assert torch.isnan(res.estimate).all()  # not −1, which would pass L ≤ 1 − m
    assert not (res.estimate <= 0.98).any()
