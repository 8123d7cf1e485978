"""Operator checks (sigpy/deepinv style) applied to every linear operator in robustkit.physics."""

import numpy as np
import pytest
import torch

from robustkit.errors import RobustkitError
from robustkit.physics import (
    CoilSensitivity,
    Fourier,
    Mask,
    SenseOperator,
    conjugate_gradient,
    fft2c,
    ifft2c,
    sense_init,
)
from robustkit.physics.masks import cartesian_mask
from tests.conftest import random_complex

B, C, H, W = 2, 4, 12, 9


def normalised_maps(dtype, seed=1):
    s = random_complex((B, C, H, W), dtype, seed)
    return s / (s.abs() ** 2).sum(dim=1, keepdim=True).sqrt()


def make_operators(dtype):
    maps = normalised_maps(dtype)
    mask = torch.from_numpy(cartesian_mask((H, W), 3, np.random.default_rng(0)))
    return {
        "fourier": Fourier((B, C, H, W)),
        "mask": Mask(mask, (B, C, H, W)),
        "coils": CoilSensitivity(maps),
        "sense": SenseOperator(maps, mask),
        "sense-adjoint": SenseOperator(maps, mask).H,
    }


OPS = ["fourier", "mask", "coils", "sense", "sense-adjoint"]
TOL = {torch.complex64: 1e-5, torch.complex128: 1e-12}


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
@pytest.mark.parametrize("name", OPS)
def test_linear(name, dtype):
    op = make_operators(dtype)[name]
    x, y = random_complex(op.ishape, dtype, 2), random_complex(op.ishape, dtype, 3)
    a, b = 0.7 - 1.3j, 2.1 + 0.4j
    lhs, rhs = op(a * x + b * y), a * op(x) + b * op(y)
    assert torch.linalg.vector_norm(lhs - rhs) / torch.linalg.vector_norm(rhs) < 10 * TOL[dtype]


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
@pytest.mark.parametrize("name", OPS)
def test_adjoint(name, dtype):
    op = make_operators(dtype)[name]
    x, y = random_complex(op.ishape, dtype, 4), random_complex(op.oshape, dtype, 5)
    lhs = torch.vdot(op(x).flatten(), y.flatten())
    rhs = torch.vdot(x.flatten(), op.adjoint(y).flatten())
    assert abs(lhs - rhs) / abs(lhs) < TOL[dtype]


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
@pytest.mark.parametrize("name", OPS)
def test_normal(name, dtype):
    op = make_operators(dtype)[name]
    x = random_complex(op.ishape, dtype, 6)
    ref = op.adjoint(op(x))
    assert torch.linalg.vector_norm(op.normal(x) - ref) / torch.linalg.vector_norm(ref) < 10 * TOL[dtype]


def test_sense_norm_at_most_one_with_normalised_maps():
    op = make_operators(torch.complex128)["sense"]
    x = random_complex(op.ishape, torch.complex128, 7)
    for _ in range(100):  # power iteration on AᴴA
        x = op.normal(x)
        x = x / torch.linalg.vector_norm(x.flatten(1), dim=1).reshape(-1, 1, 1)
    sigma2 = torch.linalg.vector_norm(op.normal(x).flatten(1), dim=1)
    assert (sigma2 <= 1 + 1e-9).all()
    assert (sigma2 > 0.5).all()


@pytest.mark.parametrize("shape", [(8, 8), (7, 9), (16, 5), (1, 3, 11, 10)])
def test_fft_against_numpy(shape):
    x = random_complex(shape, torch.complex128, 8)
    ref = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x.numpy(), axes=(-2, -1)), norm="ortho"), axes=(-2, -1))
    np.testing.assert_allclose(fft2c(x).numpy(), ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ifft2c(fft2c(x)).numpy(), x.numpy(), rtol=1e-12, atol=1e-12)


def test_cg_matches_direct_solve():
    dtype = torch.complex128
    op = make_operators(dtype)["sense"]
    lam, mu = 3.0, 1.001
    rhs = random_complex(op.ishape, dtype, 9)
    x, stats = conjugate_gradient(lambda v: lam * op.normal(v) + mu * v, rhs, max_iter=200, tol=1e-12)
    n = H * W
    for b in range(B):
        cols = []
        for j in range(n):
            e = torch.zeros(B, H, W, dtype=dtype)
            e[b].view(-1)[j] = 1
            cols.append((lam * op.normal(e) + mu * e)[b].reshape(-1))
        direct = torch.linalg.solve(torch.stack(cols, dim=1), rhs[b].reshape(-1))
        np.testing.assert_allclose(x[b].reshape(-1).numpy(), direct.numpy(), rtol=1e-9, atol=1e-9)
    assert (stats.residual < 1e-12).all()
    assert stats.trace.shape[1] == B


def test_cg_warm_start_at_solution_takes_no_step():
    dtype = torch.complex128
    op = make_operators(dtype)["sense"]
    rhs = random_complex(op.ishape, dtype, 10)
    normal = lambda v: 2 * op.normal(v) + v  # noqa: E731
    x, _ = conjugate_gradient(normal, rhs, max_iter=300, tol=1e-13)
    x2, stats = conjugate_gradient(normal, rhs, x0=x, max_iter=5, tol=1e-10)
    assert stats.iterations == 0
    assert torch.equal(x, x2)


def test_sense_init_recovers_image_when_fully_sampled():
    dtype = torch.complex128
    maps = normalised_maps(dtype)
    x = random_complex((B, H, W), dtype, 11)
    op = SenseOperator(maps, torch.ones(H, W))
    x0 = sense_init(op, op(x))
    # With Σ|S|² = 1, AᴴA = I, so x0 = λ/(λ + μ) x.
    np.testing.assert_allclose(x0.numpy(), (100 / 101.001) * x.numpy(), rtol=1e-8, atol=1e-10)


def test_mask_size_mismatch_is_a_clear_error():
    with pytest.raises(RobustkitError, match="does not match"):
        SenseOperator(normalised_maps(torch.complex64), torch.ones(H + 1, W))


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
@pytest.mark.parametrize("shape", [(12, 10), (12, 9), (13, 7)])
def test_sense_normal_equals_the_centred_formula(shape, dtype):
    """``normal`` moves the centring shifts off the coil axis (docs/performance.md §6): the same
    products and FFTs in another memory order, so it equals ``Sᴴ Fᴴ M F S x`` to rounding (at odd
    sizes a product may fall in a vector loop's scalar tail and round differently by one ulp)."""
    h, w = shape
    maps = random_complex((B, C, h, w), dtype, 8)
    mask = torch.from_numpy(cartesian_mask((h, w), 2, np.random.default_rng(1)))
    op = SenseOperator(maps, mask)
    x = random_complex((B, h, w), dtype, 9)
    centred = (maps.conj() * ifft2c(op.mask * fft2c(maps * x.unsqueeze(-3)))).sum(dim=-3)
    bound = 10 * torch.finfo(x.real.dtype).eps * centred.abs().max()
    assert (op.normal(x) - centred).abs().max() <= bound
    assert (op[1:].normal(x[1:]) - centred[1:]).abs().max() <= bound  # a sub-batch shifts its own factors


def test_sense_init_remembers_its_last_image_and_only_that(sense_solve_calls):
    """The operator's memo gives the same image bit for bit without a second CG solve; another
    k-space tensor, the same one changed in place, other settings, or k-space that needs the
    solve's graph are solved again."""
    calls = sense_solve_calls
    maps = normalised_maps(torch.complex64)
    mask = torch.from_numpy(cartesian_mask((H, W), 3, np.random.default_rng(0)))
    op = SenseOperator(maps, mask)
    b = op(random_complex((B, H, W), torch.complex64, 3))
    first = sense_init(op, b)
    again = sense_init(op, b)
    assert len(calls) == 1 and again is not first and torch.equal(again, first)
    again.mul_(2)  # a caller's in-place change does not reach the memo
    assert torch.equal(sense_init(op, b), first) and len(calls) == 1
    fresh = sense_init(SenseOperator(maps, mask), b)  # another operator: solved, the same values
    assert len(calls) == 2 and torch.equal(fresh, first)
    sense_init(op, b, iters=10)
    sense_init(op, b.clone())
    assert len(calls) == 4
    b2 = b.clone()
    sense_init(op, b2)
    b2.mul_(2)
    assert torch.allclose(sense_init(op, b2), 2 * sense_init(op, b), rtol=1e-4) and len(calls) == 7  # b2 changed, and b again
    leaf = b.clone().requires_grad_(True)
    sense_init(op, leaf)
    x2 = sense_init(op, leaf)
    assert len(calls) == 9 and x2.requires_grad
    with torch.no_grad():
        sense_init(op, leaf)
    assert len(calls) == 10  # without grad the memo is filled, and used only without grad
    with torch.no_grad():
        sense_init(op, leaf)
    assert len(calls) == 10 and sense_init(op, leaf).requires_grad and len(calls) == 11
    with torch.inference_mode():  # inference tensors have no version counter: solved each time
        b3 = b.clone()
        assert torch.equal(sense_init(op, b3), sense_init(op, b3)) and len(calls) == 13
