"""Shared machinery of the deep-equilibrium models (MOL, MOL-SN, MnM-MOL)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from robustkit.models.base import ModelConfig, ReconModel
from robustkit.physics.sense import SenseOperator
from robustkit.protocols import SolverSettings
from robustkit.solvers import deq_fixed_point


@dataclass
class DEQConfig(ModelConfig):
    """Solver settings. Training solves to ``tol`` within ``max_iter``; evaluation (``model.eval()``)
    solves tighter, to ``eval_tol`` within ``eval_max_iter`` (docs/maths.md §5: judge a model at ≈ 1e-5)."""

    solver: str = "anderson"
    tol: float = 2e-4
    max_iter: int = 200
    eval_tol: float = 1e-5
    eval_max_iter: int = 400
    backward: str = "implicit"  # or "jfb" (Jacobian-free) or "phantom" (k-term Neumann series)
    backward_method: str = "gmres"  # the implicit backward's solver, or "anderson" / "damped"
    phantom_steps: int = 5
    backward_tol: float = 2e-4
    backward_max_iter: int = 30


class DEQModel(ReconModel):
    """Solves ``x* = f(x*)`` with ``f = self.iteration`` from the SENSE init (or ``x0``), gradients by
    implicit differentiation (to θ, λ and the k-space); statistics in ``last_stats``."""

    is_deq = True
    config: DEQConfig

    @property
    def solver_settings(self) -> SolverSettings:
        """The evaluation solve as :class:`~robustkit.protocols.SolverSettings` (the fixed-point
        protocol, docs/api.md); ``train_max_iter`` is the training cap."""
        c = self.config
        return SolverSettings(method=c.solver, tol=c.eval_tol, max_iter=c.eval_max_iter, train_max_iter=c.max_iter,
                              backward=c.backward, backward_method=c.backward_method, backward_tol=c.backward_tol,
                              backward_max_iter=c.backward_max_iter, phantom_steps=c.phantom_steps)

    def solver_kwargs(self) -> dict:
        c = self.config
        tol, cap = (c.tol, c.max_iter) if self.training else (c.eval_tol, c.eval_max_iter)
        return {"method": c.solver, "tol": tol, "max_iter": cap}

    def forward(self, kspace: torch.Tensor, op: SenseOperator, x0: torch.Tensor | None = None) -> torch.Tensor:
        with torch.no_grad():
            start = self.initial(kspace, op, x0)
        c = self.config
        x, stats = deq_fixed_point(
            self.fixed_point_map(kspace, op),
            start.detach(),
            self.solver_kwargs(),
            backward=c.backward,
            backward_method=c.backward_method,
            backward_tol=c.backward_tol,
            backward_max_iter=c.backward_max_iter,
            phantom_steps=c.phantom_steps,
        )
        self.last_stats = stats
        return x
