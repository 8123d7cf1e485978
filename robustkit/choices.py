"""Names a user picks from on the command line, importable without torch.

The CLI offers exactly these (so ``robustkit --help`` does not import torch) and the modules that
act on them check against the same tuples.
"""

from __future__ import annotations

#: the model registry's names (:data:`robustkit.models.registry.MODELS` has one class per name).
MODEL_NAMES: tuple[str, ...] = ("modl", "mol", "mol-sn", "mnmmol")

#: the built-in classical baselines (:mod:`robustkit.models.baselines`): models without weights that
#: every study accepts in place of a zoo name (a baseline name takes precedence over a zoo folder).
BASELINE_NAMES: tuple[str, ...] = ("sense", "l1-wavelet")

#: learning-rate schedules of ``robustkit train``: constant, or cosine-annealed to lr/100.
LR_SCHEDULES: tuple[str, ...] = ("constant", "cosine")

#: MnM-MOL training estimates of L[H_θ](x*; δ): "ball" (random pairs anywhere in the ball, the
#: audit's estimator), "slow" (close pairs along the iteration's slowest mode), "top" (close pairs
#: along the top right singular vector of J_H(x*), tracked by a few Lanczos steps per training step),
#: "both" (the larger of ball and slow), "all" (the largest of ball, slow and top).
LIPSCHITZ_ESTIMATES: tuple[str, ...] = ("both", "ball", "slow", "top", "all")

#: constraint penalties on an estimate L against a threshold T: "quadratic" relu(L − T)² (MnM-MOL's
#: default), "barrier" −log(T − L), continued linearly within 1e-3 of T (MOL's default).
PENALTY_KINDS: tuple[str, ...] = ("quadratic", "barrier")

#: training recipes of ``robustkit train`` (docs/training.md): "default" (staged for MnM-MOL, with a
#: MoDL warm start, a λ scan and convergence gates) or "one" (a single stage with the given settings).
RECIPES: tuple[str, ...] = ("default", "one")

#: realistic k-space perturbation families of ``robustkit attack --kind`` (docs/maths.md §14).
PERTURBATION_FAMILIES: tuple[str, ...] = ("spikes", "motion", "coil-map")

#: every kind of ``robustkit attack --kind``: the ℓ2-ball attacks (docs/maths.md §7) and the families.
ATTACK_KINDS: tuple[str, ...] = ("adversarial", "gaussian", *PERTURBATION_FAMILIES)
