"""Deep-equilibrium solvers: forward fixed-point solvers (damped, Anderson) with per-sample
statistics, and the implicit / Jacobian-free backward (docs/maths.md §5)."""

from robustkit.solvers.fixed_point import SOLVERS, AndersonMixer, SolverStats, anderson, damped, solve
from robustkit.solvers.implicit import BACKWARDS, deq_fixed_point

__all__ = ["BACKWARDS", "SOLVERS", "AndersonMixer", "SolverStats", "anderson", "damped", "deq_fixed_point", "solve"]
