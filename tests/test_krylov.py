"""GMRES for the implicit backward ``(I − K) g = v``: the solution of the linear system (real and
complex, per-sample operators), at most n products on an n-dimensional problem, per-sample
freezing, an honest verified residual, and the implicit gradient it gives through a DEQ."""

import pytest
import torch

from robustkit.errors import RobustkitError
from robustkit.protocols import SolverSettings
from robustkit.solvers import BACKWARD_METHODS, deq_fixed_point, gmres, solve
from tests.test_solvers import N, conv_problem, contraction, fd_grad_b, implicit_grads, rel, tanh_problem


def real_view(x: torch.Tensor) -> torch.Tensor:
    return (torch.view_as_real(x) if x.is_complex() else x).reshape(x.shape[0], -1)


def per_sample_problem(dtype: torch.dtype, rhos=(0.9, 0.99)):
    """Batch of 2 with DIFFERENT real-linear ``K⁽ᵇ⁾`` on the real view (for complex tensors a real
    ``2N × 2N`` matrix: real-linear, not complex-linear, like a CNN's Jacobian), and the exact ``g``."""
    dim = 2 * N if dtype.is_complex else N
    mats = torch.stack([contraction(dim, rho, torch.float64, seed=s) for s, rho in enumerate(rhos)])
    # non-normal too: a random skew part keeps I − K invertible (its symmetric part stays ≥ 1 − ρ)
    g = torch.Generator().manual_seed(11)
    skew = torch.randn(2, dim, dim, generator=g, dtype=torch.float64) * 0.3 / dim**0.5
    mats = mats + skew - skew.transpose(1, 2)

    def K(u):
        flat = (mats @ real_view(u)[:, :, None])[..., 0]
        return torch.view_as_complex(flat.reshape(*u.shape, 2)) if u.is_complex() else flat.reshape(u.shape)

    v = torch.randn(2, N, generator=g, dtype=torch.float64)
    if dtype.is_complex:
        v = torch.complex(v, torch.randn(2, N, generator=g, dtype=torch.float64))
    exact = torch.linalg.solve(torch.eye(dim, dtype=torch.float64) - mats, real_view(v)[:, :, None])[..., 0]
    return K, v, exact, dim


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
def test_gmres_solves_the_linear_system_within_n_products(dtype):
    K, v, exact, dim = per_sample_problem(dtype)
    g, stats = gmres(K, v, tol=1e-12, max_iter=dim)
    assert g.dtype == dtype and g.shape == v.shape
    assert stats.method == "gmres" and stats.converged.all()
    assert (stats.iterations <= dim).all()
    assert rel(real_view(g), exact) < 1e-9
    # the reported residual is the fixed-point one, ‖K g + v − g‖ / ‖K g + v‖, recomputed here
    image = K(g) + v
    true = torch.linalg.vector_norm(real_view(image - g), dim=1) / torch.linalg.vector_norm(real_view(image), dim=1)
    torch.testing.assert_close(stats.residual, true)
    assert stats.trace.shape == (stats.f_evals, 2) and stats.f_evals == int(stats.iterations.max()) + 1
    assert (stats.trace[0] == 1).all()  # g₀ = 0


def test_gmres_minimises_the_residual_over_the_krylov_space():
    """After k products GMRES's ‖v − (I − K) g‖ is the least over span{v, …, Kᵏ⁻¹v}, which holds the
    plain iteration's ``Σ_{j<k} Kʲ v`` (residual ``Kᵏ v``) and Anderson's iterates alike."""
    K, v, _, _ = per_sample_problem(torch.float64, rhos=(0.99, 0.995))
    power = v
    for k in range(1, 12):
        power = K(power)
        g, _ = gmres(K, v, tol=0.0, max_iter=k)
        residual = torch.linalg.vector_norm(v - g + K(g), dim=1)
        assert (residual <= torch.linalg.vector_norm(power, dim=1) * (1 + 1e-12)).all()


def test_a_slow_mode_costs_gmres_a_few_products_and_the_plain_iteration_hundreds():
    w = torch.stack([contraction(N, rho, torch.float64, seed=s) for s, rho in enumerate((0.99, 0.995))])
    slow = torch.linalg.eigh(w).eigenvectors[..., -1]  # the eigenvector of ρ
    v = slow + 0.1 * torch.randn(2, N, generator=torch.Generator().manual_seed(3), dtype=torch.float64)

    def K(u):
        return (w @ u[:, :, None])[..., 0]

    _, krylov = gmres(K, v, tol=1e-6, max_iter=N)
    _, plain = solve(lambda u: K(u) + v, v, method="damped", tol=1e-6, max_iter=5000)
    assert krylov.converged.all() and plain.converged.all()
    assert (krylov.iterations * 10 < plain.iterations).all()


def test_a_sample_that_converges_early_is_frozen():
    _, v, _, dim = per_sample_problem(torch.float64)
    base, _, _, _ = per_sample_problem(torch.float64)

    def K(u):  # sample 0: K = ½ I, solved exactly by one product; sample 1: general
        out = base(u)
        return torch.cat([0.5 * u[:1], out[1:]])

    g, stats = gmres(K, v, tol=1e-12, max_iter=dim)
    assert stats.converged.all()
    assert stats.iterations[0] == 1 and stats.iterations[1] > 5
    torch.testing.assert_close(g[0], 2 * v[0])
    assert (stats.trace[1:, 0] == stats.trace[1, 0]).all()  # it repeats its last value
    alone, _ = gmres(lambda u: 0.5 * u, v[:1], tol=1e-12, max_iter=dim)
    torch.testing.assert_close(g[:1], alone, rtol=0, atol=0)


def test_non_convergence_is_reported_with_the_verified_residual():
    K, v, _, _ = per_sample_problem(torch.complex128, rhos=(0.99, 0.99))
    g, stats = gmres(K, v, tol=1e-12, max_iter=3)
    assert (stats.iterations == 3).all() and not stats.converged.any()
    image = K(g) + v
    true = torch.linalg.vector_norm(real_view(image - g), dim=1) / torch.linalg.vector_norm(real_view(image), dim=1)
    torch.testing.assert_close(stats.residual, true)
    assert (stats.residual > 1e-6).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.complex64, torch.float64])
def test_zero_right_hand_side_gives_zero(dtype):
    """A zero incoming gradient (an attack's first step from γ = 0) is solved by g = 0, no NaN."""
    zero = torch.zeros(2, N, dtype=dtype)
    g, stats = gmres(lambda u: 0.5 * u, zero, tol=1e-8, max_iter=5)
    assert torch.equal(g, zero) and stats.converged.all() and (stats.iterations == 0).all()


def test_bad_input():
    K, v, _, _ = per_sample_problem(torch.float64)
    for kwargs in ({"tol": -1.0}, {"max_iter": -1}):
        with pytest.raises(ValueError):
            gmres(K, v, **kwargs)
    with pytest.raises(ValueError, match="same shape"):
        gmres(lambda u: u[:, :3], v, max_iter=2)
    with pytest.raises(ValueError, match="backward_method"):
        deq_fixed_point(lambda x: 0.5 * x, v, backward_method="cg")


@pytest.mark.parametrize("problem", [tanh_problem, conv_problem], ids=["tanh-real", "conv-complex"])
def test_gmres_backward_gives_the_implicit_gradient(problem):
    model, b, target, x0 = problem()
    krylov, stats = implicit_grads(model, b, target, x0, backward_method="gmres", backward_tol=1e-13, backward_max_iter=60)
    assert stats.backward.method == "gmres" and stats.backward.converged.all()
    anderson, _ = implicit_grads(model, b, target, x0)
    for gk, ga in zip(krylov, anderson):
        assert rel(gk, ga) < 1e-9
    if problem is tanh_problem:  # (the anderson backward is itself checked against differences on both)
        assert rel(krylov[-1], fd_grad_b(model, b, target, x0)) < 1e-6


def test_backward_method_is_a_checked_setting():
    from robustkit import protocols

    assert set(BACKWARD_METHODS) == set(protocols.BACKWARD_METHODS) == {"gmres", "anderson", "damped"}
    assert SolverSettings().backward_method == "gmres"
    with pytest.raises(RobustkitError, match="backward_method"):
        SolverSettings(backward_method="cg")
    from robustkit.models import build_model

    with pytest.raises(RobustkitError, match="backward_method"):
        build_model("mnmmol", {"width": 4, "depth": 2, "backward_method": "cg"})
    model = build_model("mnmmol", {"width": 4, "depth": 2, "backward_method": "anderson"})
    assert model.solver_settings.backward_method == "anderson"
