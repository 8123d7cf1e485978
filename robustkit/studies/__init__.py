"""Robustness and convergence studies. Each study module has a config class, ``cells(...)`` and
documents the tidy schema of its ``results.csv``; :func:`run` drives any of them.

=============  ==========================================  =========================
study          what it measures                            module
=============  ==========================================  =========================
attack         adversarial and Gaussian k-space damage      :mod:`.attack`
sweep-delta    MnM-MOL models trained at different δ        :mod:`.sweep_delta`
init-test      fixed points reached from different starts   :mod:`.init_test`
audit          per-slice L[H_θ](x*; δ) and Jacobian norms   :mod:`.audit`
features       small features recovered, false negatives     :mod:`.features`
bound          monotone bound 1/m vs measured attacks       :mod:`.bound`
shift          quality under shifted acquisitions / data    :mod:`.shift`
=============  ==========================================  =========================
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pandas as pd

#: study name → (module, config class name)
STUDIES: dict[str, tuple[str, str]] = {
    "attack": ("robustkit.studies.attack", "AttackConfig"),
    "sweep-delta": ("robustkit.studies.sweep_delta", "SweepDeltaConfig"),
    "init-test": ("robustkit.studies.init_test", "InitTestConfig"),
    "audit": ("robustkit.studies.audit", "AuditConfig"),
    "features": ("robustkit.studies.features", "FeaturesConfig"),
    "bound": ("robustkit.studies.bound", "BoundConfig"),
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


def _checked(name: str, config):
    """``config`` as study ``name``'s config, validated: a mapping is built with :func:`make_config`;
    a config object built directly (``rk.AttackConfig(...)``) is checked as a study file's would be,
    so a bad value is refused before the run folder exists."""
    from collections.abc import Mapping

    from robustkit.errors import RobustkitError

    if isinstance(config, Mapping):
        return make_config(name, dict(config))
    cls = getattr(study_module(name), STUDIES[name][1])
    if not isinstance(config, cls):
        raise RobustkitError(f"the {name} study takes a config of type {cls.__name__}, got {type(config).__name__}; build it with "
                             f"rk.{cls.__name__}(...) or rk.studies.make_config({name!r}, {{...}})")
    config.validate()
    return config


@dataclass
class Prepared:
    """What :func:`preflight` checked and built: the study module, its validated config, the
    evaluation slices and their description, and the models."""

    module: Any
    config: Any
    dataset: Any
    data: Any
    models: list


def preflight(name: str, config, device) -> Prepared:
    """Everything :func:`run` checks before its run folder exists: the config, the data (a study
    scored against the target needs targets), the models and what the study needs of them and of
    the data. Raises :class:`~robustkit.errors.RobustkitError` with one line; writes nothing. A
    study file's run calls it for every study before the first one starts."""
    import torch

    from robustkit.distributed import dist_context
    from robustkit.studies.common import load_models, probe_models, study_data
    from robustkit.studies.shards import on_main

    module = study_module(name)
    config = _checked(name, config)
    torch.manual_seed(config.seed)
    dataset, data = study_data(config)
    if getattr(module, "SCORES_TARGET", False):  # PSNR/SSIM against the target are its measure
        from robustkit.data.prepared import missing_targets, no_target_error

        missing = missing_targets(dataset)
        if missing:
            raise no_target_error(config.data, missing, len(dataset),
                                  f"the {name} study's PSNR and SSIM cannot be scored")
    models = load_models(module.model_refs(config, str(device)) if hasattr(module, "model_refs") else config.models,
                         dataset, config.accel, device, data=config.data)
    if hasattr(module, "check_models"):
        module.check_models(models)
    # rank 0 alone reconstructs a slice with each user model, and every rank raises what it found:
    # a model that fails on one rank only must not leave the others waiting
    on_main(dist_context(device if isinstance(device, str) else device.type), lambda: probe_models(models, dataset, device))
    if hasattr(module, "check_data"):
        module.check_data(config, dataset)
    return Prepared(module, config, dataset, data, models)


def run(
    name: str,
    config,
    device: str = "cpu",
    reports_dir: str | Path = "reports",
    resume: str | Path | None = None,
    progress: bool = True,
    on_start: Callable[[Path], None] | None = None,
    idle_ranks: bool = False,
) -> pd.DataFrame:
    """Run a study; returns its tidy frame (``frame.attrs["run_dir"]`` is the run folder).

    ``config.models`` may mix zoo references, plug-in specs (``FILE.py:FACTORY``,
    ``package.module:FACTORY``) and ``nn.Module`` objects; each becomes a
    :class:`~robustkit.models.adapter.ModelAdapter` (docs/api.md). A model lacking what the study
    needs is refused with one line before anything is written (:func:`preflight`).

    Writes ``<reports_dir>/<name>-<timestamp>/`` (see :mod:`robustkit.studies.rundir`); with
    ``resume`` continues that folder, skipping its completed cells. ``on_start(run_dir)`` is
    called once the folder exists (before any cell runs; on rank 0 only).

    Under ``torchrun`` (docs/distributed.md) every rank calls this: rank 0 opens the folder, the
    cells are split across the ranks (each on its own device) and merged by rank 0
    (:mod:`robustkit.studies.shards`); every rank returns the merged frame. More ranks than
    cells is an error before anything is written, unless ``idle_ranks`` (a study file's run: the
    ranks without a cell of this study wait for the merge and go on to the next study).
    """
    from robustkit.distributed import dist_context
    from robustkit.errors import RobustkitError
    from robustkit.studies.common import run_cells
    from robustkit.studies.rundir import RunDir, base_meta
    from robustkit.studies.shards import on_main

    ctx = dist_context(device if isinstance(device, str) else device.type)
    dev = ctx.device if ctx.distributed or isinstance(device, str) else device
    config = _checked(name, config)
    if ctx.distributed and getattr(config, "train", False):
        raise RobustkitError(f"{name} with train = true would train the same models on every rank; train them first "
                             "in one process (without torchrun), then run the study under torchrun")
    prepared = preflight(name, config, dev)
    module, config, dataset, data, models = (prepared.module, prepared.config, prepared.dataset, prepared.data,
                                             prepared.models)
    settings = config.to_dict()
    rd = RunDir(Path(reports_dir), name)  # the cells' run folder: its path is set once it is open
    cells = module.cells(config, models, dataset, dev, rd)
    if ctx.world_size > len(cells) and not idle_ranks:
        raise RobustkitError(f"{ctx.world_size} processes but the {name} study has only {len(cells)} cell(s) to share; "
                             f"start at most {len(cells)} (torchrun --nproc_per_node {len(cells)}) or add models/conditions")

    def open_folder() -> Path:
        if resume is not None:
            return RunDir.resume(resume, name, settings, [m.meta() for m in models]).path
        meta = {**base_meta(config.seed, str(dev), [m.meta() for m in models]), "world_size": ctx.world_size}
        return RunDir.create(reports_dir, name, settings, {**meta, "data": data.to_dict()}).path

    rd.path = on_main(ctx, open_folder)
    if on_start is not None and ctx.is_main:
        on_start(rd.path)
    frame = run_cells(rd, cells, progress=progress and ctx.is_main, ctx=ctx, seed=config.seed)
    frame.attrs["run_dir"] = str(rd.path)
    return frame
