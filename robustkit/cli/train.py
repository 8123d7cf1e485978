"""``robustkit train``: train a model into your zoo (``./models`` unless ``--zoo``/``$ROBUSTKIT_ZOO``)."""

from __future__ import annotations

import click

from robustkit.choices import LIPSCHITZ_ESTIMATES, LR_SCHEDULES, MODEL_NAMES, PENALTY_KINDS, RECIPES


@click.command()
@click.option("--model", "model_name", required=True, type=click.Choice(MODEL_NAMES), help="Which model to train.")
@click.option("--data", default="builtin", show_default=True, help="'builtin' or a prepared HDF5 file (robustkit data prepare).")
@click.option("--accel", type=float, default=4.0, show_default=True, help="Acceleration of the 1-D Cartesian masks (≥ 1).")
@click.option("--epochs", type=int, default=None,
              help="Epochs of each training stage (≥ 1). The MnM-MOL recipe gives them to its MoDL anchor and trains "
                   "the MnM-MOL stage 1 epoch per 20 of them (docs/training.md). [default: 30 for the MnM-MOL recipe with its "
                   "MoDL anchor, else 10]")
@click.option("--batch-size", type=int, default=1, show_default=True,
              help="Slices per step; under torchrun per process (global batch = processes × --batch-size).")
@click.option("--lr", type=float, default=1e-3, show_default=True, help="Adam learning rate (> 0).")
@click.option("--lr-schedule", type=click.Choice(LR_SCHEDULES), default=None,
              help="cosine: anneal the learning rate to lr/100 at the last of --epochs. [default: cosine for the MnM-MOL "
                   "recipe with its MoDL anchor, else constant]")
@click.option("--lam-lr", type=float, default=None,
              help="Adam learning rate of λ (its own group, same schedule as --lr). [default: 1e-2 × the model's initial λ; "
                   "the network's lr would leave λ where it started]")
@click.option("--delta", type=float, default=None, help="MnM-MOL: ball radius δ of the local constraint. [default: 0.3]")
@click.option("--init-from", default=None, help="Warm-start F_θ and λ from this zoo model (e.g. a trained MoDL).")
@click.option("--penalty-weight", type=float, default=None, help="Weight of the constraint term. [default: MnM-MOL 0.5, MOL 1e-6]")
@click.option("--penalty-threshold", type=float, default=None, help="T of the MnM-MOL penalty relu(L − T)² or of the MOL barrier. [default: MnM-MOL 0.95, MOL 1 − m]")
@click.option("--penalty-kind", type=click.Choice(PENALTY_KINDS), default=None,
              help="quadratic: relu(L − T)², zero below T; barrier: −log(T − L), which keeps L below T once it is "
                   "(continued linearly within 1e-3 of T). [default: MnM-MOL quadratic, MOL barrier]")
@click.option("--slow-threshold", type=float, default=None,
              help="MnM-MOL with --lipschitz-estimate both or all: penalise the slow-mode estimate against this T and "
                   "the others against --penalty-threshold, instead of the largest against one T.")
@click.option("--lipschitz-steps", type=int, default=5, show_default=True,
              help="Ascent steps of the training estimate of L[H_θ] (MnM-MOL) or L[F_θ] (MOL); more is a tighter lower bound and a slower step.")
@click.option("--lipschitz-estimate", type=click.Choice(LIPSCHITZ_ESTIMATES), default="all", show_default=True,
              help="MnM-MOL: the estimate of L[H_θ](x*; δ) the penalty acts on: random pairs in the ball (ball, the audit's), "
                   "close pairs along the iteration's slowest mode (slow), close pairs along the top right singular vector "
                   "of J_H(x*), tracked by a few Lanczos steps per training step (top); both: the larger of ball and "
                   "slow; all: the largest of ball, slow and top.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Model config override, e.g. --set K=5 --set width=32.")
@click.option("--max-minutes", type=float, default=None,
              help="Wall-clock budget of this call, checked after every training step: past it, training stops "
                   "mid-epoch with a checkpoint that --resume continues exactly.")
@click.option("--val-samples", type=int, default=None,
              help="Validate, and gate, on the first N validation slices only (faster; the gate still needs ≥ 95 % of "
                   "them). [default: all]")
@click.option("--noise", type=float, default=0.0, show_default=True, help="Relative measurement noise σ (docs/maths.md §1).")
@click.option("--adversarial", type=float, default=0.0, show_default=True, metavar="EPS",
              help="Adversarial training: each step trains on the k-space b + γ that --adversarial-steps PGD steps find in "
                   "the attack's ball ‖γ‖ ≤ EPS·‖b‖ (the same ε as 'robustkit attack --eps'), not on b. Costs about "
                   "1 + steps training steps. 0: off.")
@click.option("--adversarial-steps", type=int, default=3, show_default=True, help="PGD steps of --adversarial (≥ 1).")
@click.option("--augment", is_flag=True,
              help="Each epoch, give every training slice a new smooth phase and a random left-right flip "
                   "(k-space re-simulated from target and maps; needs fully sampled targets).")
@click.option("--out", type=click.Path(), default=None, help="Output model folder. [default: <your zoo>/<model>-<accel>x, i.e. ./models/… unless --zoo or "
                   "$ROBUSTKIT_ZOO says otherwise; never inside the installed package]")
@click.option("--recipe", type=click.Choice(RECIPES), default="default", show_default=True,
              help="default: for mnmmol the staged recipe of docs/training.md (a MoDL, the warm start and anchor, "
                   "unless --init-from names one; then MnM-MOL with λ learnt and the penalty scaled to the data loss, "
                   "leaking towards the MoDL's image; with --set leak_to=sense a λ scan on validation and MnM-MOL with λ "
                   "fixed follow); other models train one stage. one: a single stage with exactly the given settings. "
                   "Every DEQ stage ends at the convergence gate; a failed gate exits with code 3.")
@click.option("--resume", is_flag=True,
              help="Continue the run in --out from its last checkpoint, with its recorded settings; only --epochs, "
                   "--max-minutes (a budget for this call) and --val-samples may change, any other different option is refused.")
@click.option("--default", "make_default", is_flag=True, help="Mark this model as its registry name's default zoo entry.")
@click.pass_context
def train(ctx, model_name, data, accel, epochs, batch_size, lr, lr_schedule, lam_lr, delta, init_from, penalty_weight, penalty_threshold,
          penalty_kind, slow_threshold, lipschitz_steps, lipschitz_estimate, overrides, max_minutes, val_samples, noise, adversarial, adversarial_steps, augment, recipe, out, resume,
          make_default) -> None:
    """Train MoDL, MOL, MOL-SN or MnM-MOL on the built-in brain data (or a prepared file).

    Checkpoints every epoch into --out (zoo format: weights.safetensors, card.json, log.csv);
    --resume continues an interrupted run. A deep-equilibrium model must pass the convergence gate
    on the validation slices (residual from SENSE at the evaluation tolerance, L ≤ 1 − m, starts
    inside the ball agree, each on ≥ 95 % of slices): a failure exits with code 3 and names the gate;
    a DEQ run stopped by --max-minutes before its gate exits with code 4 (--resume continues it).

    Under `torchrun --nproc_per_node N -m robustkit train ...` it trains with DistributedDataParallel
    (gloo on CPU, NCCL with one GPU per rank): --batch-size is per process, the global batch is
    N × --batch-size, rank 0 alone writes (docs/distributed.md).

    Examples:

    \b
        robustkit train --model mnmmol --data knees.h5
        # a 30-epoch MoDL anchor, then one MnM-MOL epoch leaking towards it: near the MoDL's PSNR,
        # converging off its training data, and about as fragile as the MoDL under attack

    \b
        robustkit train --model mnmmol --data knees.h5 --set leak_to=sense --epochs 10
        # the SENSE anchor: 3–5 dB lower clean, several dB better under attack (docs/training.md)

    \b
        robustkit train --model mnmmol --init-from modl-4x
        # your MoDL (here the shipped one) becomes the anchor: one MnM-MOL epoch around it
    """
    from pathlib import Path

    from robustkit.distributed import collective_errors, dist_context
    from robustkit.errors import RobustkitError, TrainingStopped
    from robustkit.models.zoo import read_card, save_model, user_zoo
    from robustkit.recipes import run, stored_config
    from robustkit.training import TrainConfig

    obj = ctx.obj or {}
    from robustkit.recipes import recipe_defaults

    for option, value, ok, rule in (("--epochs", epochs, epochs is None or epochs >= 1, "≥ 1"), ("--batch-size", batch_size, batch_size >= 1, "≥ 1"),
                                    ("--lipschitz-steps", lipschitz_steps, lipschitz_steps >= 1, "≥ 1"),
                                    ("--lr", lr, lr > 0, "> 0"), ("--accel", accel, accel >= 1, "≥ 1"),
                                    ("--lam-lr", lam_lr, lam_lr is None or lam_lr >= 0, "≥ 0"),
                                    ("--noise", noise, noise >= 0, "≥ 0"),
                                    ("--adversarial", adversarial, adversarial >= 0, "≥ 0"),
                                    ("--adversarial-steps", adversarial_steps, adversarial_steps >= 1, "≥ 1"),
                                    ("--penalty-weight", penalty_weight, penalty_weight is None or penalty_weight >= 0, "≥ 0")):
        if not ok:
            raise RobustkitError(f"{option} must be {rule}, got {value}; see 'robustkit train --help'")
    if val_samples is not None and val_samples < 1:
        raise RobustkitError(f"--val-samples must be ≥ 1, got {val_samples}")
    if max_minutes is not None and not max_minutes > 0:
        raise RobustkitError(f"--max-minutes must be > 0, got {max_minutes}")
    model_config: dict = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise RobustkitError(f"--set {item!r} is not KEY=VALUE; e.g. --set K=5")
        model_config[key] = _parse_value(value)
    if delta is not None:
        if model_name != "mnmmol":
            raise RobustkitError("--delta applies to --model mnmmol only")
        if not 0 < delta:
            raise RobustkitError(f"--delta must be > 0, got {delta}")
        model_config["delta"] = delta
    defaults = recipe_defaults(model_name, recipe, model_config)
    epochs = defaults["epochs"] if epochs is None else epochs
    lr_schedule = defaults["lr_schedule"] if lr_schedule is None else lr_schedule
    given = dict(
        model=model_name, data=data, accel=accel, epochs=epochs, batch_size=batch_size, lr=lr, lr_schedule=lr_schedule, lam_lr=lam_lr,
        seed=obj.get("seed", 0), noise=noise, adversarial=adversarial, adversarial_steps=adversarial_steps, augment=augment, init_from=init_from, model_config=model_config,
        penalty_weight=penalty_weight, penalty_threshold=penalty_threshold, penalty_kind=penalty_kind,
        slow_threshold=slow_threshold, max_minutes=max_minutes, lipschitz_steps=lipschitz_steps, lipschitz_estimate=lipschitz_estimate,
        val_samples=val_samples,
    )
    out = out or str(user_zoo() / f"{model_name}-{accel:g}x")
    if resume:
        # the run's recorded settings, with what the user typed on top: any difference is refused
        stored = stored_config(Path(out))
        if stored is not None:
            explicit = {name for name in ctx.params if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE}
            seed_given = ctx.parent is not None and ctx.parent.get_parameter_source("seed") == click.core.ParameterSource.COMMANDLINE
            if "recipe" not in explicit:
                recipe = stored.pop("recipe")
            stored.pop("recipe", None)
            typed = {_FIELD.get(name, name) for name in explicit} | ({"seed"} if seed_given else set()) | {"max_minutes"}
            if "delta" in explicit or "overrides" in explicit:
                typed.add("model_config")
            given = {**stored, "model": model_name, **{k: v for k, v in given.items() if k in typed}}
            given = {k: v for k, v in given.items() if k in TrainConfig.__dataclass_fields__}
    config = TrainConfig(**given)
    dist = dist_context(obj.get("device", "auto"))  # under torchrun: joins the process group, this rank's device
    try:
        with collective_errors("training"):
            card = run(config, out, dist.device, resume=resume, recipe=recipe)
    except KeyboardInterrupt:
        from robustkit.errors import Interrupted

        if (Path(out) / "train_state.pt").exists():
            raise Interrupted(f"interrupted; the last checkpoint in {out} is kept: `robustkit train --model {model_name} "
                              f"--out {out} --resume` continues from it") from None
        raise Interrupted(f"interrupted before the first checkpoint; nothing to resume in {out}") from None
    if "stopped" in card:
        where = card["stopped"].get("stage") or f"epoch {card['stopped']['epoch']}"
        message = (f"stopped by --max-minutes in {where} of {model_name} in {out}; `robustkit train --model {model_name} "
                   f"--out {out} --resume` continues it")
        if model_name != "modl":  # a deep-equilibrium model is not done before it passes its gate
            raise TrainingStopped(message + " to its convergence gate (not passed yet)")
        if dist.is_main:
            click.echo(message)
        return
    if not dist.is_main:  # rank 0 alone writes and reports
        return
    if make_default:
        from robustkit.models.zoo import load_model

        model, _ = load_model(out)
        save_model(out, model, {**read_card(out), "default": True})
    gate = card.get("gate")
    passed = "" if gate is None else f"; convergence gate passed on {gate['n']} validation slices"
    click.echo(f"trained {model_name} for {card['epochs_done']} epochs into {out}: {_validation_text(card['validation'])}{passed}")


def _validation_text(validation: dict) -> str:
    """``validation PSNR 35.37 dB, SSIM 0.931, NMSE 0.0065, converged 2/2 (27.5 iterations)`` from the card."""
    if not isinstance(validation, dict) or "val_psnr" not in validation:
        return "no validation"
    text = f"validation PSNR {validation['val_psnr']:.2f} dB, SSIM {validation.get('val_ssim', float('nan')):.3f}"
    if "val_nmse" in validation:
        text += f", NMSE {validation['val_nmse']:.4f}"
    if "val_converged" in validation:
        text += f", converged {100 * validation['val_converged']:.0f} %"
        if "val_iterations" in validation:
            text += f" ({validation['val_iterations']:.1f} iterations)"
    return text


#: CLI parameter → TrainConfig field, where the names differ.
_FIELD = {"model_name": "model", "overrides": "model_config", "delta": "model_config"}


def _parse_value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)
