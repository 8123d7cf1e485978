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
@click.option("--limit", type=int, default=None, help="Check at most this many slices per split.")
@click.option("--write-card", is_flag=True, help="Store the summary on the model's card (weights unchanged).")
@click.pass_obj
def check(obj, name: str, splits: tuple[str, ...], limit: int | None, write_card: bool) -> None:
    """Convergence checks of a DEQ zoo model on the built-in data: fixed-point residual from SENSE,
    L[H_θ](x*; δ) (ball and slow-mode ascent) against 1 − m, and starts inside the ball. Then the
    solver validity: whether only the damped step (1−γ)x + γ(H_θ(x) + Aᴴb) contracts (keep the
    reference's γ = 0.1) or H_θ itself does (γ = 1 with Anderson is valid)."""
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
        summary["solver_validity"] = _solver_validity(model, ds, device, limit, obj.get("seed", 0), split)
    if write_card:
        folder = resolve(name)
        save_model(folder, model, {**card, "checks": {"delta": delta, "threshold": threshold, "command": f"robustkit models check {name} " + " ".join(f"--split {s}" for s in splits), **results}})


def _solver_validity(model, dataset, device, limit: int | None, seed: int, split: str) -> dict:
    """Print and return which fixed-point solver the model's contraction allows (damped step only, or
    H_θ itself: γ = 1 with Anderson), from lower bounds of L at each slice's fixed point."""
    from robustkit.analysis.solver_validity import summarize_validity, validity_rows

    s = summarize_validity(validity_rows(model, dataset, device, limit=limit, seed=seed))
    if s["gamma"] == s["gamma"]:  # a damped H_θ step (MnM-MOL)
        click.echo(f"{split} solver validity (lower bounds, {s['n']} slices): max L[H_θ] = {s['L_H_max']:.5f}, "
                   f"max L[(1−γ)I + γH_θ] = {s['L_step_max']:.5f} at γ = {s['gamma']:g}: {s['explanation']}")
    else:
        click.echo(f"{split} solver validity (lower bounds, {s['n']} slices): max L[update map] = "
                   f"{s['L_step_max']:.5f}: {s['explanation']}")
    return s


@models.command("evaluate")
@click.argument("names", nargs=-1, required=True)
@click.option("--split", default="test", show_default=True, help="Split of the built-in data to score on.")
@click.option("--accel", type=float, default=4.0, show_default=True)
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


@models.command("import")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--from", "layout", required=True, type=click.Choice(["mnmmol-ref", "mol-ref", "modl-ref"]),
              help="Reference code that saved FILE: mnmmol-ref (maneeshrj/MnM-MOL, deGrad in DEQ), mol-ref "
                   "(anikpram/Monotone-Operator-Learning, fwdbwdBlock in DEQ), modl-ref (maneeshrj/MnM-MOL's MoDL notebook).")
@click.option("--name", required=True, help="Name of the new zoo entry (letters, digits, '.', '_', '-').")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Folder of the new entry (default $ROBUSTKIT_ZOO/NAME, else ./models/NAME); never overwritten.")
@click.option("--accel", type=float, default=None,
              help="Acceleration the model was trained at (default: the reference settings, 4 for MnM-MOL/MoDL, 6 for MOL).")
@click.option("--scale", type=float, default=1.0, show_default=True,
              help="Image scale s of the reference data relative to robustkit's (max|x| = 1): folded into F_θ as "
                   "F(s·x)/s. Leave 1 unless you know the reference images' scale (docs/import.md).")
@click.option("--alpha", type=float, default=None, help="MOL step α (mol-ref only; default 0.01 as in trn_mol.py).")
@click.option("--K", "K", type=int, default=None, help="Unrolled iterations K (modl-ref only; default 10).")  # noqa: N803
def import_cmd(file: str, layout: str, name: str, out: str | None, accel: float | None, scale: float,
               alpha: float | None, K: int | None) -> None:  # noqa: N803 - the paper's name
    """Import a checkpoint trained with the authors' public code (FILE, e.g. model_best_trn.pth.tar) as a
    zoo entry: weights.safetensors plus a card with the source file's sha256, the key mapping and the
    conventions applied. The file is read with weights_only=True (a pickle that needs code execution is
    refused, never run) and mapped to the CPU. The reference solver is carried over (MnM-MOL: damped
    step γ = 0.1, tol 2e-4, cap 200; MOL: α, tol 1e-4, cap 500); `robustkit models check NAME` tells
    whether γ = 1 with Anderson would also be valid."""
    import shlex

    from robustkit.errors import RobustkitError
    from robustkit.models.importers import import_checkpoint

    overrides = {}
    if alpha is not None:
        if layout != "mol-ref":
            raise RobustkitError(f"--alpha applies to --from mol-ref only, not {layout}; drop it")
        overrides["alpha"] = alpha
    if K is not None:
        if layout != "modl-ref":
            raise RobustkitError(f"--K applies to --from modl-ref only, not {layout}; drop it")
        if K < 1:
            raise RobustkitError(f"--K must be ≥ 1, got {K}")
        overrides["K"] = K
    options = {"--out": out, "--accel": accel, "--scale": None if scale == 1.0 else scale, "--alpha": alpha, "--K": K}
    command = " ".join(["robustkit models import", shlex.quote(file), "--from", layout, "--name", shlex.quote(name)]
                       + [f"{k} {shlex.quote(str(v))}" for k, v in options.items() if v is not None])
    folder, card = import_checkpoint(file, layout, name, out=out, accel=accel, scale=scale, overrides=overrides,
                                     command=command)
    c = card["config"]
    click.echo(f"imported {card['source']['file']} ({layout}, sha256 {card['source']['sha256'][:12]}…) as "
               f"{card['model']} into {folder}: width {c['width']}, depth {c['depth']}, λ = {c['lam']:.4g}")
    click.echo(f"evaluate it with `robustkit models evaluate {folder}`")
