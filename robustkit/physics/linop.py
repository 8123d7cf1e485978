"""A minimal linear-operator base in the style of sigpy's ``Linop``: forward, adjoint, ``.H``, normal.

Every operator in robustkit derives from :class:`LinearOperator`, so one parametrised test
(linearity, adjointness, normal operator) covers them all.
"""

from __future__ import annotations

import torch


class LinearOperator:
    """``A: X → Y`` with ``forward`` (A x), ``adjoint`` (Aᴴ y) and ``normal`` (AᴴA x).

    Subclasses implement :meth:`forward` and :meth:`adjoint`; ``ishape``/``oshape`` give the
    tensor shapes of one input and one output (batch dimension included).
    """

    ishape: tuple[int, ...]
    oshape: tuple[int, ...]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def normal(self, x: torch.Tensor) -> torch.Tensor:
        """``AᴴA x``; subclasses override it when a cheaper form exists."""
        return self.adjoint(self.forward(x))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)

    @property
    def H(self) -> "LinearOperator":  # noqa: N802 - the adjoint's conventional name
        return _Adjoint(self)


class _Adjoint(LinearOperator):
    def __init__(self, op: LinearOperator):
        self.op = op
        self.ishape, self.oshape = op.oshape, op.ishape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op.adjoint(x)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self.op.forward(y)

    @property
    def H(self) -> LinearOperator:  # noqa: N802
        return self.op
