"""Deep-equilibrium solvers: forward fixed-point solvers (damped, Anderson) with per-sample
statistics, GMRES for the implicit backward's linear system, and the implicit / Jacobian-free
backward (docs/maths.md §5)."""

from robustkit.solvers.fixed_point import SOLVERS, AndersonMixer, SolverStats, anderson, damped, solve
from robustkit.solvers.implicit import BACKWARD_METHODS, BACKWARDS, deq_fixed_point
from robustkit.solvers.krylov import gmres

__all__ = ["BACKWARDS", "BACKWARD_METHODS", "SOLVERS", "AndersonMixer", "SolverStats", "anderson", "damped",
           "deq_fixed_point", "gmres", "solve"]
