"""‖J_H(x)‖₂ by the Lanczos process on JᵀJ (docs/maths.md §6): a lower bound at every step that never
decreases, at least the power iteration's value after as many steps, the true norm in far fewer steps
on a clustered spectrum, per-sample answers in a batch, and the power iteration's answer on a CNN."""

import math

import pytest
import torch

from robustkit.analysis.lipschitz import jacobian_spectral_norm
from robustkit.models import build_model
from tests.test_models import tiny_problem


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _orthogonal(n: int, seed: int, dtype=torch.float64) -> torch.Tensor:
    g = _gen(seed)
    if dtype.is_complex:
        a = torch.complex(torch.randn(n, n, generator=g, dtype=torch.float64), torch.randn(n, n, generator=g, dtype=torch.float64))
    else:
        a = torch.randn(n, n, generator=g, dtype=torch.float64)
    return torch.linalg.qr(a)[0]


def _real_form(m: torch.Tensor) -> torch.Tensor:
    """Complex ``(n, n)`` matrix → the real ``(2n, 2n)`` matrix acting on ``(Re x, Im x)``."""
    return torch.cat([torch.cat([m.real, -m.imag], 1), torch.cat([m.imag, m.real], 1)], 0)


def _clustered(n: int) -> torch.Tensor:
    """Singular values 1.0, 0.995, 0.99, … (ten of them), then a bulk spread over [0.1, 0.9]."""
    top = 1.0 - 0.005 * torch.arange(10, dtype=torch.float64)
    return torch.cat([top, torch.linspace(0.1, 0.9, n - 10, dtype=torch.float64)])


def _first_within(trace: torch.Tensor, norm: float, rtol: float) -> int:
    """1-based first step at which every sample's trace is within ``rtol`` of ``norm`` (``inf``: never)."""
    hit = (trace >= norm * (1 - rtol)).all(dim=1).nonzero()
    return int(hit[0]) + 1 if len(hit) else math.inf


@pytest.mark.parametrize("kind", ["real", "complex"])
def test_lanczos_is_a_monotone_lower_bound_that_reaches_a_known_norm(kind):
    n = 40
    if kind == "real":
        m = _orthogonal(n, 1) @ torch.diag(_clustered(n)) @ _orthogonal(n, 2).T
        x = torch.randn(3, n, generator=_gen(3), dtype=torch.float64)
    else:  # a complex matrix; J is its real-linear form on ℝ^{2n}
        m = torch.complex(torch.randn(n, n, generator=_gen(1), dtype=torch.float64), torch.randn(n, n, generator=_gen(2), dtype=torch.float64)) / math.sqrt(2 * n)
        x = torch.complex(torch.randn(3, n, generator=_gen(3), dtype=torch.float64), torch.randn(3, n, generator=_gen(4), dtype=torch.float64))
    norm = torch.linalg.svdvals(_real_form(m) if kind == "complex" else m)[0].item()
    H = lambda z: z @ m.T  # noqa: E731
    res = jacobian_spectral_norm(H, x, iters=60, tol=1e-12, rayleigh_tol=1e-12, generator=_gen(0))
    power = jacobian_spectral_norm(H, x, iters=60, tol=1e-12, rayleigh_tol=1e-12, generator=_gen(0), method="power")
    assert res.method == "lanczos" and power.method == "power"
    assert (res.trace <= norm + 1e-6).all()  # a lower bound at every step
    assert (res.trace[1:] >= res.trace[:-1] - 1e-12).all()  # Cauchy interlacing: never decreases
    # the Krylov space after k steps contains the k-th power iterate: Lanczos is never below it
    k = min(res.trace.shape[0], power.trace.shape[0])
    assert (res.trace[:k] >= power.trace[:k] - 1e-10).all()
    torch.testing.assert_close(res.estimate, torch.full((3,), norm, dtype=torch.float64), rtol=1e-5, atol=0)
    assert res.converged.all() and res.iterations < 60
    # the reported estimate is the witnessed ‖J v_ritz‖, v_ritz = res.vector (unit): the same number
    v = res.vector
    torch.testing.assert_close(torch.linalg.vector_norm(v.flatten(1), dim=1), torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(torch.linalg.vector_norm(H(v).flatten(1), dim=1), res.estimate)
    torch.testing.assert_close(res.estimate, res.trace[-1], rtol=1e-5, atol=0)


def test_lanczos_needs_far_fewer_steps_than_power_iteration_on_a_clustered_spectrum():
    n = 300
    sv = _clustered(n)
    H = lambda z: z * sv  # noqa: E731  (J = diag(sv), ‖J‖₂ = 1)
    x = torch.ones(2, n, dtype=torch.float64)
    lanczos = jacobian_spectral_norm(H, x, iters=300, tol=1e-12, rayleigh_tol=1e-12, generator=_gen(1))
    power = jacobian_spectral_norm(H, x, iters=3000, tol=1e-12, rayleigh_tol=1e-12, generator=_gen(1), method="power")
    steps_lanczos, steps_power = _first_within(lanczos.trace, 1.0, 1e-5), _first_within(power.trace, 1.0, 1e-5)
    assert steps_lanczos < math.inf and steps_power < math.inf, (steps_lanczos, steps_power)
    assert steps_lanczos < steps_power / 3, (steps_lanczos, steps_power)
    assert (lanczos.trace <= 1.0 + 1e-12).all() and (lanczos.estimate <= 1.0 + 1e-12).all()


def test_a_batch_of_two_maps_gets_per_sample_answers_and_stops_each_on_its_own():
    n = 50
    sv = torch.stack([_clustered(n), 0.7 * torch.linspace(0.1, 1.0, n, dtype=torch.float64)])  # (2, n)
    H = lambda z: z * sv  # noqa: E731  (sample b: J_b = diag(sv[b]))
    x = torch.ones(2, n, dtype=torch.float64)
    res = jacobian_spectral_norm(H, x, iters=50, tol=1e-10, rayleigh_tol=1e-10, generator=_gen(0))
    torch.testing.assert_close(res.estimate, torch.tensor([1.0, 0.7], dtype=torch.float64), rtol=1e-8, atol=0)
    assert res.converged.all()
    # the well-separated second map is done long before the clustered first: its trace is frozen
    alone = jacobian_spectral_norm(lambda z: z * sv[1], x[1:], iters=50, tol=1e-10, rayleigh_tol=1e-10, generator=_gen(5))
    assert alone.iterations < res.iterations
    assert (res.trace[alone.iterations + 5 :, 1] == res.trace[-1, 1]).all()


def test_an_invariant_krylov_space_stops_the_process_with_the_exact_value():
    # rank-2 map on ℝ^6: K₃ already contains everything JᵀJ can reach from v (a breakdown, β = 0)
    u = _orthogonal(6, 7)
    m = 0.8 * torch.outer(u[:, 0], u[:, 1]) + 0.3 * torch.outer(u[:, 2], u[:, 3])
    x = torch.randn(2, 6, generator=_gen(8), dtype=torch.float64)
    res = jacobian_spectral_norm(lambda z: z @ m.T, x, iters=100, generator=_gen(0))
    assert res.converged.all() and res.iterations <= 3
    torch.testing.assert_close(res.estimate, torch.full((2,), 0.8, dtype=torch.float64), rtol=1e-10, atol=0)


def test_lanczos_agrees_with_power_iteration_on_a_cnn_map():
    """A tiny MnM-MOL's H_θ(x) = x − AᴴA x − F_θ(x)/λ (a ReLU CNN, complex images, float64)."""
    torch.manual_seed(0)
    model = build_model("mnmmol", {"width": 8, "depth": 3}).double().eval()
    op, b, x = tiny_problem(batch=2, dtype=torch.complex128)
    H = model.H_map(op)
    res = jacobian_spectral_norm(H, x, iters=150, tol=1e-9, rayleigh_tol=1e-6, generator=_gen(0))
    # power iteration to a plateau (its iterate's Rayleigh residual stalls near a close second pair)
    power = jacobian_spectral_norm(H, x, iters=3000, tol=1e-6, rayleigh_tol=math.inf, generator=_gen(0), method="power")
    assert res.converged.all() and power.converged.all()
    assert res.iterations < power.iterations / 3, (res.iterations, power.iterations)
    torch.testing.assert_close(res.estimate, power.estimate, rtol=1e-4, atol=0)
    assert (res.estimate >= power.estimate - 1e-9).all()  # the plateau is still a lower bound
    torch.testing.assert_close(res.estimate, res.trace[-1], rtol=1e-6, atol=0)


def test_an_unknown_method_is_refused():
    with pytest.raises(ValueError, match="lanczos"):
        jacobian_spectral_norm(lambda z: z, torch.ones(1, 3), method="arnoldi")  # type: ignore[arg-type]


@pytest.mark.parametrize("method", ["lanczos", "power"])
def test_a_start_vector_near_the_top_singular_vector_is_used_and_a_bad_one_refused(method):
    """``init`` starts the process: from a vector close to the top right singular vector the first
    step is already within 1e-4 of ‖J‖₂, where a random start is not; a zero start falls back to a
    random one; a start of the wrong shape is refused."""
    n = 300
    sv = _clustered(n)
    H = lambda z: z * sv  # noqa: E731  (top right singular vector e₁, ‖J‖₂ = 1)
    x = torch.ones(2, n, dtype=torch.float64)
    near = torch.zeros_like(x)
    near[:, 0] = 1.0
    near[:, 1:] = 1e-4 * torch.randn(2, n - 1, generator=_gen(3), dtype=torch.float64)
    warm = jacobian_spectral_norm(H, x, iters=1, generator=_gen(1), method=method, init=near)
    cold = jacobian_spectral_norm(H, x, iters=1, generator=_gen(1), method=method)
    assert (warm.trace[0] > 1 - 1e-4).all() and (warm.trace[0] <= 1 + 1e-12).all()
    assert (cold.trace[0] < 0.99).all()
    zero = jacobian_spectral_norm(H, x, iters=1, generator=_gen(1), method=method, init=torch.zeros_like(x))
    assert torch.equal(zero.trace, cold.trace)
    with pytest.raises(ValueError, match="shape of x"):
        jacobian_spectral_norm(H, x, iters=1, method=method, init=torch.ones(2, n - 1, dtype=torch.float64))
