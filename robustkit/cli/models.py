"""``robustkit models``: the model zoo."""

from __future__ import annotations

import click


@click.group()
def models() -> None:
    """List and inspect the model zoos: yours (--zoo, $ROBUSTKIT_ZOO or ./models; train writes
    there) and the read-only zoo shipped with robustkit. A name is looked up in yours first."""


@models.command("list")
def list_() -> None:
    """One line per zoo model: name, model, acceleration, δ, epochs (all training stages of its
    card's ``lineage``, when it has one), validation PSNR, default, and which zoo holds it (user or
    shipped). Each model's weights are verified; a broken entry is listed as unusable, with the
    reason, and does not affect the others. Then the built-in classical baselines (sense,
    l1-wavelet), which every study and `models evaluate` also take as --model."""
    from robustkit.locations import shipped_zoo
    from robustkit.models.zoo import user_zoo, zoo_entries

    entries = zoo_entries(verify=True)
    if not entries:
        click.echo(f"no models in your zoo {user_zoo()} nor in the shipped zoo {shipped_zoo()}; "
                   "train one with `robustkit train --model NAME`")
        _list_baselines()
        return
    click.echo(f"{'name':<22}{'model':<9}{'accel':>6}{'δ':>6}{'epochs':>8}{'val PSNR':>10}  {'default':<8}zoo")
    for e in entries:
        zoo = e.zoo + (" (shadowed by yours)" if e.shadowed else "")
        if not e.usable:
            click.echo(f"{e.name:<22}unusable ({zoo}): {e.error}")
            continue
        c = e.card
        delta = c.get("config", {}).get("delta")
        psnr = c.get("validation", {}).get("val_psnr")
        epochs = sum(stage.get("epochs", 0) for stage in c["lineage"]) if c.get("lineage") else c.get("epochs_done", 0)
        click.echo(
            f"{e.name:<22}{c['model']:<9}{c.get('data', {}).get('accel', float('nan')):>6g}"
            f"{'' if delta is None else f'{delta:g}':>6}{epochs:>8}"
            f"{'' if psnr is None else f'{psnr:.2f}':>10}  {'yes' if c.get('default') else '':<8}{zoo}"
        )
    click.echo(f"user zoo: {user_zoo()}; shipped zoo (read-only): {shipped_zoo()}")
    _list_baselines()


def _list_baselines() -> None:
    """The built-in baselines with their default settings (docs/maths.md §13)."""
    from robustkit.models.baselines import DEFAULTS

    click.echo("built-in baselines (no weights; settings as NAME:KEY=VALUE,..., e.g. l1-wavelet:lam=0.003):")
    what = {"sense": "CG-SENSE, the DEQs' initialisation", "l1-wavelet": "ℓ1-wavelet (Haar) compressed sensing by FISTA"}
    for name, settings in DEFAULTS.items():
        click.echo(f"{name:<22}{what[name]}; " + ", ".join(f"{k}={v:g}" for k, v in settings.items()))


@models.command("show")
@click.argument("name")
def show(name: str) -> None:
    """Print a zoo model's card (JSON) after verifying its weights."""
    import json

    from robustkit.errors import RobustkitError
    from robustkit.models.baselines import is_baseline_ref
    from robustkit.models.zoo import load_model

    if is_baseline_ref(name):
        raise RobustkitError(f"{name} is a classical baseline, not a zoo model: it has no card (its settings: robustkit models list)")
    _, card = load_model(name)
    click.echo(json.dumps(card, indent=2, sort_keys=True))


def _zoo_relabelled(refs, models):
    """``models`` (one per ref, every name checked first) without a second entry for a zoo folder
    already listed, zoo models labelled as the studies label them
    (:func:`robustkit.models.zoo.zoo_references`)."""
    from robustkit.models.zoo import zoo_references

    zoo = zoo_references(list(refs))
    out = []
    for i, model in enumerate(models):
        if i in zoo:
            if zoo[i] is None:
                continue
            model.name = zoo[i][1]
        out.append(model)
    return out


def _warn_mismatch(name: str, card: dict, info) -> dict:
    """Warn (one line) when ``info``'s data differs from the card's training data; returns the difference."""
    from robustkit.models.mismatch import warn_mismatch

    return warn_mismatch(name, card, info.name, info.shape, info.accel)


DATA_HELP = "'builtin' or a prepared HDF5 file (`robustkit data prepare`), read at its own image size."


def check_warnings(summary: dict[str, float], threshold: float) -> list[str]:
    """The lines ``models check`` prints under a split whose checks fail."""
    out = []
    if summary["converged"] < 1:
        out.append(f"the SENSE-started solve converged on {summary['converged']:.0%} of slices; numbers of unconverged slices are not of a fixed point")
    if summary["L_le_T"] < 1:
        out.append(f"L[H_θ] ≤ {threshold:g} fails on {1 - summary['L_le_T']:.0%} of slices under the largest lower bound (max {summary['L_max_max']:.4f})")
    if summary["rate_exceeds_L"] > 0:
        out.append(f"the observed contraction rate (max {summary['rate_max']:.4f}) exceeds the largest L estimate on "
                   f"{summary['rate_exceeds_L']:.0%} of slices: the estimates miss a direction")
    if summary["jacobian_converged"] < 1:
        out.append(f"the Lanczos estimate of ‖J_H‖₂ did not converge on {1 - summary['jacobian_converged']:.0%} of slices (its value is still a lower bound)")
    return out


@models.command("check")
@click.argument("name", metavar="NAME|FILE.py:FACTORY")
@click.option("--data", default="builtin", show_default=True, help=DATA_HELP)
@click.option("--split", "splits", multiple=True,
              help="Splits to check (repeatable), or 'all'. [default: test when the file has splits, else all samples]")
@click.option("--accel", type=click.FloatRange(min=1), default=None, help="Acceleration of the masks. [default: the zoo card's, else 4]")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Check at most this many slices per split.")
@click.option("--write-card", is_flag=True, help="Store the summary on the model's card (weights unchanged).")
@click.pass_obj
def check(obj, name: str, data: str, splits: tuple[str, ...], accel: float | None, limit: int | None, write_card: bool) -> None:
    """Convergence checks of a DEQ model on the built-in data or a prepared file: fixed-point
    residual from SENSE; the largest LOWER bound of L[H_θ](x*; δ) found (random-start ball ascent,
    slow-mode and top-singular seeded pairs, Lanczos ‖J_H‖₂) against 1 − m; the observed
    contraction rate of the plain iteration x⁺ = H_θ(x) + Aᴴb, flagged when it exceeds that bound
    (the estimates miss a direction; docs/certificates.md); and starts inside the ball. For
    robustkit's own models, then the solver validity: whether only the damped step
    (1−γ)x + γ(H_θ(x) + Aᴴb) contracts (keep the reference's γ = 0.1) or H_θ itself does (γ = 1 with
    Anderson is valid). A model trained on another image size or data runs with a warning.

    NAME is a zoo model or your own fixed-point network (FILE.py:FACTORY or package.module:FACTORY
    returning an nn.Module with fixed_point_map(kspace, op) and H_map(op); docs/api.md). Example:

    \b
        robustkit models check mnmmol --data knees.h5 --limit 4
    """
    import json

    from robustkit.analysis.checks import deq_checks, summarize_checks
    from robustkit.data.evaluation import eval_dataset
    from robustkit.device import resolve_device
    from robustkit.errors import RobustkitError
    from robustkit.models.adapter import as_model
    from robustkit.models.zoo import resolve, save_model

    obj = obj or {}
    device = resolve_device(obj.get("device", "auto"))
    if limit is not None and limit < 1:
        raise RobustkitError(f"--limit must be >= 1, got {limit}")
    lm = as_model(name, map_location=str(device))
    if write_card and lm.source != "zoo":
        raise RobustkitError(f"{name} is not a zoo model and has no card; drop --write-card")
    lm.require("H_map", "models check")
    delta = lm.delta if lm.delta is not None else 0.3
    threshold = 1 - (lm.m if lm.m is not None else 0.02)
    accel = accel if accel is not None else lm.card.get("data", {}).get("accel", 4.0)
    datasets = [eval_dataset(data, split, accel, obj.get("seed", 0), limit) for split in (splits or (None,))]
    _warn_mismatch(lm.name, lm.card, datasets[0][1])
    results = {}
    for ds, info in datasets:
        rows = deq_checks(lm, ds, delta, device)
        summary = summarize_checks(rows, threshold)
        results[info.split] = summary
        click.echo(f"{info.split}: " + json.dumps({k: None if v != v else round(v, 4) for k, v in summary.items()}))
        for warning in check_warnings(summary, threshold):
            click.echo(f"{info.split}: WARNING: {warning}")
        if lm.source == "zoo":  # the validity check reads the built-in models' solver config
            summary["solver_validity"] = _solver_validity(lm.model, ds, device, None, obj.get("seed", 0), info.split,
                                                          [r["L_max"] for r in rows])
    if write_card:
        folder = resolve(name)
        where = "" if data == "builtin" else f"--data {data} "
        command = f"robustkit models check {name} {where}" + " ".join(f"--split {s}" for s in results)
        save_model(folder, lm.model, {**lm.card, "checks": {"delta": delta, "threshold": threshold, "data": data,
                                                            "command": command, **results}})


def _solver_validity(model, dataset, device, limit: int | None, seed: int, split: str,
                     known_L_H: list[float] | None = None) -> dict:
    """Print and return which fixed-point solver the model's contraction allows (damped step only, or
    H_θ itself: γ = 1 with Anderson), from lower bounds of L at each slice's fixed point; ``known_L_H``
    are the checks' own largest bounds per slice, so the two lines never disagree."""
    from robustkit.analysis.solver_validity import summarize_validity, validity_rows

    s = summarize_validity(validity_rows(model, dataset, device, limit=limit, seed=seed, known_L_H=known_L_H))
    if s["gamma"] == s["gamma"]:  # a damped H_θ step (MnM-MOL)
        click.echo(f"{split} solver validity (lower bounds, {s['n']} slices): max L[H_θ] = {s['L_H_max']:.5f}, "
                   f"max L[(1−γ)I + γH_θ] = {s['L_step_max']:.5f} at γ = {s['gamma']:g}: {s['explanation']}")
    else:
        click.echo(f"{split} solver validity (lower bounds, {s['n']} slices): max L[update map] = "
                   f"{s['L_step_max']:.5f}: {s['explanation']}")
    return s


@models.command("evaluate")
@click.argument("names", nargs=-1, required=True, metavar="NAME|FILE.py:FACTORY...")
@click.option("--data", default="builtin", show_default=True, help=DATA_HELP)
@click.option("--split", default=None, help="Split to score on, or 'all'. [default: test when the file has splits, else all samples]")
@click.option("--samples", type=click.IntRange(min=1), default=None, help="Score the first N slices of the split. [default: all]")
@click.option("--accel", type=click.FloatRange(min=1), default=4.0, show_default=True,
              help="Acceleration of the evaluation masks; a model trained at another one runs with a warning.")
@click.pass_obj
def evaluate_cmd(obj, names: tuple[str, ...], data: str, split: str | None, samples: int | None, accel: float) -> None:
    """PSNR / SSIM / NMSE (mean ± std over slices) of models and the SENSE init on the built-in
    data or a prepared file, at the data's own image size. DEQ models are solved tightly (their eval
    tolerance) and report iterations, convergence and the observed contraction rate of the plain
    iteration x⁺ = H_θ(x) + Aᴴb near the fixed point (a rate above 1 − m contradicts the
    certificate L[H_θ] ≤ 1 − m and is flagged). A model trained on another size,
    acceleration or data runs with a warning.

    NAMES are zoo models, the classical baselines sense and l1-wavelet (settings as
    l1-wavelet:lam=0.001,iters=200; docs/maths.md §13) or your own networks (FILE.py:FACTORY or
    package.module:FACTORY; docs/api.md). Example:

    \b
        robustkit models evaluate modl mol mnmmol sense l1-wavelet --data knees.h5 --samples 4
    """
    import pandas as pd

    from robustkit.data.evaluation import eval_dataset
    from robustkit.device import resolve_device
    from robustkit.errors import RobustkitError
    from robustkit.evaluate import evaluate
    from robustkit.models.adapter import as_model
    from robustkit.studies.common import unique_names

    obj = obj or {}
    if samples is not None and samples < 1:
        raise RobustkitError(f"--samples must be >= 1, got {samples}")
    device = resolve_device(obj.get("device", "auto"))
    ds, info = eval_dataset(data, split, accel, obj.get("seed", 0), samples)
    from robustkit.data.prepared import missing_targets, no_target_error

    missing = missing_targets(ds)
    if missing:
        raise no_target_error(data, missing, len(ds), "PSNR, SSIM and NMSE cannot be scored")
    models = unique_names(_zoo_relabelled(names, [as_model(name, map_location=str(device)) for name in names]))
    # the sense baseline with its default settings is the DEQs' initialisation: named, it replaces the SENSE row
    frames = [] if any(lm.name == "sense" for lm in models) else [pd.DataFrame(evaluate(None, ds, device)).assign(model="SENSE")]
    for lm in models:
        _warn_mismatch(lm.name, lm.card, info)
        frames.append(pd.DataFrame(evaluate(lm, ds, device, rate=True)).assign(model=lm.name))
    df = pd.concat(frames)
    cols = [c for c in ("psnr", "ssim", "nmse", "iterations", "converged", "rate") if c in df]
    agg = df.groupby("model", sort=False)[cols].agg(["mean", "std"])
    agg.loc[:, (slice(None), "std")] = agg.loc[:, (slice(None), "std")].where(
        df.groupby("model", sort=False)[cols].count().to_numpy() != 1, 0.0)  # one slice: spread 0, as the studies print
    h, w = info.shape
    what = "all samples" if info.split == "all" else f"{info.split} split"
    click.echo(f"{info.name} ({what}), {info.n} slices of {h}x{w}, {info.accel:.3g}×")
    click.echo(agg.round(4).to_string())
    for model_name, rows in df.groupby("model", sort=False):
        if "converged" in rows and rows["converged"].notna().any() and not rows["converged"].astype(bool).all():
            click.echo(f"WARNING: {model_name}: solve converged on {int(rows['converged'].astype(bool).sum())} of "
                       f"{len(rows)} slices; its numbers are not of a fixed point there")
        if "rate_gt_T" in rows and rows["rate_gt_T"].fillna(False).astype(bool).any():
            click.echo(f"WARNING: {model_name}: observed contraction rate up to {rows['rate'].max():.4f} exceeds 1 − m on "
                       f"{int(rows['rate_gt_T'].fillna(False).astype(bool).sum())} of {len(rows)} slices: L[H_θ] ≤ 1 − m cannot hold there")


@models.command("import")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--from", "layout", required=True, type=click.Choice(["mnmmol-ref", "mol-ref", "modl-ref"]),
              help="Reference code that saved FILE: mnmmol-ref (maneeshrj/MnM-MOL, deGrad in DEQ), mol-ref "
                   "(anikpram/Monotone-Operator-Learning, fwdbwdBlock in DEQ), modl-ref (maneeshrj/MnM-MOL's MoDL notebook).")
@click.option("--name", required=True, help="Name of the new zoo entry (letters, digits, '.', '_', '-').")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Folder of the new entry (default NAME in your zoo: --zoo, $ROBUSTKIT_ZOO or ./models); never overwritten.")
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
