"""Model registry by name: ``modl``, ``mol``, ``mol-sn``, ``mnmmol``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from robustkit.errors import RobustkitError
from robustkit.models.base import ReconModel
from robustkit.models.mnmmol import MnMMOL
from robustkit.models.modl import MoDL
from robustkit.models.mol import MOL, MOLSN

MODELS: dict[str, type[ReconModel]] = {cls.name: cls for cls in (MoDL, MOL, MOLSN, MnMMOL)}


def model_class(name: str) -> type[ReconModel]:
    if name not in MODELS:
        raise RobustkitError(f"unknown model {name!r}; available: {', '.join(sorted(MODELS))}")
    return MODELS[name]


def build_model(name: str, config: dict[str, Any] | None = None) -> ReconModel:
    """A fresh model of registry ``name`` with ``config`` overriding its defaults (unknown keys refused)."""
    cls = model_class(name)
    if config is not None and not isinstance(config, Mapping):
        raise RobustkitError(f"the config of model {name!r} must be a mapping of key → value, not a {type(config).__name__}")
    config = dict(config or {})
    known = {f.name for f in fields(cls.config_class)}
    unknown = sorted(set(config) - known)
    if unknown:
        raise RobustkitError(
            f"unknown config key(s) {', '.join(unknown)} for model {name!r}; known: {', '.join(sorted(known))}"
        )
    return cls(cls.config_class(**config))
