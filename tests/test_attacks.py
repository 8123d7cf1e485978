"""k-space attacks: the threat model holds at every step, the attack is strong where the answer
is known (a linear reconstructor's top singular direction), and it composes with torchattacks."""

import pytest
import torch
from torch import nn
from torchattacks.attack import Attack

from robustkit.attacks import BoundReconstructor, KSpaceBall, KSpaceGaussian, KSpacePGD, per_sample_norm
from robustkit.models import build_model
from robustkit.physics.masks import cartesian_mask
from robustkit.physics.sense import SenseOperator
from tests.conftest import random_complex

B, C, H, W = 2, 3, 8, 8


def problem(dtype=torch.complex64, seed=0):
    import numpy as np

    maps = random_complex((B, C, H, W), dtype, seed)
    maps = maps / (maps.abs() ** 2).sum(1, keepdim=True).sqrt()
    mask = torch.from_numpy(cartesian_mask((H, W), 2.0, np.random.default_rng(seed))).to(maps.real.dtype)[None]
    op = SenseOperator(maps, mask)
    x = random_complex((B, H, W), dtype, seed + 1)
    return op, op(x)


class Recording(nn.Module):
    """A nonlinear reconstructor that records every k-space it is called with."""

    def __init__(self, op):
        super().__init__()
        self.op, self.scale, self.seen = op, nn.Parameter(torch.tensor(1.0)), []

    def forward(self, kspace, op=None):
        self.seen.append(kspace.detach().clone())
        x = self.op.H(kspace)
        return self.scale * x * torch.tanh(x.abs())


def test_ball_projection():
    op, b = problem()
    ball = KSpaceBall(b, op.mask, 0.1)
    gamma = random_complex(b.shape, seed=5)
    p = ball.project(gamma)
    assert ball.contains(p).all()
    torch.testing.assert_close(ball.project(p), p)  # idempotent
    assert torch.allclose(per_sample_norm(p), ball.radius)  # a far point lands on the sphere
    small = ball.project(gamma * 1e-6)
    torch.testing.assert_close(small, gamma * 1e-6 * op.mask)  # inside: only the mask acts
    assert ball.contains(ball.random_point(b)).all()
    with pytest.raises(ValueError, match="eps"):
        KSpaceBall(b, op.mask, -0.1)
    with pytest.raises(ValueError, match="eps"):
        KSpaceBall(b, op.mask, float("nan"))


@pytest.mark.parametrize("optimizer", ["pgd", "adam"])
def test_perturbation_never_leaves_the_ball(optimizer):
    op, b = problem()
    model = Recording(op)
    eps = 0.05
    atk = KSpacePGD(BoundReconstructor(model, op), op.mask, eps, steps=6, restarts=3, optimizer=optimizer, step_size=2.0)
    b_adv = atk(b)
    ball = KSpaceBall(b, op.mask, eps)
    assert len(model.seen) == 1 + 3 * 7  # the clean reference, then steps + 1 per restart
    for seen in model.seen:
        assert ball.contains(seen - b).all()
    assert ball.contains(b_adv - b).all()
    assert atk.last_trace.loss.shape == (3, 7, B)
    assert torch.allclose(atk.last_trace.best_loss, atk.last_trace.loss.flatten(0, 1).amax(0))


def test_attack_reaches_the_analytic_worst_case_of_a_linear_reconstructor():
    """f(b) = w ⊙ Aᴴb: the worst γ is the top right-singular vector of w ⊙ Aᴴ on the sampled entries,
    amplification σ_max (computed densely here)."""
    op, b = problem(torch.complex128)
    weight = torch.linspace(0.2, 2.0, H * W, dtype=torch.float64).reshape(1, H, W)

    class Linear(nn.Module):
        def __init__(self):
            super().__init__()
            self.one = nn.Parameter(torch.tensor(1.0, dtype=torch.float64))

        def forward(self, kspace, op_=None):
            return self.one * weight * op.H(kspace)

    model = Linear()
    eps = 0.02
    atk = KSpacePGD(BoundReconstructor(model, op), op.mask, eps, steps=40, restarts=2, step_size=0.5)
    b_adv = atk(b)
    with torch.no_grad():
        amp = per_sample_norm(model(b_adv) - model(b)) / per_sample_norm(b_adv - b)
    for i in range(B):
        sampled = op.mask[0].expand(C, H, W).flatten().nonzero().squeeze(1)
        cols = []
        for k in sampled:
            e = torch.zeros(C * H * W, dtype=torch.complex128)
            e[k] = 1
            cols.append((weight[0] * op[i : i + 1].H(e.reshape(1, C, H, W))[0]).flatten())
        sigma = torch.linalg.svdvals(torch.stack(cols, 1))[0]
        assert 0.95 * sigma <= amp[i] <= sigma * (1 + 1e-6)


def test_adversarial_damage_exceeds_gaussian_damage_on_a_trained_style_model():
    torch.manual_seed(0)
    op, b = problem()
    model = build_model("modl", {"width": 8, "depth": 3, "K": 2}).eval()
    bound = BoundReconstructor(model, op)
    with torch.no_grad():
        clean = model(b, op)
    eps = 0.05
    adv = KSpacePGD(bound, op.mask, eps, steps=10)(b, clean)
    gauss = KSpaceGaussian(bound, op.mask, eps, seed=1)
    with torch.no_grad():
        d_adv = per_sample_norm(model(adv, op) - clean)
        d_gauss = torch.stack([per_sample_norm(model(gauss(b), op) - clean) for _ in range(5)]).amax(0)
    assert (d_adv > d_gauss).all()
    assert torch.allclose(per_sample_norm(gauss.last_gamma), eps * per_sample_norm(b))


def test_attack_differentiates_a_deq_model_in_eval_mode_and_keeps_its_mode():
    torch.manual_seed(0)
    op, b = problem()
    model = build_model("mnmmol", {"width": 8, "depth": 3}).eval()
    atk = KSpacePGD(BoundReconstructor(model, op), op.mask, 0.05, steps=3)
    assert isinstance(atk, Attack)  # composes with torchattacks' API
    atk(b)
    trace = atk.last_trace.loss
    assert (trace[0, -1] > 2 * trace[0, 0]).all()  # the implicit gradient through x* found damage
    still = KSpacePGD(BoundReconstructor(model, op), op.mask, 0.05, steps=3, random_start=False)
    still(b)
    assert still.last_trace.loss.abs().max() < 1e-10  # from γ = 0 the gradient of ‖f(b+γ) − f(b)‖² is zero
    assert not model.training
    model.train()
    atk(b)
    assert model.training  # torchattacks restores the caller's mode


def test_attack_rejects_bad_settings():
    op, b = problem()
    bound = BoundReconstructor(Recording(op), op)
    with pytest.raises(ValueError, match="optimizer"):
        KSpacePGD(bound, op.mask, 0.1, optimizer="sgd")
    with pytest.raises(ValueError, match="steps"):
        KSpacePGD(bound, op.mask, 0.1, steps=0)
    with pytest.raises(NotImplementedError, match="studies"):
        KSpacePGD(bound, op.mask, 0.1).save(None)
