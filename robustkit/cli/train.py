"""``robustkit train``: train a model into the zoo."""

from __future__ import annotations

import click

from robustkit.choices import LIPSCHITZ_ESTIMATES, LR_SCHEDULES, MODEL_NAMES, PENALTY_KINDS


@click.command()
@click.option("--model", "model_name", required=True, type=click.Choice(MODEL_NAMES), help="Which model to train.")
@click.option("--data", default="builtin", show_default=True, help="'builtin' or a prepared HDF5 file (robustkit data prepare).")
@click.option("--accel", type=float, default=4.0, show_default=True, help="Acceleration of the 1-D Cartesian masks.")
@click.option("--epochs", type=int, default=10, show_default=True)
@click.option("--batch-size", type=int, default=1, show_default=True)
@click.option("--lr", type=float, default=1e-3, show_default=True, help="Adam learning rate.")
@click.option("--lr-schedule", type=click.Choice(LR_SCHEDULES), default="constant", show_default=True,
              help="cosine: anneal the learning rate to lr/100 at the last of --epochs.")
@click.option("--lam-lr", type=float, default=None,
              help="Adam learning rate of λ (its own group, same schedule as --lr). [default: 1e-2 × the model's initial λ; "
                   "the network's lr would leave λ where it started]")
@click.option("--delta", type=float, default=None, help="MnM-MOL: ball radius δ of the local constraint (default 0.3).")
@click.option("--init-from", default=None, help="Warm-start F_θ and λ from this zoo model (e.g. a trained MoDL).")
@click.option("--penalty-weight", type=float, default=None, help="Weight of the constraint term. [default: MnM-MOL 0.5, MOL 1e-6]")
@click.option("--penalty-threshold", type=float, default=None, help="T of the MnM-MOL penalty relu(L − T)² or of the MOL barrier. [default: MnM-MOL 0.95, MOL 1 − m]")
@click.option("--penalty-kind", type=click.Choice(PENALTY_KINDS), default=None,
              help="quadratic: relu(L − T)², zero below T; barrier: −log(T − L), which keeps L below T once it is "
                   "(continued linearly within 1e-3 of T). [default: MnM-MOL quadratic, MOL barrier]")
@click.option("--slow-threshold", type=float, default=None,
              help="MnM-MOL with --lipschitz-estimate both: penalise the slow-mode estimate against this T and the "
                   "ball estimate against --penalty-threshold, instead of the larger of the two against one T.")
@click.option("--lipschitz-steps", type=int, default=5, show_default=True,
              help="Ascent steps of the training estimate of L[H_θ] (MnM-MOL) or L[F_θ] (MOL); more is a tighter lower bound and a slower step.")
@click.option("--lipschitz-estimate", type=click.Choice(LIPSCHITZ_ESTIMATES), default="both", show_default=True,
              help="MnM-MOL: the estimate of L[H_θ](x*; δ) the penalty acts on: random pairs in the ball (the audit's), "
                   "close pairs along the iteration's slowest mode, or the larger of the two.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Model config override, e.g. --set K=5 --set width=32.")
@click.option("--max-minutes", type=float, default=None, help="Stop after the epoch that passes this wall-clock budget.")
@click.option("--noise", type=float, default=0.0, show_default=True, help="Relative measurement noise σ (docs/maths.md §1).")
@click.option("--augment", is_flag=True,
              help="Each epoch, give every training slice a new smooth phase and a random left-right flip "
                   "(k-space re-simulated from target and maps; needs fully sampled targets).")
@click.option("--out", type=click.Path(), default=None, help="Output zoo folder (default models/<model>-<accel>x).")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--default", "make_default", is_flag=True, help="Mark this model as its registry name's default zoo entry.")
@click.pass_obj
def train(obj, model_name, data, accel, epochs, batch_size, lr, lr_schedule, lam_lr, delta, init_from, penalty_weight, penalty_threshold,
          penalty_kind, slow_threshold, lipschitz_steps, lipschitz_estimate, overrides, max_minutes, noise, augment, out, resume, make_default) -> None:
    """Train MoDL, MOL, MOL-SN or MnM-MOL on the built-in brain data (or a prepared file).

    Checkpoints every epoch into --out (zoo format: weights.safetensors, card.json, log.csv);
    --resume continues an interrupted run. Example:

        robustkit train --model mnmmol --accel 4 --delta 0.3 --init-from modl-4x --epochs 5
    """
    from robustkit.device import resolve_device
    from robustkit.errors import RobustkitError
    from robustkit.models.zoo import read_card, save_model, zoo_dir
    from robustkit.training import TrainConfig, train as run_training

    obj = obj or {}
    if epochs < 1 or batch_size < 1 or lr <= 0 or accel < 1 or lipschitz_steps < 1 or (lam_lr is not None and lam_lr < 0):
        raise RobustkitError("--epochs, --batch-size and --lipschitz-steps must be ≥ 1, --lr > 0, --lam-lr ≥ 0 and --accel ≥ 1")
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
    config = TrainConfig(
        model=model_name, data=data, accel=accel, epochs=epochs, batch_size=batch_size, lr=lr, lr_schedule=lr_schedule, lam_lr=lam_lr,
        seed=obj.get("seed", 0), noise=noise, augment=augment, init_from=init_from, model_config=model_config,
        penalty_weight=penalty_weight, penalty_threshold=penalty_threshold, penalty_kind=penalty_kind,
        slow_threshold=slow_threshold, max_minutes=max_minutes,
        lipschitz_steps=lipschitz_steps,
        lipschitz_estimate=lipschitz_estimate,
    )
    out = out or str(zoo_dir() / f"{model_name}-{accel:g}x")
    device = resolve_device(obj.get("device", "auto"))
    card = run_training(config, out, device, resume=resume)
    if make_default:
        from robustkit.models.zoo import load_model

        model, _ = load_model(out)
        save_model(out, model, {**read_card(out), "default": True})
    click.echo(f"trained {model_name} for {card['epochs_done']} epochs into {out}: {card['validation']}")


def _parse_value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)
