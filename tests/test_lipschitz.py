"""Lipschitz estimators (docs/maths.md §6): lower bounds that reach known norms, stay in their ball, and
train (differentiable penalty) without touching parameters' gradients during the ascent."""

import math

import pytest
import torch

from robustkit.analysis.lipschitz import (
    jacobian_spectral_norm,
    jacobian_spectral_radius,
    local_lipschitz,
    pair_ratio,
    penalty,
    slow_direction,
)

N = 24  # complex unknowns per sample: the real-equivalent operator is 48 × 48


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _complex(shape, seed: int, dtype=torch.float64) -> torch.Tensor:
    g = _gen(seed)
    return torch.complex(torch.randn(shape, generator=g, dtype=dtype), torch.randn(shape, generator=g, dtype=dtype))


def _real_form(m: torch.Tensor) -> torch.Tensor:
    """Complex ``(n, n)`` matrix → the real ``(2n, 2n)`` matrix acting on ``(Re x, Im x)``."""
    return torch.cat([torch.cat([m.real, -m.imag], 1), torch.cat([m.imag, m.real], 1)], 0)


def _matmul(m: torch.Tensor):
    return lambda x: x @ m.T


@pytest.fixture(scope="module")
def linear():
    """A complex matrix with a known real-equivalent norm, and a batch of points."""
    m = _complex((N, N), seed=1) / math.sqrt(2 * N)
    norm = torch.linalg.matrix_norm(_real_form(m), ord=2).item()
    x = _complex((3, N), seed=2)
    return m, norm, x


def test_local_lipschitz_reaches_but_never_exceeds_a_linear_norm(linear):
    m, norm, x = linear
    res = local_lipschitz(_matmul(m), x, 0.3, generator=_gen(0))
    assert res.estimate.shape == (3,) and res.trace.shape == (20, 3) and res.last_rel_change.shape == (3,)
    assert res.restarts == 2 and res.steps == 20
    assert (res.estimate >= 0.95 * norm).all(), res.estimate / norm
    assert (res.estimate <= norm + 1e-6).all()
    assert (res.trace <= norm + 1e-6).all()
    assert (res.trace[1:] >= res.trace[:-1]).all()  # backtracking: the ratio never decreases
    assert torch.allclose(res.trace[-1], res.estimate)


def test_local_lipschitz_on_real_tensors():
    g = _gen(3)
    w = torch.randn(16, 16, generator=g, dtype=torch.float64) / 4
    norm = torch.linalg.matrix_norm(w, ord=2).item()
    x = torch.randn(2, 16, generator=g, dtype=torch.float64)
    res = local_lipschitz(_matmul(w), x, 0.3, generator=g)
    assert (res.estimate >= 0.95 * norm).all() and (res.estimate <= norm + 1e-6).all()


def test_jacobian_spectral_norm_matches_a_linear_norm(linear):
    m, norm, x = linear
    res = jacobian_spectral_norm(_matmul(m), x, iters=200, tol=1e-7, generator=_gen(0))
    assert res.converged.all() and res.iterations < 200
    assert torch.allclose(res.estimate, torch.full((3,), norm, dtype=res.estimate.dtype), rtol=1e-3)
    assert (res.trace <= norm + 1e-6).all()


def test_jacobian_spectral_radius_of_a_symmetric_map():
    g = _gen(4)
    q, _ = torch.linalg.qr(torch.randn(12, 12, generator=g, dtype=torch.float64))
    eig = torch.tensor([-0.9] + [0.5] * 11, dtype=torch.float64)
    w = q @ torch.diag(eig) @ q.T
    res = jacobian_spectral_radius(_matmul(w), torch.randn(2, 12, generator=g, dtype=torch.float64), iters=100, tol=1e-8)
    assert res.converged.all()
    assert torch.allclose(res.estimate, torch.full((2,), 0.9, dtype=torch.float64), rtol=1e-6)


def _tanh_c(z: torch.Tensor) -> torch.Tensor:
    return torch.complex(torch.tanh(z.real), torch.tanh(z.imag))


def test_nonlinear_map_stays_below_its_upper_bound(linear):
    m, norm, x = linear
    # H(x) = 0.5 x + 0.3 tanh(M x) (tanh on real and imaginary parts, slope ≤ 1): L ≤ 0.5 + 0.3 ‖M‖.
    H = lambda z: 0.5 * z + 0.3 * _tanh_c(z @ m.T)  # noqa: E731
    bound = 0.5 + 0.3 * norm
    res = local_lipschitz(H, x, 0.5, generator=_gen(0))
    # one sample climbs 0.7826 → 0.7853 between iterations 100 and 391: the stopping rule waits
    jac = jacobian_spectral_norm(H, x, iters=1000, generator=_gen(0))
    assert (res.estimate <= bound + 1e-6).all() and (res.estimate > 0.5).all()
    assert (jac.estimate <= bound + 1e-6).all() and jac.converged.all()


def test_the_ascent_never_leaves_the_ball(linear):
    m, _, x = linear
    norms: list[torch.Tensor] = []

    def record(restart, step, u, v, ratio):
        norms.append(torch.linalg.vector_norm(u, dim=1))
        norms.append(torch.linalg.vector_norm(v, dim=1))

    H = lambda z: 0.5 * z + 0.3 * _tanh_c(3 * z @ m.T)  # noqa: E731
    res = local_lipschitz(H, x, 0.3, steps=10, restarts=2, step_size=2.0, generator=_gen(0), callback=record)
    assert len(norms) == 2 * 10 * 2
    assert max(n.max().item() for n in norms) <= 1 + 1e-6
    assert (torch.linalg.vector_norm(res.u, dim=1) <= 1 + 1e-6).all()
    assert (res.separation <= 2 * 0.3 + 1e-6).all()


def test_support_mask_is_respected(linear):
    m, _, x = linear
    support = torch.zeros(N)
    support[: N // 2] = 1
    outside: list[float] = []
    res = local_lipschitz(
        _matmul(m), x, 0.3, steps=5, support=support, generator=_gen(0),
        callback=lambda r, k, u, v, ratio: outside.append(float(u[:, N // 2 :].abs().max() + v[:, N // 2 :].abs().max())),
    )
    assert max(outside) == 0.0
    assert res.u[:, N // 2 :].abs().max() == 0 and res.v[:, N // 2 :].abs().max() == 0
    # restricted to the support, the bound is the norm of M's first columns
    sub = torch.linalg.matrix_norm(_real_form(m[:, : N // 2]), ord=2).item()
    assert (res.estimate <= sub + 1e-6).all()


def test_slow_mode_seed_finds_a_localised_slow_direction():
    # H(x) = 0.5 x + 0.49 e c·tanh(⟨e, x − x*⟩/c), c = 0.02‖x*‖: gain 0.99 along e only near x*,
    # 0.5 elsewhere — a slow mode that pairs spread over the 0.3‖x*‖ ball barely see.
    b = 2
    g = _gen(5)
    e = torch.complex(torch.randn(N, generator=g, dtype=torch.float64), torch.randn(N, generator=g, dtype=torch.float64))
    e = e / torch.linalg.vector_norm(e)
    x_star = _complex((b, N), seed=6)
    c = 0.02 * torch.linalg.vector_norm(x_star, dim=1, keepdim=True)

    def H(z: torch.Tensor) -> torch.Tensor:
        t = ((z - x_star) * e.conj()).sum(-1, keepdim=True).real  # real inner product ⟨e, z − x*⟩
        return 0.5 * z + 0.49 * e * c * torch.tanh(t / c)

    f = lambda z: H(z) + (x_star - H(x_star))  # noqa: E731 - fixed-point map with fixed point x*
    x = x_star + 1e-2 * _complex((b, N), seed=7)
    for _ in range(20):  # an approximate fixed point as a solver leaves it: the error is slow
        x = f(x)
    direction = slow_direction(f, x)
    seeded = local_lipschitz(H, x, 0.3, steps=10, restarts=1, init=direction)
    assert (seeded.trace[0] >= 0.98).all() and (seeded.estimate <= 0.99 + 1e-6).all(), seeded.trace[0]
    by_name = local_lipschitz(H, x, 0.3, steps=10, restarts=1, init="slow-mode", slow_mode_map=f)
    assert torch.allclose(by_name.estimate, seeded.estimate)
    random = local_lipschitz(H, x, 0.3, steps=10, restarts=2, generator=_gen(0))
    assert (random.estimate < 0.98).all(), random.estimate


def test_differentiable_estimate_gives_theta_gradients_without_touching_grad(linear):
    m, _, x = linear
    p = torch.nn.Parameter(torch.tensor(0.7, dtype=torch.float64))
    net = torch.nn.Linear(2 * N, 2 * N, dtype=torch.float64)

    def H(z: torch.Tensor) -> torch.Tensor:
        r = net(torch.cat([z.real, z.imag], -1))
        return p * (z @ m.T) + 0.1 * torch.complex(r[..., :N], r[..., N:])

    res = local_lipschitz(H, x, 0.3, steps=5, differentiable=True, generator=_gen(0))
    assert p.grad is None and all(q.grad is None for q in net.parameters())
    assert res.estimate.requires_grad and not res.trace.requires_grad and not res.u.requires_grad
    (gp,) = torch.autograd.grad(res.estimate.sum(), p)
    assert torch.isfinite(gp) and gp > 0

    plain = local_lipschitz(H, x, 0.3, steps=5, generator=_gen(0))
    assert not plain.estimate.requires_grad and torch.allclose(plain.estimate, res.estimate.detach())
    # the training penalty recomputes only the winning pair: the same value and θ-gradient
    again = pair_ratio(H, x, 0.3, plain.u, plain.v)
    torch.testing.assert_close(again, res.estimate, rtol=1e-12, atol=0)
    (gp2,) = torch.autograd.grad(again.sum(), p)
    torch.testing.assert_close(gp2, gp, rtol=1e-12, atol=0)


def test_estimators_work_under_no_grad(linear):
    m, norm, x = linear
    with torch.no_grad():
        res = local_lipschitz(_matmul(m), x, 0.3, steps=5, generator=_gen(0))
        jac = jacobian_spectral_norm(_matmul(m), x, iters=5)
    assert (res.estimate > 0).all() and (jac.estimate <= norm + 1e-6).all()


def test_penalty_kinds():
    L = torch.tensor([0.5, 0.97, 0.98, 0.99, 1.2])
    q = penalty(L, 0.98, kind="quadratic")
    assert (q[:3] == 0).all() and (q[3:] > 0).all()
    assert torch.allclose(q[3:], torch.tensor([0.01**2, 0.22**2]))
    bar = penalty(L, 0.98, kind="barrier")
    assert torch.isfinite(bar).all()
    assert torch.allclose(bar[0], -torch.log(torch.tensor(0.48)))
    assert (bar[1:] > bar[:-1]).all()  # increasing, finite through and above T
    Lg = torch.tensor([0.9795, 0.9805], requires_grad=True)  # either side of the junction at T − e
    (gr,) = torch.autograd.grad(penalty(Lg, 0.98, kind="barrier").sum(), Lg)
    assert torch.allclose(gr, torch.full((2,), 1e3), rtol=1e-2)


def test_bad_arguments_raise(linear):
    m, _, x = linear
    H = _matmul(m)
    with pytest.raises(ValueError):
        local_lipschitz(H, x, 0.0)
    with pytest.raises(ValueError):
        local_lipschitz(H, x, 0.3, steps=0)
    with pytest.raises(ValueError):
        local_lipschitz(H, x, 0.3, init="slow-mode")
    with pytest.raises(ValueError):
        local_lipschitz(H, x, 0.3, init="sphere")
    with pytest.raises(ValueError):
        local_lipschitz(H, x, 0.3, init=x, pair_distance=0.7)
    with pytest.raises(ValueError):
        local_lipschitz(H, torch.zeros_like(x), 0.3)
    with pytest.raises(ValueError):
        penalty(torch.tensor([0.5]), kind="cubic")
    with pytest.raises(ValueError):
        jacobian_spectral_norm(H, x, iters=0)
