"""The default training recipe: MnM-MOL on a new dataset without hand-tuning (docs/training.md).

Stages, each a :func:`robustkit.training.train` run in ``OUT/stages/<n>-<name>/`` (zoo format,
resumable), each DEQ stage ending at the convergence gate (:mod:`robustkit.analysis.gate`):

1. ``modl``: the MoDL warm start (K = 10) on the same data, unless ``init_from`` names one; it is
   also the leak's anchor (``LEAK_TO = "modl"``), so it takes the epochs and the MnM-MOL stages
   1/``ANCHORED_EPOCH_SHARE`` of them each (at least one);
2. ``mnmmol``: MnM-MOL with the leak ``κ = 2m`` (``LEAK_IN_MARGINS``) towards the anchor's image
   (the warm-start MoDL, frozen into the model; ``leak_to = "sense"``: the SENSE image) from that
   F_θ and λ, λ learnt in its own Adam group, the network at ``FINE_TUNE_LR`` × lr, under the
   penalty ``w · relu(L − T)²`` on the largest of the ball, slow-mode and top-singular estimates
   of ``L[H_θ](x*; δ)``, with ``T = 1 − 2m`` and
   ``w = mse₀ / m²``, mse₀ the data loss of this stage's starting model (the warm start's F_θ and λ
   in the MnM-MOL equation; :func:`penalty_weight_for`: a violation of m costs as much as the data
   loss does at the start);
2b. ``mnmmol-tightened``, only when stage 2's gate fails on ``L ≤ 1 − m`` alone: stage 2 continued
   for a third of its epochs (at least one) with the weight × ``TIGHTEN_WEIGHT`` and ``T`` lowered
   by m/2; the stages below start from it and keep its penalty;

With the MoDL anchor the recipe ends here. With the SENSE anchor (``leak_to = "sense"``), every
MnM-MOL stage trains ``epochs`` epochs, and two more stages follow:

3. ``lambda``: λ scanned on the validation slices with F_θ fixed (``λ × s`` for ``s`` in
   ``LAMBDA_FACTORS``); the best validation PSNR among the factors that pass the gate is kept;
4. ``mnmmol-fixed-lambda``: MnM-MOL from stage 3 with λ fixed (``lam_lr = 0``), same penalty.

(With a MoDL anchor stages 3–4 gained 0.04–0.07 dB on validation for up to half the recipe's time;
docs/training.md.) Where the fixed point's null-space content comes from the anchor, so does its
response to perturbed measurements: the MoDL anchor gives MoDL's PSNR and MoDL's robustness, the
SENSE anchor 3–5 dB less and several dB more under attack (docs/training.md).

The final model is written to ``OUT`` with the card's ``stages`` (settings, gate values) and
``gate``. ``max_minutes`` is the budget of the whole recipe; a stop leaves a checkpoint that
``resume=True`` continues. Other models train one gated stage (:func:`robustkit.training.train`).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from robustkit.choices import RECIPES
from robustkit.errors import GateFailed, RobustkitError
from robustkit.io import make_folder
from robustkit.models.registry import build_model
from robustkit.training import TrainConfig, _check_out, _dataset, check_same_run, refuse_not_empty, train

#: network learning rate of the MnM-MOL stages relative to ``config.lr`` (a fine-tune of the warm start).
FINE_TUNE_LR = 0.1

#: λ factors of the validation scan (stage 3), F_θ fixed.
LAMBDA_FACTORS: tuple[float, ...] = (1.0, 1.3, 1.7)

#: the MnM-MOL stages' leak κ in units of the margin m (``κ = 2m``, 0.04 for m = 0.02) unless
#: ``--set leak=…`` gives one: the directions F_θ does not act on then sit at ``1 − 2m = T``, the
#: penalty's threshold, instead of at 1 (docs/maths.md §4, docs/training.md).
LEAK_IN_MARGINS = 2.0

#: where the MnM-MOL stages' leak pulls unless ``--set leak_to=…`` says otherwise: the image of the
#: warm-start MoDL, frozen into the model as its anchor. Same ``H_θ`` and certificates as any other
#: anchor; the model scores near the MoDL (issue 18's bar, met on the built-in data at 6× and on knee
#: anatomy) and is about as vulnerable to attacks as that MoDL. ``--set leak_to=sense`` pulls towards
#: the SENSE image instead: 3–5 dB lower clean, several dB better under attack (docs/training.md,
#: "A MoDL as the anchor").
LEAK_TO = "modl"

#: with a MoDL anchor the MnM-MOL stages (2, 2b) train one epoch per ``ANCHORED_EPOCH_SHARE`` of
#: ``epochs`` (at least one), and stage 1 (the anchor, when the recipe trains it) all of them: the
#: anchor sets the quality, and the MnM-MOL stages make their gain over it in their first epoch
#: (docs/training.md, "A MoDL as the anchor of the leak").
ANCHORED_EPOCH_SHARE = 20

#: the MnM-MOL recipe's defaults where the user gives none (``robustkit train --model mnmmol``):
#: a 30-epoch MoDL anchor, annealed (cosine), so that its last epoch is not a ±0.5 dB dip of a
#: constant learning rate; measured against same-budget MoDLs in docs/training.md. With the SENSE
#: anchor every stage trains ``epochs``, and the defaults stay those of a single stage.
RECIPE_EPOCHS, RECIPE_LR_SCHEDULE = 30, "cosine"

#: when stage 2 fails its gate on ``L ≤ 1 − m`` alone, stage ``2b`` continues it for a third of the
#: epochs with the weight × ``TIGHTEN_WEIGHT`` and the threshold lowered by m/2 (what the gate's
#: advice says; measured in docs/training.md).
TIGHTEN_WEIGHT = 4.0
TIGHTENED = "2b-mnmmol-tightened"

#: training slices on which the data loss mse₀ that scales the penalty is measured.
SCALE_SLICES = 4

RECIPE_FILE = "recipe.json"

#: a MoDL's settings and the names an anchored MnM-MOL gives them (``--set anchor_K=…``).
ANCHOR_SETTINGS: tuple[tuple[str, str], ...] = (("K", "anchor_K"), ("cg_iters", "anchor_cg_iters"), ("mu", "anchor_mu"))


def penalty_weight_for(mse0: float, m: float) -> float:
    """``w = mse₀ / m²``: with ``L = T + m`` the penalty ``w (L − T)²`` equals the data loss ``mse₀``,
    so the constraint bites at the scale of the loss whatever the data's intensity."""
    return mse0 / m**2


def recipe_defaults(model: str, recipe: str, model_config: dict[str, Any]) -> dict[str, Any]:
    """``epochs`` and ``lr_schedule`` where the user gives none: :data:`RECIPE_EPOCHS` and
    :data:`RECIPE_LR_SCHEDULE` for the MnM-MOL recipe with its MoDL anchor, else a single stage's
    (10 epochs, constant)."""
    if model == "mnmmol" and recipe == "default" and model_config.get("leak_to", LEAK_TO) == "modl":
        return {"epochs": RECIPE_EPOCHS, "lr_schedule": RECIPE_LR_SCHEDULE}
    return {"epochs": TrainConfig.epochs, "lr_schedule": TrainConfig.lr_schedule}


def check_anchor_source(ref: str) -> None:
    """Refuse ``--init-from ref`` for a MoDL-anchored recipe unless ``ref`` is a MoDL (which becomes
    the anchor) or an MnM-MOL that carries one (whose anchor is kept)."""
    from robustkit.models.zoo import read_card, resolve

    card = read_card(resolve(ref))
    if card.get("model") != "modl" and (card.get("config") or {}).get("leak_to") != "modl":
        raise RobustkitError(f"--init-from {ref} is a {card.get('model', 'model')} without a MoDL anchor, and the recipe's "
                             "MnM-MOL leaks towards the image of a MoDL: warm-start from a trained MoDL, or pass "
                             "--set leak_to=sense to pull towards the SENSE image instead")


def _with_source_shape(c: TrainConfig) -> TrainConfig:
    """``c`` with F_θ's ``width`` and ``depth`` of ``c.init_from`` where ``--set`` gives none (a warm
    start copies F_θ, so the shapes must agree); one line, before anything is written, when ``--set``
    gives others."""
    if c.init_from is None:
        return c
    from robustkit.models.zoo import read_card, resolve

    source = read_card(resolve(c.init_from)).get("config") or {}
    config = dict(c.model_config)
    for key in ("width", "depth"):
        if key not in source:
            continue
        if key not in config:
            config[key] = source[key]
        elif config[key] != source[key]:
            raise RobustkitError(f"--init-from {c.init_from} has F_θ of {key} {source[key]}, but --set {key}={config[key]} "
                                 f"was given; drop --set {key} (the warm start's is used) or warm-start from a model of "
                                 f"{key} {config[key]}")
    return replace(c, model_config=config)


def _check_stage_epochs(stages_dir: Path, epochs: dict[str, int]) -> None:
    """Refuse a resume whose ``--epochs`` would train a stage further after a later stage started
    from it (with a MoDL anchor the later stage carries stage 1's MoDL frozen inside it)."""
    from robustkit.models.zoo import read_card

    if not stages_dir.is_dir():
        return
    started = sorted(d.name for d in stages_dir.iterdir() if (d / "card.json").exists())
    for name in started:
        done = read_card(stages_dir / name).get("epochs_done", 0)
        later = [n for n in started if n > name]
        if name in epochs and done < epochs[name] and later:
            raise RobustkitError(f"this --epochs would train stage {name} on from {done} to {epochs[name]} epochs, but stage "
                                 f"{later[0]} already started from it; resume with the --epochs the run was started "
                                 "with, or train into a new --out")


def data_loss(model, dataset, device, n: int = SCALE_SLICES) -> float:
    """Mean ``|x − x_gt|²`` of ``model`` (in eval mode) on the first ``n`` slices of ``dataset``."""
    from robustkit.batch import operator_of, to_device

    model = model.to(device).eval()
    losses = []
    for i in range(min(n, len(dataset))):
        batch = to_device({k: v[None] for k, v in dataset[i].items()}, device)
        with torch.no_grad():
            x = model(batch["kspace"], operator_of(batch))
        losses.append(float((x - batch["target"]).abs().pow(2).mean()))
    return sum(losses) / len(losses)


def stored_config(out: Path) -> dict[str, Any] | None:
    """The training settings of the run in ``out``: the recipe's (``recipe.json``) or the single
    stage's (``card.json``); ``None`` when there is none."""
    from robustkit.models.zoo import read_card

    if (out / RECIPE_FILE).exists():
        try:
            record = json.loads((out / RECIPE_FILE).read_text())
            config = {**record["config"], "recipe": "default"}
            # a recipe recorded before the anchor was written down pulled towards SENSE, then the default
            config["model_config"] = {"leak_to": "sense", **config["model_config"]}
            return config
        except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError):
            raise RobustkitError(f"{out / RECIPE_FILE} is not a valid recipe record; train into another --out") from None
    if (out / "card.json").exists():
        training = read_card(out).get("training")
        return {**training, "recipe": "one"} if isinstance(training, dict) else None
    return None


def run(config: TrainConfig, out: str | os.PathLike, device: torch.device, resume: bool = False, recipe: str = "default",
        progress: bool = True) -> dict[str, Any]:
    """Train with ``recipe`` into ``out``; returns the final card, or ``{"stopped": …}`` when
    ``config.max_minutes`` ran out (``resume=True`` continues). Raises :class:`GateFailed` when a
    stage fails its gate."""
    if recipe not in RECIPES:
        raise RobustkitError(f"unknown recipe {recipe!r}; choose one of {', '.join(RECIPES)}")
    out = Path(out)
    if recipe == "one" or config.model != "mnmmol":
        if resume and (out / RECIPE_FILE).exists():
            raise RobustkitError(f"{out} holds a staged recipe run; resume it with --recipe default")
        return train(config, out, device, resume=resume, progress=progress)
    return _default_mnmmol(config, out, device, resume, progress)


def _record(out: Path, config: TrainConfig, stages: list[dict[str, Any]]) -> None:
    from robustkit.distributed import is_main

    if is_main():  # under torchrun rank 0 alone writes
        (out / RECIPE_FILE).write_text(json.dumps({"config": asdict(config), "stages": stages}, indent=2) + "\n")


def _stage_done(folder: Path, epochs: int) -> bool:
    from robustkit.models.zoo import read_card

    if not (folder / "card.json").exists():
        return False
    card = read_card(folder)
    gated = card.get("model") == "modl" or card.get("gate", {}).get("passed", False) or "lambda_scan" in card
    return gated and "stopped" not in card and card.get("epochs_done", 0) >= epochs


def _default_mnmmol(config: TrainConfig, out: Path, device, resume: bool, progress: bool) -> dict[str, Any]:
    from robustkit.distributed import barrier, is_main
    from robustkit.models.zoo import read_card

    if out.exists() and not out.is_dir():
        raise RobustkitError(f"--out {out} is a file, not a folder; choose a folder name for the model")
    c = _with_source_shape(replace(config, model_config={"leak_to": LEAK_TO, **config.model_config}))  # recipe.json records the anchor
    if resume:
        if not (out / RECIPE_FILE).exists():
            if (out / "train_state.pt").exists():
                raise RobustkitError(f"{out} holds a single-stage run; resume it with --recipe one")
            _check_out(out, resume)
        stored = stored_config(out) or {}
        check_same_run({"model": stored.pop("model", None), "training": stored}, c, out)
    else:
        refuse_not_empty(out)
    build_model(c.model, c.model_config)  # a bad --set or data file fails here, before anything is written
    _dataset(c, "val", vary=False)
    anchored = c.model_config["leak_to"] == "modl"
    if anchored and c.init_from is not None:
        check_anchor_source(c.init_from)
    build = {k: v for k, v in c.model_config.items() if k in ("width", "depth")}
    if anchored:  # stage 1 trains the anchor: with the anchor's settings where --set gives them
        build.update({key: c.model_config[name] for key, name in ANCHOR_SETTINGS if name in c.model_config})
    m = float(c.model_config.get("m", 0.02))
    T = c.penalty_threshold if c.penalty_threshold is not None else 1 - 2 * m
    stages_dir = out / "stages"
    mnm_epochs, tighten_epochs = c.epochs, max(1, c.epochs // 3)
    if anchored:
        mnm_epochs = tighten_epochs = max(1, c.epochs // ANCHORED_EPOCH_SHARE)
    if resume:
        _check_stage_epochs(stages_dir, {"1-modl": c.epochs, "2-mnmmol": mnm_epochs, TIGHTENED: tighten_epochs,
                                         "4-mnmmol-fixed-lambda": mnm_epochs})
    barrier()  # every rank has checked --out before rank 0 writes into it
    if is_main():
        make_folder(stages_dir)
    _record(out, c, [])
    summaries: list[dict[str, Any]] = []
    current: list[str] = []  # the stages entered, last one running
    t_start = time.perf_counter()

    def budget() -> float | None:
        """Minutes left of this call's ``max_minutes``."""
        return None if c.max_minutes is None else c.max_minutes - (time.perf_counter() - t_start) / 60

    def say(line: str) -> None:
        """A stage's header on the terminal (rank 0, with progress on), between the epoch bars."""
        if progress and is_main():
            print(line, flush=True)

    def summarise(name: str, what: str) -> dict[str, Any]:
        """Append stage ``name``'s summary (settings, validation, gate, wall-clock); its card."""
        folder = stages_dir / name
        card = read_card(folder)
        summaries.append({"stage": name, "what": what, "folder": str(folder.relative_to(out)), "epochs": card.get("epochs_done", 0),
                          "training": card["training"], "validation": card.get("validation"), "gate": card.get("gate"),
                          "train_seconds": card.get("train_seconds")})
        return card

    def stage(name: str, stage_config: TrainConfig, what: str) -> dict[str, Any] | None:
        """Run (or continue, or skip when done) one training stage; ``None`` when the budget stopped it."""
        folder = stages_dir / name
        current.append(name)
        if (folder / "card.json").exists():  # a started stage keeps the settings it was started with
            stored = read_card(folder)["training"]
            stage_config = TrainConfig(**{**stored, "epochs": stage_config.epochs, "max_minutes": stage_config.max_minutes})
        if not _stage_done(folder, stage_config.epochs):
            left = budget()
            if left is not None and left <= 0:
                return None
            stage_config = replace(stage_config, max_minutes=left)
            say(f"stage {name}: {what}, {stage_config.epochs} epoch(s) into {folder}")
            try:
                train(stage_config, folder, device, resume=(folder / "train_state.pt").exists(), progress=progress)
            except GateFailed as exc:
                raise GateFailed(f"stage {name} ({what}): {exc}", check=exc.check) from None
        card = summarise(name, what)
        _record(out, c, summaries)
        return None if "stopped" in card else card

    common = dict(data=c.data, accel=c.accel, epochs=c.epochs, batch_size=c.batch_size, seed=c.seed, noise=c.noise,
                  adversarial=c.adversarial, adversarial_steps=c.adversarial_steps,
                  augment=c.augment, val_samples=c.val_samples, lr_schedule=c.lr_schedule)
    warm = c.init_from
    if warm is None:
        modl = {"K": 10, **build}
        what1 = f"MoDL warm start{' and anchor' if anchored else ''}, K = {modl['K']}"
        if stage("1-modl", TrainConfig(model="modl", lr=c.lr, model_config=modl, **common), what1) is None:
            return _stopped(current[-1], summaries)
        warm = str(stages_dir / "1-modl")
    mnm_model = _mnmmol_config(c.model_config, warm, m)
    folder2 = stages_dir / "2-mnmmol"
    if (folder2 / "card.json").exists():
        weight = read_card(folder2)["training"]["penalty_weight"]
    else:
        weight = c.penalty_weight or penalty_weight_for(
            data_loss(_stage_start(mnm_model, warm), _dataset(c, "train", vary=False), device), m)
    mnm = dict(model_config=mnm_model, lr=c.lr * FINE_TUNE_LR, penalty_weight=weight, penalty_threshold=T,
               penalty_kind=c.penalty_kind, lipschitz_estimate=c.lipschitz_estimate, lipschitz_steps=c.lipschitz_steps,
               slow_threshold=c.slow_threshold, gate_threshold=c.gate_threshold, **{**common, "epochs": mnm_epochs})
    source, tightened = stages_dir / "2-mnmmol", stages_dir / TIGHTENED
    what2 = "MnM-MOL, λ learnt, constrained"
    try:
        if not tightened.exists() and stage("2-mnmmol", TrainConfig(model="mnmmol", init_from=warm, lam_lr=c.lam_lr, **mnm),
                                            what2) is None:
            return _stopped(current[-1], summaries)
    except GateFailed as exc:
        if exc.check != "lipschitz":  # only a certificate short of its margin has a next stage
            raise
        tightened.mkdir(exist_ok=True)  # marks the decision, so a resume does not re-gate stage 2
    if tightened.exists():
        summarise("2-mnmmol", what2 + ": gate failed on L ≤ 1 − m")
        mnm.update(penalty_weight=weight * TIGHTEN_WEIGHT, penalty_threshold=T - m / 2)
        if stage(TIGHTENED, TrainConfig(model="mnmmol", init_from=str(source), lam_lr=c.lam_lr,
                                        **{**mnm, "epochs": tighten_epochs}),
                 f"MnM-MOL, constraint tightened (w × {TIGHTEN_WEIGHT:g}, T − m/2)") is None:
            return _stopped(current[-1], summaries)
        source = tightened
    if anchored:  # the anchor sets the quality: stages 3–4 gain ≈ 0.05 dB for half the time
        return _finish(out, source, c, summaries)
    say(f"stage 3-lambda: λ scan on validation (λ × {', '.join(f'{f:g}' for f in LAMBDA_FACTORS)}), F_θ fixed")
    chosen = _lambda_scan(source, stages_dir / "3-lambda", c, device)
    say(f"stage 3-lambda: λ × {chosen['chosen']:g} kept")
    summaries.append({"stage": "3-lambda", "what": "λ scan on validation, F_θ fixed", "folder": "stages/3-lambda",
                      "lambda_scan": chosen["lambda_scan"], "chosen": chosen["chosen"], "gate": chosen["gate"],
                      "train_seconds": chosen["train_seconds"]})
    _record(out, c, summaries)
    final = stage("4-mnmmol-fixed-lambda", TrainConfig(model="mnmmol", init_from=str(stages_dir / "3-lambda"), lam_lr=0.0, **mnm),
                  "MnM-MOL, λ fixed, constrained")
    if final is None:
        return _stopped(current[-1], summaries)
    return _finish(out, stages_dir / "4-mnmmol-fixed-lambda", c, summaries)


def _finish(out: Path, last: Path, config: TrainConfig, summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """Write the model of the ``last`` stage to ``out``, its card with the recipe's ``stages``."""
    from robustkit.distributed import barrier, is_main
    from robustkit.models.zoo import load_model, read_card, save_model

    model, card = load_model(str(last))
    total = sum(s.get("train_seconds") or 0.0 for s in summaries)
    card = {k: v for k, v in card.items() if k not in ("weights_sha256",)}
    card.update(recipe="default", stages=summaries, training=asdict(config), train_seconds=round(total, 1),
                epochs_done=sum(s.get("epochs", 0) for s in summaries))
    if is_main():
        save_model(out, model, card)
    barrier()
    return read_card(out)


def _mnmmol_config(given: dict[str, Any], warm: str, m: float) -> dict[str, Any]:
    """The MnM-MOL stages' model config: ``given`` (``--set``) with the leak ``κ = 2m`` towards
    :data:`LEAK_TO` unless it says otherwise. A leak towards a MoDL (``leak_to = "modl"``) takes the
    warm start's ``K``, CG steps and μ for its anchor unless ``given`` sets them: a MoDL's own, or the
    anchor settings of an MnM-MOL that carries one (whose anchor
    :func:`~robustkit.training.warm_start` copies)."""
    from robustkit.models.zoo import read_card, resolve

    config = {**given, "leak": float(given.get("leak", LEAK_IN_MARGINS * m)), "leak_to": given.get("leak_to", LEAK_TO)}
    card = read_card(resolve(warm))
    source = card.get("config", {})
    if config["leak_to"] == "modl":
        for key, name in ANCHOR_SETTINGS:
            own = key if card.get("model") == "modl" else name if source.get("leak_to") == "modl" else None
            if own in source:
                config.setdefault(name, source[own])
    return config


def _stage_start(model_config: dict[str, Any], warm: str):
    """The MnM-MOL that stage 2 starts from: ``model_config`` with the F_θ and λ of ``warm``."""
    from robustkit.models.zoo import resolve
    from robustkit.training import warm_start

    model = build_model("mnmmol", model_config)
    warm_start(model, str(resolve(warm)))
    return model


def _stopped(stage: str, summaries: list[dict[str, Any]]) -> dict[str, Any]:
    return {"stopped": {"reason": "max_minutes", "stage": stage}, "stages": summaries}


def _lambda_scan(source: Path, folder: Path, config: TrainConfig, device) -> dict[str, Any]:
    """Stage 3: λ × s for s in :data:`LAMBDA_FACTORS` with F_θ fixed, each gated on the validation
    slices; the best mean PSNR among those that pass is saved to ``folder`` (s = 1 when none does,
    stage 2 having passed)."""
    from robustkit.analysis.gate import GateConfig, convergence_gate
    from robustkit.distributed import barrier, is_main
    from robustkit.models.zoo import load_model, read_card, save_model

    if (folder / "card.json").exists():
        return read_card(folder)
    t0 = time.perf_counter()
    model, card = load_model(str(source), map_location=str(device))
    val = _dataset(config, "val", vary=False)
    base = model.lam.detach().clone()
    rows, best = [], None
    for s in LAMBDA_FACTORS:
        with torch.no_grad():
            model.lam.copy_(base * s)
        result = convergence_gate(model, val, device, GateConfig(limit=config.val_samples, seed=config.seed,
                                                                 threshold=config.gate_threshold))
        rows.append({"factor": s, "lam": float(base * s), **result.to_dict()})
        if result.passed and (best is None or result.psnr > best["psnr"]):
            best = rows[-1]
    best = best or rows[0]
    with torch.no_grad():
        model.lam.copy_(base * best["factor"])
    card = {k: v for k, v in card.items() if k not in ("weights_sha256", "gate")}
    card.update(lambda_scan=rows, chosen=best["factor"], gate={k: best[k] for k in ("passed", "n", "psnr", "checks")},
                train_seconds=round(time.perf_counter() - t0, 1))
    if is_main():  # every rank scanned alike (deterministic); rank 0 writes
        save_model(folder, model, card)
    barrier()
    return read_card(folder)
