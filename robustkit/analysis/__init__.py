"""Analysis of trained models: Lipschitz estimates (:mod:`robustkit.analysis.lipschitz`), and the
attacks and convergence measurements built on them (docs/maths.md §6–§8)."""

from robustkit.analysis.lipschitz import (
    LipschitzResult,
    PowerIterationResult,
    jacobian_spectral_norm,
    jacobian_spectral_radius,
    local_lipschitz,
    penalty,
    slow_direction,
)

__all__ = [
    "LipschitzResult",
    "PowerIterationResult",
    "jacobian_spectral_norm",
    "jacobian_spectral_radius",
    "local_lipschitz",
    "penalty",
    "slow_direction",
]
