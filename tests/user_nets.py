"""Networks written the way a user would, without robustkit's base classes: the plug-in file of
tests/test_plugins.py (``tests/user_nets.py:tiny_net``) and the objects of tests/test_api.py."""

import torch

from robustkit.models.cnn import ScoreCNN


class TinyNet(torch.nn.Module):
    """A reconstructor: ``x = Aᴴb − 0.1 F_θ(Aᴴb)``."""

    def __init__(self):
        super().__init__()
        self.cnn = ScoreCNN(width=4, depth=2)

    def forward(self, kspace, op):
        x = op.adjoint(kspace)
        return x - 0.1 * self.cnn(x)


class TinyDEQ(TinyNet):
    """``x* = H_θ(x*) + Aᴴb`` with ``H_θ(x) = x − AᴴA x − (5x + F_θ(x))/λ``: contracts (rate ≈ 0.5 + ‖F_θ‖/λ)."""

    lam, m, delta = 10.0, 0.02, 0.3

    def H_map(self, op):  # noqa: N802
        return lambda x: x - op.normal(x) - (5 * x + self.cnn(x)) / self.lam

    def fixed_point_map(self, kspace, op):
        H = self.H_map(op)
        return lambda x: H(x) + op.adjoint(kspace)


class MapOnlyDEQ(torch.nn.Module):
    """A DEQ that gives only its update map ``f(x) = c x + Aᴴb`` (fixed point ``Aᴴb / (1 − c)``),
    no ``forward``, no ``H_map``: robustkit solves it."""

    solver_settings = {"tol": 1e-7, "max_iter": 100}

    def __init__(self, c=0.5):
        super().__init__()
        self.c = torch.nn.Parameter(torch.tensor(float(c)))

    def fixed_point_map(self, kspace, op):
        return lambda x: self.c * x + op.adjoint(kspace)


class RealOutput(TinyNet):
    def forward(self, kspace, op):
        return super().forward(kspace, op).abs()


class WrongSignature(torch.nn.Module):
    def forward(self, kspace):
        return kspace


class Nothing(torch.nn.Module):
    pass


def tiny_net():
    torch.manual_seed(0)
    return TinyNet()


def tiny_deq():
    torch.manual_seed(0)
    return TinyDEQ()


def map_only_deq():
    return MapOnlyDEQ()


def real_output():
    return RealOutput()


def wrong_signature():
    return WrongSignature()


def nothing():
    return Nothing()


def returns_int():
    return 3


def raises():
    raise ValueError("no weights here\nsecond line")


not_callable = 3


class WrongShapeMap(TinyDEQ):
    """A DEQ whose update map drops a column."""

    def fixed_point_map(self, kspace, op):
        return lambda x: (0.5 * x + op.adjoint(kspace))[..., :-1]


class NaNDEQ(TinyDEQ):
    """A DEQ whose H_θ returns NaN."""

    def H_map(self, op):  # noqa: N802
        return lambda x: (x - op.normal(x)) * float("nan")


class NaNNet(TinyNet):
    """A reconstructor that returns NaN."""

    def forward(self, kspace, op):
        return op.adjoint(kspace) * float("nan")


class BadMargin(TinyDEQ):
    m = 2.0


class BadDelta(TinyDEQ):
    delta = -1.0


class Raises(TinyNet):
    def forward(self, kspace, op):
        raise ZeroDivisionError("my bug")

