"""robustkit: train MoDL, MOL and MnM-MOL and measure their robustness and convergence.

Names follow the MnM-MOL paper (arXiv 2312.00386), see docs/maths.md: the CNN is the score network
``F_θ``, ``Q_θ(x) = AᴴA x + F_θ(x)/λ`` is the operator that must be (locally) m-monotone and
``H_θ = I − Q_θ`` is the operator whose (local) Lipschitz constant ``L[H_θ]`` is constrained.

The public Python API (docs/api.md) is importable from here; each name is imported on first use
(PEP 562), so ``import robustkit`` and ``robustkit --help`` stay fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: public name → module that defines it.
_EXPORTS: dict[str, str] = {
    # device: full fp32 on CUDA (docs/gpu.md)
    "full_fp32": "robustkit.device",
    "resolve_device": "robustkit.device",
    # physics and data
    "SenseOperator": "robustkit.physics.sense",
    "sense_init": "robustkit.physics.sense",
    "MaskSpec": "robustkit.physics.masks",
    "PreparedDataset": "robustkit.data.prepared",
    "ensure_builtin": "robustkit.data.builtin",
    "toy_dataset": "robustkit.data.toy",
    # protocols, models and the adapter the studies use
    "Reconstructor": "robustkit.protocols",
    "FixedPointModel": "robustkit.protocols",
    "SolverSettings": "robustkit.protocols",
    "ModelAdapter": "robustkit.models.adapter",
    "adapt": "robustkit.models.adapter",
    "as_model": "robustkit.models.adapter",
    "load_plugin": "robustkit.models.plugins",
    "load_model": "robustkit.models.zoo",
    "build_model": "robustkit.models.registry",
    "MODELS": "robustkit.models.registry",
    "ReconModel": "robustkit.models.base",
    "MoDL": "robustkit.models.modl",
    "MOL": "robustkit.models.mol",
    "MOLSN": "robustkit.models.mol",
    "MnMMOL": "robustkit.models.mnmmol",
    "ScoreCNN": "robustkit.models.cnn",
    "to_channels": "robustkit.complex",
    "from_channels": "robustkit.complex",
    # solvers, attacks, analysis
    "solve": "robustkit.solvers.fixed_point",
    "deq_fixed_point": "robustkit.solvers.implicit",
    "SolverStats": "robustkit.solvers.fixed_point",
    "gmres": "robustkit.solvers.krylov",
    "KSpacePGD": "robustkit.attacks.pgd",
    "KSpaceGaussian": "robustkit.attacks.gaussian",
    "BoundReconstructor": "robustkit.attacks.target",
    "local_lipschitz": "robustkit.analysis.lipschitz",
    "jacobian_spectral_norm": "robustkit.analysis.lipschitz",
    # studies
    "AttackConfig": "robustkit.studies.attack",
    "AuditConfig": "robustkit.studies.audit",
    "FeaturesConfig": "robustkit.studies.features",
    "InitTestConfig": "robustkit.studies.init_test",
    "SweepDeltaConfig": "robustkit.studies.sweep_delta",
    "BoundConfig": "robustkit.studies.bound",
    "ShiftConfig": "robustkit.studies.shift",
    "build_leaderboard": "robustkit.report.leaderboard",
    "make_config": "robustkit.studies",
    "RobustkitError": "robustkit.errors",
}

#: sub-packages reachable as attributes (``robustkit.studies.run(...)``).
_SUBPACKAGES = ("analysis", "attacks", "data", "models", "physics", "report", "solvers", "studies")

__all__ = ["__version__", *_EXPORTS, *_SUBPACKAGES]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    elif name in _SUBPACKAGES:
        value = importlib.import_module(f"robustkit.{name}")
    else:
        raise AttributeError(f"module 'robustkit' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
