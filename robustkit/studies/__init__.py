"""Robustness and convergence studies. Each study module has a config class, ``cells(...)`` and
documents the tidy schema of its ``results.csv``; :func:`run` drives any of them.

=============  ==========================================  =========================
study          what it measures                            module
=============  ==========================================  =========================
attack         adversarial and Gaussian k-space damage      :mod:`.attack`
sweep-delta    MnM-MOL models trained at different δ        :mod:`.sweep_delta`
init-test      fixed points reached from different starts   :mod:`.init_test`
audit          per-slice L[H_θ](x*; δ) and Jacobian norms   :mod:`.audit`
shift          quality under shifted acquisitions / data    :mod:`.shift`
=============  ==========================================  =========================
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Callable

import pandas as pd

#: study name → (module, config class name)
STUDIES: dict[str, tuple[str, str]] = {
    "attack": ("robustkit.studies.attack", "AttackConfig"),
    "sweep-delta": ("robustkit.studies.sweep_delta", "SweepDeltaConfig"),
    "init-test": ("robustkit.studies.init_test", "InitTestConfig"),
    "audit": ("robustkit.studies.audit", "AuditConfig"),
    "shift": ("robustkit.studies.shift", "ShiftConfig"),
}


def study_module(name: str):
    from robustkit.errors import RobustkitError

    if name not in STUDIES:
        raise RobustkitError(f"unknown study {name!r}; choose from {', '.join(STUDIES)}")
    return importlib.import_module(STUDIES[name][0])


def make_config(name: str, mapping: dict[str, Any], where: str = "config"):
    """The config of study ``name`` from a mapping; unknown keys raise an error naming them."""
    module = study_module(name)
    return getattr(module, STUDIES[name][1]).from_mapping(mapping, where)


def run(
    name: str,
    config,
    device: str = "cpu",
    reports_dir: str | Path = "reports",
    resume: str | Path | None = None,
    progress: bool = True,
    on_start: Callable[[Path], None] | None = None,
) -> pd.DataFrame:
    """Run a study; returns its tidy frame (``frame.attrs["run_dir"]`` is the run folder).

    ``config.models`` may mix zoo references, plug-in specs (``FILE.py:FACTORY``,
    ``package.module:FACTORY``) and ``nn.Module`` objects; each becomes a
    :class:`~robustkit.models.adapter.ModelAdapter` (docs/api.md). A model lacking what the study
    needs is refused with one line before anything is written.

    Writes ``<reports_dir>/<name>-<timestamp>/`` (see :mod:`robustkit.studies.rundir`); with
    ``resume`` continues that folder, skipping its completed cells. ``on_start(run_dir)`` is
    called once the folder exists (before any cell runs).
    """
    import torch

    from robustkit.device import resolve_device
    from robustkit.studies.common import load_models, run_cells, study_data
    from robustkit.studies.rundir import RunDir, base_meta

    module = study_module(name)
    dev = resolve_device(device) if isinstance(device, str) else device
    torch.manual_seed(config.seed)
    dataset, data = study_data(config)
    models = load_models(module.model_refs(config, str(dev)) if hasattr(module, "model_refs") else config.models,
                         dataset, config.accel, dev, data=config.data)
    if hasattr(module, "check_models"):
        module.check_models(models)
    if hasattr(module, "check_data"):  # before the run folder exists: bad input writes nothing
        module.check_data(config, dataset)
    settings = config.to_dict()
    if resume is not None:
        rd = RunDir.resume(resume, name, settings, [m.meta() for m in models])
    else:
        meta = base_meta(config.seed, str(dev), [m.meta() for m in models])
        rd = RunDir.create(reports_dir, name, settings, {**meta, "data": data.to_dict()})
    if on_start is not None:
        on_start(rd.path)
    frame = run_cells(rd, module.cells(config, models, dataset, dev, rd), progress=progress)
    frame.attrs["run_dir"] = str(rd.path)
    return frame
