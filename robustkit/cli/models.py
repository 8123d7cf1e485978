"""``robustkit models``: the model zoo."""

from __future__ import annotations

import click


@click.group()
def models() -> None:
    """List and inspect the model zoo (models/)."""


@models.command("list")
def list_() -> None:
    """One line per zoo model: name, model, acceleration, δ, epochs, validation PSNR."""
    from robustkit.models.zoo import list_models, zoo_dir

    cards = list_models()
    if not cards:
        click.echo(f"the zoo {zoo_dir()} is empty; train a model with `robustkit train --model NAME`")
        return
    click.echo(f"{'name':<22}{'model':<9}{'accel':>6}{'δ':>6}{'epochs':>8}{'val PSNR':>10}  default")
    for c in cards:
        delta = c.get("config", {}).get("delta")
        psnr = c.get("validation", {}).get("val_psnr")
        click.echo(
            f"{c['folder']:<22}{c.get('model', '?'):<9}{c.get('data', {}).get('accel', float('nan')):>6g}"
            f"{'' if delta is None else f'{delta:g}':>6}{c.get('epochs_done', 0):>8}"
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
