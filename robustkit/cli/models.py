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


@models.command("check")
@click.argument("name")
@click.option("--split", "splits", multiple=True, default=["test"], show_default=True, help="Splits to check (repeatable).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Check at most this many slices per split.")
@click.option("--write-card", is_flag=True, help="Store the summary on the model's card (weights unchanged).")
@click.pass_obj
def check(obj, name: str, splits: tuple[str, ...], limit: int | None, write_card: bool) -> None:
    """Convergence checks of a DEQ zoo model on the built-in data: fixed-point residual from SENSE,
    L[H_θ](x*; δ) (ball and slow-mode ascent) against 1 − m, and starts inside the ball."""
    import json

    from robustkit.analysis.checks import deq_checks, summarize_checks
    from robustkit.data.builtin import ensure_builtin
    from robustkit.data.prepared import PreparedDataset
    from robustkit.device import resolve_device
    from robustkit.errors import RobustkitError
    from robustkit.models.zoo import load_model, resolve, save_model
    from robustkit.physics.masks import MaskSpec

    obj = obj or {}
    device = resolve_device(obj.get("device", "auto"))
    model, card = load_model(name, map_location=str(device))
    if not model.is_deq:
        raise RobustkitError(f"{name} is a {model.name} model, not a deep-equilibrium model; check mol, mol-sn or mnmmol")
    delta = getattr(model.config, "delta", 0.3)
    threshold = 1 - model.config.m
    results = {}
    for split in splits:
        ds = PreparedDataset(ensure_builtin(), split=split, mask=MaskSpec(accel=card["data"]["accel"]), seed=obj.get("seed", 0))
        summary = summarize_checks(deq_checks(model, ds, delta, device, limit=limit), threshold)
        results[split] = summary
        click.echo(f"{split}: " + json.dumps({k: round(v, 4) for k, v in summary.items()}))
    if write_card:
        folder = resolve(name)
        save_model(folder, model, {**card, "checks": {"delta": delta, "threshold": threshold, "command": f"robustkit models check {name} " + " ".join(f"--split {s}" for s in splits), **results}})


@models.command("evaluate")
@click.argument("names", nargs=-1, required=True)
@click.option("--split", default="test", show_default=True, help="Split of the built-in data to score on.")
@click.option("--accel", type=click.FloatRange(min=1), default=4.0, show_default=True)
@click.pass_obj
def evaluate_cmd(obj, names: tuple[str, ...], split: str, accel: float) -> None:
    """PSNR / SSIM / NMSE (mean ± std over slices) of zoo models and the SENSE init on the built-in data.
    DEQ models are solved tightly (their eval tolerance) and report iterations and convergence."""
    import pandas as pd

    from robustkit.data.builtin import ensure_builtin
    from robustkit.data.prepared import PreparedDataset
    from robustkit.device import resolve_device
    from robustkit.evaluate import evaluate
    from robustkit.models.zoo import load_model
    from robustkit.physics.masks import MaskSpec

    obj = obj or {}
    device = resolve_device(obj.get("device", "auto"))
    ds = PreparedDataset(ensure_builtin(), split=split, mask=MaskSpec(accel=accel), seed=obj.get("seed", 0))
    frames = [pd.DataFrame(evaluate(None, ds, device)).assign(model="SENSE")]
    for name in names:
        model, _ = load_model(name, map_location=str(device))
        frames.append(pd.DataFrame(evaluate(model, ds, device)).assign(model=name))
    df = pd.concat(frames)
    cols = [c for c in ("psnr", "ssim", "nmse", "iterations", "converged") if c in df]
    agg = df.groupby("model", sort=False)[cols].agg(["mean", "std"])
    click.echo(f"{split} split, {len(ds)} slices, {accel:g}×")
    click.echo(agg.round(4).to_string())
