"""k-space perturbation attacks on reconstruction models (docs/maths.md §7), as torchattacks ``Attack``s."""

from robustkit.attacks.gaussian import KSpaceGaussian
from robustkit.attacks.pgd import AttackTrace, KSpacePGD, relative_error
from robustkit.attacks.target import BoundReconstructor
from robustkit.attacks.threat import KSpaceBall, per_sample_norm

__all__ = [
    "AttackTrace",
    "BoundReconstructor",
    "KSpaceBall",
    "KSpaceGaussian",
    "KSpacePGD",
    "per_sample_norm",
    "relative_error",
]
