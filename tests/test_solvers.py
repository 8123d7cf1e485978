"""Fixed-point solvers and the implicit backward: converge to the known fixed point, stop per
sample, never hide non-convergence, and give the gradient of the fixed point (to θ AND to b)."""

import pytest
import torch
from torch import nn

from robustkit.complex import from_channels, to_channels
from robustkit.solvers import SOLVERS, deq_fixed_point, solve

N = 24


def contraction(n: int, rho: float, dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    """``W = U diag(λ) Uᴴ``: λ spread in [−0.3, 0.6] plus one slow mode λ = ρ (as in docs/maths.md §6)."""
    g = torch.Generator().manual_seed(seed)
    real = torch.float64
    a = torch.randn(n, n, generator=g, dtype=real)
    if dtype.is_complex:
        a = torch.complex(a, torch.randn(n, n, generator=g, dtype=real))
    u, _ = torch.linalg.qr(a)
    lam = torch.cat([torch.linspace(-0.3, 0.6, n - 1, dtype=real), torch.tensor([rho], dtype=real)]).to(dtype)
    return (u * lam) @ u.mH


def linear_toy(rho: float, dtype: torch.dtype, batch: int = 2, seed: int = 0):
    """``f(x) = W x + c`` per sample, ``x* = (I − W)⁻¹ c``."""
    w = contraction(N, rho, dtype, seed)
    c = torch.randn(batch, N, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64).to(dtype)
    if dtype.is_complex:
        c = c + 1j * torch.randn(batch, N, generator=torch.Generator().manual_seed(seed + 2), dtype=torch.float64)
    x_star = torch.linalg.solve(torch.eye(N, dtype=dtype) - w, c.T).T
    return (lambda x: x @ w.T + c), c, x_star


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
@pytest.mark.parametrize("method", sorted(SOLVERS))
def test_converges_to_known_fixed_point(method, dtype):
    f, c, x_star = linear_toy(0.95, dtype)
    x, stats = solve(f, torch.zeros_like(c), method=method, tol=1e-9, max_iter=1000)
    assert stats.converged.all()
    assert (stats.residual <= 1e-9).all()
    assert rel(x, x_star) < 1e-7  # error ≤ residual / (1 − ρ)
    assert x.dtype == dtype and x.shape == c.shape
    assert stats.trace.shape == (stats.f_evals, 2)
    assert stats.f_evals == int(stats.iterations.max()) + 1


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex64])
def test_anderson_needs_far_fewer_iterations(dtype):
    f, c, _ = linear_toy(0.95, dtype)
    tol = 1e-5 if dtype == torch.complex64 else 1e-8
    _, plain = solve(f, torch.zeros_like(c), method="damped", tol=tol, max_iter=2000)
    _, acc = solve(f, torch.zeros_like(c), method="anderson", tol=tol, max_iter=2000)
    assert plain.converged.all() and acc.converged.all()
    assert (acc.iterations * 5 < plain.iterations).all()


@pytest.mark.parametrize("method", sorted(SOLVERS))
def test_each_sample_stops_on_its_own(method):
    """An easy sample (contraction 0.1) stops early and is frozen: its result is what it gets alone."""
    w = contraction(N, 0.95, torch.float64)
    c = torch.randn(2, N, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    rho = torch.tensor([[0.1], [1.0]], dtype=torch.float64)

    def f(x):
        return rho[: x.shape[0]] * (x @ w.T) + c[: x.shape[0]]

    x, stats = solve(f, torch.zeros_like(c), method=method, tol=1e-8, max_iter=1000)
    alone, alone_stats = solve(f, torch.zeros_like(c[:1]), method=method, tol=1e-8, max_iter=1000)
    assert stats.converged.all()
    assert stats.iterations[0] < stats.iterations[1]
    assert stats.iterations[0] == alone_stats.iterations[0]
    torch.testing.assert_close(x[0], alone[0], rtol=1e-13, atol=1e-13)
    # The frozen sample's trace is flat after it stopped.
    k = int(stats.iterations[0])
    assert (stats.trace[k:, 0] == stats.trace[k, 0]).all()


@pytest.mark.parametrize("method", sorted(SOLVERS))
def test_non_convergence_is_flagged(method):
    f, c, _ = linear_toy(0.99, torch.float64)
    x, stats = solve(f, torch.zeros_like(c), method=method, tol=1e-12, max_iter=3)
    assert not stats.converged.any()
    assert (stats.residual > 1e-12).all()
    assert (stats.iterations == 3).all()
    assert stats.trace.shape == (4, 2)
    torch.testing.assert_close(stats.residual, stats.trace[-1])


def test_small_step_is_not_convergence():
    """docs/maths.md §5: with γ = 0.01 the step test fires while the residual is still large."""
    f, c, _ = linear_toy(0.95, torch.float64)
    _, stats = solve(f, c.clone(), method="damped", damping=0.01, stop="step", tol=1e-2, max_iter=500)
    assert (stats.iterations < 5).all()
    assert not stats.converged.any()
    assert (stats.residual > 1e-2).all()


def test_input_errors_are_value_errors():
    f, c, _ = linear_toy(0.5, torch.float64)
    with pytest.raises(ValueError, match="unknown fixed-point solver"):
        solve(f, c, method="broyden")
    with pytest.raises(ValueError, match="stop"):
        solve(f, c, stop="change")
    with pytest.raises(ValueError, match="same shape"):
        solve(lambda x: x[:, :-1], c)
    with pytest.raises(ValueError, match="damping"):
        solve(f, c, method="damped", damping=0.0)
    with pytest.raises(ValueError, match="backward"):
        deq_fixed_point(f, c, backward="neumann")


# ---------- implicit differentiation -------------------------------------------------------------

TIGHT = {"method": "anderson", "tol": 1e-13, "max_iter": 500}


class TanhMap(nn.Module):
    """``f(x) = 0.5 tanh(W x + U b) + c`` (float64, contractive)."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(5)
        self.w = nn.Parameter(torch.randn(6, 6, generator=g, dtype=torch.float64) / 6**0.5)
        self.u = nn.Parameter(torch.randn(6, 4, generator=g, dtype=torch.float64) / 2)
        self.c = nn.Parameter(0.1 * torch.randn(6, generator=g, dtype=torch.float64))

    def forward(self, x, b):
        return 0.5 * torch.tanh(x @ self.w.T + b @ self.u.T) + self.c


class ComplexConvMap(nn.Module):
    """Complex ``f(x) = 0.4 F(x) + b`` with ``F`` a 2-channel real CNN (conv-tanh-conv), float64."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(2, 3, 3, padding=1).double()
        self.conv2 = nn.Conv2d(3, 2, 3, padding=1).double()
        self.lam = nn.Parameter(torch.tensor(2.0, dtype=torch.float64))

    def forward(self, x, b):
        score = from_channels(self.conv2(torch.tanh(self.conv1(to_channels(x)))))
        return 0.4 * score / self.lam + b


def tanh_problem():
    model = TanhMap()
    b = torch.randn(3, 4, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    target = torch.randn(3, 6, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    return model, b, target, torch.zeros(3, 6, dtype=torch.float64)


def conv_problem():
    model = ComplexConvMap().eval()
    g = torch.Generator().manual_seed(8)
    b = torch.complex(torch.randn(2, 5, 4, generator=g, dtype=torch.float64), torch.randn(2, 5, 4, generator=g, dtype=torch.float64))
    target = torch.complex(torch.randn(2, 5, 4, generator=g, dtype=torch.float64), torch.randn(2, 5, 4, generator=g, dtype=torch.float64))
    return model, b, target, torch.zeros_like(b)


def loss_of(x, target):
    return (x - target).abs().pow(2).sum()


def grads(loss, model, b):
    return torch.autograd.grad(loss, [*model.parameters(), b])


def implicit_grads(model, b, target, x0, **kw):
    b = b.clone().requires_grad_(True)
    z, stats = deq_fixed_point(lambda x: model(x, b), x0, TIGHT, **kw)
    return grads(loss_of(z, target), model, b), stats


def unrolled_grads(model, b, target, x0, iterations=300):
    b = b.clone().requires_grad_(True)
    x = x0
    for _ in range(iterations):
        x = model(x, b)
    return grads(loss_of(x, target), model, b)


def fd_grad_b(model, b, target, x0, eps=1e-6):
    """Central differences of ℓ(x*(b)) w.r.t. b (real and imaginary parts for complex b)."""

    def loss(bb):
        with torch.no_grad():
            z, _ = deq_fixed_point(lambda x: model(x, bb), x0, TIGHT)
            return float(loss_of(z, target))

    out = torch.zeros_like(b)
    flat, oflat = b.view(-1), out.view(-1)
    units = [1.0, 1j] if b.is_complex() else [1.0]
    for i in range(flat.numel()):
        for unit in units:
            bp, bm = b.clone(), b.clone()
            bp.view(-1)[i] += unit * eps
            bm.view(-1)[i] -= unit * eps
            oflat[i] += unit * (loss(bp) - loss(bm)) / (2 * eps)
    return out


@pytest.mark.parametrize("problem", [tanh_problem, conv_problem], ids=["tanh-real", "conv-complex"])
def test_implicit_gradient_matches_unrolled_and_finite_differences(problem):
    model, b, target, x0 = problem()
    implicit, stats = implicit_grads(model, b, target, x0)
    assert stats.converged.all()
    assert stats.backward is not None and stats.backward.converged.all()
    unrolled = unrolled_grads(model, b, target, x0)
    for gi, gu in zip(implicit, unrolled):
        assert rel(gi, gu) < 1e-6
    assert rel(implicit[-1], fd_grad_b(model, b, target, x0)) < 1e-6


def test_parameter_gradient_matches_finite_differences():
    model, b, target, x0 = tanh_problem()
    (gw, *_), _ = implicit_grads(model, b, target, x0)
    eps, (i, j) = 1e-6, (2, 3)
    values = []
    for sign in (1, -1):
        with torch.no_grad():
            model.w[i, j] += sign * eps
            z, _ = deq_fixed_point(lambda x: model(x, b), x0, TIGHT)
            values.append(float(loss_of(z, target)))
            model.w[i, j] -= sign * eps
    fd = (values[0] - values[1]) / (2 * eps)
    assert abs(float(gw[i, j]) - fd) / abs(fd) < 1e-6


def test_damped_backward_solver_gives_the_same_gradient():
    model, b, target, x0 = conv_problem()
    anderson_grads, _ = implicit_grads(model, b, target, x0)
    damped_grads, stats = implicit_grads(model, b, target, x0, backward_method="damped", backward_max_iter=2000)
    assert stats.backward.method == "damped" and stats.backward.converged.all()
    assert stats.backward.iterations.max() > 0
    for ga, gd in zip(anderson_grads, damped_grads):
        assert rel(gd, ga) < 1e-8


def test_jfb_is_the_single_step_gradient():
    model, b, target, x0 = conv_problem()
    jfb, stats = implicit_grads(model, b, target, x0, backward="jfb")
    assert stats.backward is None
    x_star, _ = solve(lambda x: model(x, b), x0, **TIGHT)
    bb = b.clone().requires_grad_(True)
    single = grads(loss_of(model(x_star.detach(), bb), target), model, bb)
    for gj, gs in zip(jfb, single):
        torch.testing.assert_close(gj, gs, rtol=1e-12, atol=1e-12)
    implicit, _ = implicit_grads(model, b, target, x0)
    assert rel(jfb[-1], implicit[-1]) > 1e-3  # an approximation, not the gradient


def test_phantom_gradient_is_the_truncated_series_and_tends_to_the_implicit_one():
    model, b, target, x0 = conv_problem()
    implicit, _ = implicit_grads(model, b, target, x0)
    one, _ = implicit_grads(model, b, target, x0, backward="phantom", phantom_steps=1)
    jfb, _ = implicit_grads(model, b, target, x0, backward="jfb")
    for gp, gj in zip(one, jfb):
        torch.testing.assert_close(gp, gj, rtol=1e-12, atol=1e-12)
    errors = []
    for k in (1, 5, 40):
        phantom, stats = implicit_grads(model, b, target, x0, backward="phantom", phantom_steps=k)
        assert stats.backward is None
        errors.append(rel(phantom[-1], implicit[-1]))
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-4


def test_phantom_gradient_equals_unrolling_k_steps_from_the_fixed_point():
    """Geng et al.'s phantom gradient backpropagates k steps f(f(…f(x*))) from the detached x*; at a
    fixed point solved to 1e-14 that is the k-term series the hook computes from one graph."""
    model, b, target, x0 = conv_problem()
    x_star, stats = solve(lambda x: model(x, b), x0, **TIGHT)
    assert stats.converged.all()
    for k in (2, 5):
        series, _ = implicit_grads(model, b, target, x0, backward="phantom", phantom_steps=k)
        bb = b.clone().requires_grad_(True)
        z = x_star.detach()
        for _ in range(k):
            z = model(z, bb)
        unrolled = grads(loss_of(z, target), model, bb)
        for gs, gu in zip(series, unrolled):
            assert rel(gs, gu) < 1e-9


def test_backward_non_convergence_is_reported():
    model, b, target, x0 = tanh_problem()
    _, stats = implicit_grads(model, b, target, x0, backward_tol=1e-14, backward_max_iter=2, backward_method="damped")
    assert not stats.backward.converged.any()
    assert (stats.backward.iterations == 2).all()


@pytest.mark.parametrize("backward", ["implicit", "phantom"])
def test_graph_holds_one_evaluation_whatever_the_iteration_count(backward):
    """Memory independent of the forward iterations (and of phantom's k): one evaluation of f records a graph."""
    model, b, target, x0 = conv_problem()
    b.requires_grad_(True)
    recorded = []

    def f(x):
        recorded.append(torch.is_grad_enabled())
        return model(x, b)

    z, stats = deq_fixed_point(f, x0, TIGHT, backward=backward, phantom_steps=8)
    loss_of(z, target).backward()
    assert stats.f_evals > 10
    assert stats.backward.f_evals > 10 if backward == "implicit" else stats.backward is None
    assert sum(recorded) == 1
    assert b.grad is not None and model.conv1.weight.grad is not None


def test_no_graph_when_the_caller_disables_grad():
    model, b, target, x0 = tanh_problem()
    with torch.no_grad():
        z, stats = deq_fixed_point(lambda x: model(x, b.requires_grad_(True)), x0, TIGHT)
    assert not z.requires_grad and stats.converged.all()
