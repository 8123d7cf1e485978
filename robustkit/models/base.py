"""The interface every reconstruction model shares: ``model(kspace, op, x0=None) -> image``."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

import torch
from torch import nn

from robustkit.errors import RobustkitError
from robustkit.models.cnn import ScoreCNN
from robustkit.physics.sense import SenseOperator, sense_init
from robustkit.solvers import BACKWARD_METHODS, BACKWARDS, SOLVERS


@dataclass
class ModelConfig:
    """Architecture and solver settings common to all models (stored on the model card)."""

    width: int = 64
    depth: int = 5
    lam: float = 10.0  # initial λ (learnable)

    def __post_init__(self) -> None:
        # A config comes from `--set KEY=VALUE` or a card's JSON: check each value's type and range
        # here, once, so a bad one is a one-line error naming it instead of a crash deep in a solve.
        for f in fields(self):
            value = getattr(self, f.name)
            kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
            if kind == "int" and (isinstance(value, bool) or not isinstance(value, int)):
                raise RobustkitError(f"model config {f.name}={value!r} is not valid: expected an integer")
            if kind == "float":
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                    raise RobustkitError(f"model config {f.name}={value!r} is not valid: expected a finite number")
                setattr(self, f.name, float(value))
            if kind == "str" and not isinstance(value, str):
                raise RobustkitError(f"model config {f.name}={value!r} is not valid: expected a string")
            rule = CONFIG_RULES.get(f.name)
            if rule is not None and not rule[0](getattr(self, f.name)):
                raise RobustkitError(f"model config {f.name}={value!r} is not valid: expected {rule[1]}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _one_of(*names: str) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: v in names), "one of " + ", ".join(names)


#: range of every model config key (any model that has it): key → (test, what is expected).
CONFIG_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "width": (lambda v: v >= 1, "an integer ≥ 1 (channels of F_θ)"),
    "depth": (lambda v: v >= 2, "an integer ≥ 2 (conv layers of F_θ)"),
    "lam": (lambda v: v > 0, "λ > 0"),
    "K": (lambda v: v >= 1, "an integer ≥ 1 (unrolled iterations)"),
    "cg_iters": (lambda v: v >= 1, "an integer ≥ 1"),
    "mu": (lambda v: v > 0, "a number > 0"),
    "alpha": (lambda v: 0 < v <= 1, "a step 0 < α ≤ 1"),
    "gamma": (lambda v: 0 < v <= 1, "a step 0 < γ ≤ 1"),
    "delta": (lambda v: v > 0, "a ball radius δ > 0"),
    "m": (lambda v: 0 <= v < 1, "a margin 0 ≤ m < 1"),
    "leak": (lambda v: 0 <= v < 1, "a leak 0 ≤ κ < 1 (MnM-MOL's contraction off the measurements)"),
    "leak_on": _one_of("unmeasured", "image"),
    "leak_to": _one_of("zero", "sense", "modl"),
    "anchor_K": (lambda v: v >= 1, "an integer ≥ 1 (the anchor MoDL's unrolled iterations)"),
    "anchor_cg_iters": (lambda v: v >= 1, "an integer ≥ 1"),
    "anchor_mu": (lambda v: v > 0, "a number > 0"),
    "sense_lam": (lambda v: v > 0, "a number > 0 (the SENSE anchor's λ_S)"),
    "sense_iters": (lambda v: v >= 1, "an integer ≥ 1 (the SENSE anchor's CG steps)"),
    "tol": (lambda v: v > 0, "a tolerance > 0"),
    "eval_tol": (lambda v: v > 0, "a tolerance > 0"),
    "backward_tol": (lambda v: v > 0, "a tolerance > 0"),
    "max_iter": (lambda v: v >= 1, "an integer ≥ 1"),
    "eval_max_iter": (lambda v: v >= 1, "an integer ≥ 1"),
    "backward_max_iter": (lambda v: v >= 1, "an integer ≥ 1"),
    "phantom_steps": (lambda v: v >= 1, "an integer ≥ 1"),
    "solver": _one_of(*SOLVERS),
    "backward": _one_of(*BACKWARDS),
    "backward_method": _one_of(*BACKWARD_METHODS),
}


def drive_of(model, kspace: torch.Tensor, op: SenseOperator) -> torch.Tensor:
    """``c(b)`` of ``x* = H_θ(x*) + c(b)``: ``model.drive(kspace, op)``, or ``Aᴴb`` for a model that
    does not define ``drive`` (a user network of the fixed-point protocol, docs/api.md)."""
    own = getattr(model, "drive", None)
    return own(kspace, op) if callable(own) else op.adjoint(kspace)


class ReconModel(nn.Module):
    """Base class: holds the score network ``F_θ`` and the learnable λ.

    ``forward(kspace (B, C, H, W), op, x0=None) -> image (B, H, W)``; ``x0`` defaults to the SENSE
    init (docs/maths.md §1). ``iteration(x, kspace, op)`` is one application of the model's update map ``f``;
    DEQ models solve ``x = f(x)`` and leave per-sample statistics in ``last_stats``.
    """

    name: ClassVar[str]
    is_deq: ClassVar[bool] = False
    config_class: ClassVar[type[ModelConfig]] = ModelConfig

    def __init__(self, config: ModelConfig | None = None):
        super().__init__()
        self.config = config or self.config_class()
        self.cnn = ScoreCNN(self.config.width, self.config.depth)
        self.lam = nn.Parameter(torch.tensor(float(self.config.lam)))
        self.last_stats = None

    @property
    def lam_value(self) -> torch.Tensor:
        """λ, kept positive."""
        return self.lam.clamp_min(1e-3)

    def initial(self, kspace: torch.Tensor, op: SenseOperator, x0: torch.Tensor | None) -> torch.Tensor:
        return sense_init(op, kspace) if x0 is None else x0

    def iteration(self, x: torch.Tensor, kspace: torch.Tensor, op: SenseOperator) -> torch.Tensor:
        raise NotImplementedError

    def fixed_point_map(self, kspace: torch.Tensor, op: SenseOperator) -> Callable[[torch.Tensor], torch.Tensor]:
        """The update map ``f(x) = iteration(x, kspace, op)`` for these measurements, the operator
        that solvers, Lipschitz estimates and convergence checks iterate."""
        return lambda x: self.iteration(x, kspace, op)

    def H(self, x: torch.Tensor, op: SenseOperator) -> torch.Tensor:  # noqa: N802 - the paper's name
        """``H_θ(x) = x − AᴴA x − F_θ(x)/λ`` (docs/maths.md §2), complex ``(B, H, W)``."""
        return x - op.normal(x) - self.cnn(x) / self.lam_value

    def drive(self, kspace: torch.Tensor, op: SenseOperator) -> torch.Tensor:
        """The constant ``c(b)`` of the fixed-point equation ``x* = H_θ(x*) + c(b)``, complex
        ``(B, H, W)``: ``Aᴴb`` here (MOL and the paper's MnM-MOL); a model whose equation has another
        right-hand side overrides it (MnM-MOL with ``leak_to = "sense"`` or ``"modl"``)."""
        return op.adjoint(kspace)

    def H_map(self, op: SenseOperator) -> Callable[[torch.Tensor], torch.Tensor]:  # noqa: N802
        """``x ↦ H_θ(x)`` for this operator: the map whose local Lipschitz constant is constrained
        in training and audited (docs/maths.md §2, §6)."""
        return lambda x: self.H(x, op)

    def forward(self, kspace: torch.Tensor, op: SenseOperator, x0: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError
