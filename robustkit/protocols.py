"""What a network must provide to be analysed by robustkit (docs/api.md).

Two protocols, checked structurally (no base class to inherit):

- :class:`Reconstructor`: any ``torch.nn.Module`` with ``forward(kspace, op) -> image``, kspace
  complex ``(B, C, H, W)`` (already masked), ``op`` a :class:`~robustkit.physics.SenseOperator`,
  image complex ``(B, H, W)``. Enough for the attack study and the end-to-end amplification of
  the audit.
- :class:`FixedPointModel` (deep-equilibrium): additionally ``fixed_point_map(kspace, op) -> f``,
  the update map whose fixed point ``x* = f(x*)`` is the reconstruction. Optional members, read
  when present: ``H_map(op)`` (``H_θ``, whose local Lipschitz constant ``L[H_θ](x*; δ)`` the audit
  estimates), ``drive(kspace, op)`` (the right-hand side ``c(b)`` of ``x* = H_θ(x*) + c(b)``;
  ``Aᴴb`` when absent), ``solver_settings`` (a :class:`SolverSettings` or a dict of its fields), ``m`` (the
  monotonicity margin, threshold ``T = 1 − m``) and ``delta`` (the ball radius δ).

The built-in models (:mod:`robustkit.models`) satisfy both natively; studies reach every model
through :class:`robustkit.models.adapter.ModelAdapter`, never through these attributes directly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any, Callable, Protocol, runtime_checkable

from robustkit.errors import RobustkitError

if TYPE_CHECKING:
    import torch

    from robustkit.physics.sense import SenseOperator

#: a map on images, complex ``(B, H, W) → (B, H, W)``.
ImageMap = Callable[["torch.Tensor"], "torch.Tensor"]

SOLVER_METHODS = ("anderson", "damped")
BACKWARD_KINDS = ("implicit", "jfb", "phantom")
BACKWARD_METHODS = ("gmres", *SOLVER_METHODS)


@runtime_checkable
class Reconstructor(Protocol):
    """``forward(kspace (B, C, H, W) complex, op: SenseOperator) -> image (B, H, W) complex``."""

    def forward(self, kspace: "torch.Tensor", op: "SenseOperator") -> "torch.Tensor": ...


@runtime_checkable
class FixedPointModel(Protocol):
    """A deep-equilibrium reconstructor: ``fixed_point_map(kspace, op)`` returns ``f`` with
    ``x* = f(x*)`` the reconstruction (``f`` closes over ``kspace``, so ``∂x*/∂b`` exists).

    Optional: ``H_map(op) -> H_θ``, ``solver_settings``, ``m``, ``delta`` (module docstring). A
    model whose ``forward(kspace, op, x0=None)`` solves the fixed point itself declares
    ``is_deq = True`` and leaves ``last_stats``; ``is_deq = False`` marks an unrolled model (MoDL,
    whose ``fixed_point_map`` is one unrolled step) as not a fixed-point model.
    """

    def fixed_point_map(self, kspace: "torch.Tensor", op: "SenseOperator") -> ImageMap: ...


@dataclass
class SolverSettings:
    """How robustkit solves ``x = f(x)`` for a model at evaluation (docs/api.md).

    method: ``anderson`` or ``damped`` (plain iteration); tol: relative fixed-point residual
    ``‖f(x) − x‖ / ‖f(x)‖`` to stop at; max_iter: updates per sample at most; train_max_iter: the
    cap the model was trained with (init-test scales its cap from it); backward: gradient through
    the fixed point, ``implicit`` (exact, attacks use it), ``jfb`` or ``phantom``; backward_method:
    the implicit backward's solver, ``gmres`` on ``(I − J_fᴴ) g = ∂ℓ/∂x*`` or ``anderson`` /
    ``damped`` on ``g = J_fᴴ g + ∂ℓ/∂x*``; backward_tol, backward_max_iter: of the implicit backward
    solve; phantom_steps: ``k`` of ``phantom``.
    """

    method: str = "anderson"
    tol: float = 1e-5
    max_iter: int = 400
    train_max_iter: int = 200
    backward: str = "implicit"
    backward_method: str = "gmres"
    backward_tol: float = 2e-4
    backward_max_iter: int = 30
    phantom_steps: int = 5

    def __post_init__(self) -> None:
        if self.method not in SOLVER_METHODS:
            raise RobustkitError(f"unknown solver method {self.method!r}; choose from {', '.join(SOLVER_METHODS)}")
        if self.backward not in BACKWARD_KINDS:
            raise RobustkitError(f"unknown backward {self.backward!r}; choose from {', '.join(BACKWARD_KINDS)}")
        if self.backward_method not in BACKWARD_METHODS:
            raise RobustkitError(f"unknown backward_method {self.backward_method!r}; "
                                 f"choose from {', '.join(BACKWARD_METHODS)}")
        if not self.tol > 0 or not self.backward_tol > 0:
            raise RobustkitError(f"solver tolerances must be > 0, got tol={self.tol}, backward_tol={self.backward_tol}")
        if min(self.max_iter, self.train_max_iter, self.backward_max_iter, self.phantom_steps) < 1:
            raise RobustkitError("max_iter, train_max_iter, backward_max_iter and phantom_steps must be >= 1")

    @classmethod
    def coerce(cls, value: "SolverSettings | dict[str, Any] | None", owner: str = "the model") -> "SolverSettings":
        """``value`` as settings: ``None`` gives the defaults; a dict's unknown keys are refused."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, dict):
            known = {f.name for f in fields(cls)}
            unknown = sorted(set(value) - known)
            if unknown:
                raise RobustkitError(
                    f"unknown solver setting(s) {', '.join(unknown)} on {owner}; known: {', '.join(sorted(known))}"
                )
            return cls(**value)
        raise RobustkitError(
            f"solver_settings of {owner} must be a robustkit.SolverSettings or a dict, got {type(value).__name__}"
        )

    def solver_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`robustkit.solvers.solve` for the forward solve."""
        return {"method": self.method, "tol": self.tol, "max_iter": self.max_iter}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
