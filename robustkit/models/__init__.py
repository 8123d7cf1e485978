"""Models: the score network F_θ, MoDL, MOL, MOL-SN, MnM-MOL, the registry and the zoo."""

from robustkit.models.base import ReconModel
from robustkit.models.registry import MODELS, build_model, model_class

__all__ = ["MODELS", "ReconModel", "build_model", "model_class"]
