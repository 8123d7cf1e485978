"""``robustkit models``: the model zoo."""

from __future__ import annotations

import click


@click.group()
def models() -> None:
    """List and inspect the model zoo (models/)."""


@models.command("list")
def list_() -> None:
    """One line per zoo model: name, model, acceleration, δ, epochs (all training stages of its
    card's ``lineage``, when it has one), validation PSNR."""
    from robustkit.models.zoo import list_models, zoo_dir

    cards = list_models()
    if not cards:
        click.echo(f"the zoo {zoo_dir()} is empty; train a model with `robustkit train --model NAME`")
        return
    click.echo(f"{'name':<22}{'model':<9}{'accel':>6}{'δ':>6}{'epochs':>8}{'val PSNR':>10}  default")
    for c in cards:
        delta = c.get("config", {}).get("delta")
        psnr = c.get("validation", {}).get("val_psnr")
        epochs = sum(stage.get("epochs", 0) for stage in c["lineage"]) if c.get("lineage") else c.get("epochs_done", 0)
        click.echo(
            f"{c['folder']:<22}{c.get('model', '?'):<9}{c.get('data', {}).get('accel', float('nan')):>6g}"
            f"{'' if delta is None else f'{delta:g}':>6}{epochs:>8}"
            f"{'' if psnr is None else f'{psnr:.2f}':>10}  {'yes' if c.get('default') else ''}"
        )


@models.command("show")
@click.argument("name")
def show(name: str) -> None:
    """Print a zoo model's card (JSON) after verifying its weights."""
    import json

    from robustkit.models.zoo import load_model

    _, card = load_model(name)
    click.echo(json.dumps(card, indent=2, sort_keys=True))


def _warn_mismatch(name: str, card: dict, info) -> dict:
    """Warn (one line) when ``info``'s data differs from the card's training data; returns the difference."""
    from robustkit.errors import warn
    from robustkit.models.mismatch import card_mismatch, mismatch_text

    mismatch = card_mismatch(card, info.name, info.shape, info.accel)
    if mismatch:
        warn(mismatch_text(name, mismatch))
    return mismatch


DATA_HELP = "'builtin' or a prepared HDF5 file (`robustkit data prepare`), read at its own image size."


@models.command("check")
@click.argument("name")
@click.option("--data", default="builtin", show_default=True, help=DATA_HELP)
@click.option("--split", "splits", multiple=True,
              help="Splits to check (repeatable), or 'all'. [default: test when the file has splits, else all samples]")
@click.option("--accel", type=float, default=None, help="Acceleration of the masks. [default: the model's own]")
@click.option("--limit", type=int, default=None, help="Check at most this many slices per split.")
@click.option("--write-card", is_flag=True, help="Store the summary on the model's card (weights unchanged).")
@click.pass_obj
def check(obj, name: str, data: str, splits: tuple[str, ...], accel: float | None, limit: int | None, write_card: bool) -> None:
    """Convergence checks of a DEQ zoo model on the built-in data or a prepared file: fixed-point
    residual from SENSE, L[H_θ](x*; δ) (ball and slow-mode ascent) against 1 − m, and starts inside
    the ball. A model trained on another image size or data runs with a warning. Example:

        robustkit models check mnmmol --data knees.h5 --limit 4
    """
    import json

    from robustkit.analysis.checks import deq_checks, summarize_checks
    from robustkit.data.evaluation import eval_dataset
    from robustkit.device import resolve_device
    from robustkit.errors import RobustkitError
    from robustkit.models.zoo import load_model, resolve, save_model

    obj = obj or {}
    device = resolve_device(obj.get("device", "auto"))
    if limit is not None and limit < 1:
        raise RobustkitError(f"--limit must be >= 1, got {limit}")
    model, card = load_model(name, map_location=str(device))
    if not model.is_deq:
        raise RobustkitError(f"{name} is a {model.name} model, not a deep-equilibrium model; check mol, mol-sn or mnmmol")
    accel = accel if accel is not None else card.get("data", {}).get("accel", 4.0)
    datasets = [eval_dataset(data, split, accel, obj.get("seed", 0), limit) for split in (splits or (None,))]
    delta = getattr(model.config, "delta", 0.3)
    threshold = 1 - model.config.m
    _warn_mismatch(name, card, datasets[0][1])
    results = {}
    for ds, info in datasets:
        summary = summarize_checks(deq_checks(model, ds, delta, device), threshold)
        results[info.split] = summary
        click.echo(f"{info.split}: " + json.dumps({k: round(v, 4) for k, v in summary.items()}))
    if write_card:
        folder = resolve(name)
        where = "" if data == "builtin" else f"--data {data} "
        command = f"robustkit models check {name} {where}" + " ".join(f"--split {s}" for s in results)
        save_model(folder, model, {**card, "checks": {"delta": delta, "threshold": threshold, "data": data,
                                                       "command": command, **results}})


@models.command("evaluate")
@click.argument("names", nargs=-1, required=True)
@click.option("--data", default="builtin", show_default=True, help=DATA_HELP)
@click.option("--split", default=None, help="Split to score on, or 'all'. [default: test when the file has splits, else all samples]")
@click.option("--samples", type=int, default=None, help="Score the first N slices of the split. [default: all]")
@click.option("--accel", type=float, default=4.0, show_default=True)
@click.pass_obj
def evaluate_cmd(obj, names: tuple[str, ...], data: str, split: str | None, samples: int | None, accel: float) -> None:
    """PSNR / SSIM / NMSE (mean ± std over slices) of zoo models and the SENSE init on the built-in
    data or a prepared file, at the data's own image size. DEQ models are solved tightly (their eval
    tolerance) and report iterations and convergence. A model trained on another size,
    acceleration or data runs with a warning. Example:

        robustkit models evaluate modl mol mnmmol --data knees.h5 --samples 4
    """
    import pandas as pd

    from robustkit.data.evaluation import eval_dataset
    from robustkit.device import resolve_device
    from robustkit.errors import RobustkitError
    from robustkit.evaluate import evaluate
    from robustkit.models.zoo import load_model

    obj = obj or {}
    if samples is not None and samples < 1:
        raise RobustkitError(f"--samples must be >= 1, got {samples}")
    device = resolve_device(obj.get("device", "auto"))
    ds, info = eval_dataset(data, split, accel, obj.get("seed", 0), samples)
    loaded = [(name, *load_model(name, map_location=str(device))) for name in names]  # every name checked first
    frames = [pd.DataFrame(evaluate(None, ds, device)).assign(model="SENSE")]
    for name, model, card in loaded:
        _warn_mismatch(name, card, info)
        frames.append(pd.DataFrame(evaluate(model, ds, device)).assign(model=name))
    df = pd.concat(frames)
    cols = [c for c in ("psnr", "ssim", "nmse", "iterations", "converged") if c in df]
    agg = df.groupby("model", sort=False)[cols].agg(["mean", "std"])
    h, w = info.shape
    what = "all samples" if info.split == "all" else f"{info.split} split"
    click.echo(f"{info.name} ({what}), {info.n} slices of {h}x{w}, {accel:g}×")
    click.echo(agg.round(4).to_string())
