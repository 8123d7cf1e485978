"""Analysis of trained models: Lipschitz estimates (:mod:`robustkit.analysis.lipschitz`), and the
attacks and convergence measurements built on them (docs/maths.md §6–§8)."""

from robustkit.analysis.contraction import ContractionRate, observed_contraction_rate
from robustkit.analysis.lipschitz import (
    LipschitzResult,
    PowerIterationResult,
    jacobian_spectral_norm,
    jacobian_spectral_radius,
    local_lipschitz,
    penalty,
    slow_direction,
)
from robustkit.analysis.lower_bound import LowerBound, lipschitz_lower_bound

__all__ = [
    "ContractionRate",
    "LowerBound",
    "lipschitz_lower_bound",
    "observed_contraction_rate",
    "LipschitzResult",
    "PowerIterationResult",
    "jacobian_spectral_norm",
    "jacobian_spectral_radius",
    "local_lipschitz",
    "penalty",
    "slow_direction",
]
