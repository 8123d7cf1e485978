"""``robustkit attack | sweep-delta | init-test | audit | features | bound | shift | run``: the studies from the command line.

Each command builds the study's config from the options given (the rest keep the study's
defaults), runs it on zoo models or plug-ins (``--model FILE.py:FACTORY``, docs/api.md) and the
built-in data or a prepared file (``--data``, at its own size), writes
``reports/<study>-<timestamp>/``, prints a summary table and the report path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import click

from robustkit.choices import ATTACK_KINDS
from robustkit.errors import RobustkitError

#: a number > 0 (ball radii, step sizes, factors); NaN and ∞ are refused by the study's config.
POSITIVE = click.FloatRange(min=0, min_open=True)


def _eps_value(ctx, param, values):
    out = []
    for v in values:
        try:
            out.append(float(v))
        except ValueError:
            raise click.BadParameter(f"{v!r} is not a number; give ε as a fraction, e.g. --eps 0.05") from None
    return tuple(out)


DATA_HELP = ("'builtin' or a prepared HDF5 file (`robustkit data prepare`), read at its own image size; "
             "models trained on another size or data run with a warning. [default: builtin]")
SPLIT_HELP = ("Split of the data, or 'all'. [default: test when the file has splits, else all samples]")


def common_options(default_models: str) -> Callable:
    """Options every study command has."""

    def decorate(fn: Callable) -> Callable:
        options = [
            click.option("--model", "models", multiple=True, metavar="NAME|FILE.py:FACTORY",
                         help="Model (repeatable): a registry name (its default zoo entry), a zoo folder, a classical "
                              "baseline (sense, l1-wavelet, l1-wavelet:lam=0.001; docs/maths.md §13), or your own "
                              "network as FILE.py:FACTORY or package.module:FACTORY (a callable returning an nn.Module "
                              f"with forward(kspace, op); see docs/api.md). [default: {default_models}]"),
            click.option("--samples", type=click.IntRange(min=1), default=None, help="Use the first N slices of the split. [default: all]"),
            click.option("--split", default=None, help=SPLIT_HELP),
            click.option("--data", default=None, help=DATA_HELP),
            click.option("--accel", type=click.FloatRange(min=1), default=None,
                         help="Acceleration of the masks; a model trained at another one runs with a warning. [default: 4]"),
            click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Slices per batch. [default: 2]"),
            click.option("--reports-dir", type=click.Path(), default="reports", show_default=True,
                         help="Where run folders go (never overwritten)."),
            click.option("--resume", "resume", type=click.Path(), default=None, metavar="RUN_DIR",
                         help="Continue an interrupted run folder, skipping its completed cells."),
            click.option("--no-report", is_flag=True, help="Do not build the HTML report at the end."),
        ]
        for option in reversed(options):
            fn = option(fn)
        return fn

    return decorate


def _mapping(**values: Any) -> dict[str, Any]:
    """Config keys from options: drop the ones not given (None or empty)."""
    out = {}
    for key, value in values.items():
        if value is None or (isinstance(value, tuple) and not value):
            continue
        out[key] = list(value) if isinstance(value, tuple) else value
    return out


def _common(models, samples, split, data, accel, batch_size) -> dict[str, Any]:
    return _mapping(models=models, samples=samples, split=split, data=data, accel=accel, batch_size=batch_size)


def execute(obj: dict, name: str, mapping: dict[str, Any], reports_dir: str, resume: str | None,
            report: bool = True, where: str = "the options"):
    """Build the config, run the study, print its summary; returns the frame."""
    from robustkit.distributed import is_main
    from robustkit.studies import make_config, run

    obj = obj or {}
    if obj.get("seed_given") or not resume:
        mapping.setdefault("seed", obj.get("seed", 0))
    if resume:  # the options not given are the run's own: `--resume DIR` alone continues it
        mapping = {**_stored_settings(resume, name), **mapping}
    config = make_config(name, mapping, where)
    frame = run(name, config, device=obj.get("device", "auto"), reports_dir=reports_dir, resume=resume)
    if not is_main():  # under torchrun rank 0 alone prints and builds the report
        return frame
    run_dir = Path(frame.attrs["run_dir"])
    _summarize(name, frame, run_dir)
    if report:
        _report(run_dir)
    return frame


def _stored_settings(run_dir: str, name: str) -> dict[str, Any]:
    """The settings recorded in ``run_dir/config.json`` (without ``study``); ``{}`` when there are
    none, so that :meth:`~robustkit.studies.rundir.RunDir.resume` names what is wrong."""
    import json

    try:
        stored = json.loads((Path(run_dir) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(stored, dict) or stored.get("study") != name:
        return {}
    return {k: v for k, v in stored.items() if k != "study"}


def _summarize(name: str, frame, run_dir: Path) -> None:
    """Print a study's mean ± std table (flags as k/n, a ``!`` on unconverged solves), a warning per
    group with an unconverged solve, and where its results are."""
    from robustkit.studies import study_module
    from robustkit.studies.common import convergence_warnings, summary_table

    module = study_module(name)
    click.echo(f"\n{name}:")
    click.echo(summary_table(frame, module.SUMMARY_BY, module.SUMMARY_COLUMNS).to_string(index=False))
    for line in convergence_warnings(frame, module.SUMMARY_BY):
        click.echo(f"WARNING: {line}")
    click.echo(f"results: {run_dir / 'results.csv'}")


def _after_suite_study(run_dir: Path, report: bool) -> None:
    import json

    import pandas as pd

    name = json.loads((run_dir / "config.json").read_text())["study"]
    _summarize(name, pd.read_csv(run_dir / "results.csv"), run_dir)
    if report:
        _report(run_dir)


def _report(run_dir: Path) -> None:
    from robustkit.report import build_index, build_run_page

    try:
        page = build_run_page(run_dir)
        build_index(run_dir.parent)
    except RobustkitError as exc:  # the results are safe; say why the page is missing
        click.echo(f"robustkit: warning: no report page for {run_dir}: {exc}", err=True)
        return
    click.echo(f"report: {page}")
    _leaderboard(run_dir.parent)


def _leaderboard(root: Path) -> None:
    """Rebuild ``root/leaderboard.html`` and ``.csv`` from every stored run there."""
    from robustkit.report.leaderboard import build_leaderboard

    try:
        click.echo(f"leaderboard: {build_leaderboard(root)[1]}")
    except RobustkitError as exc:
        click.echo(f"robustkit: warning: no leaderboard for {root}: {exc}", err=True)



@click.command()
@click.option("--eps", "eps", multiple=True, callback=_eps_value, metavar="ε",
              help="Relative perturbation size ‖γ‖ ≤ ε‖b‖ (repeatable). [default: 0.01 0.02 0.05]")
@click.option("--kind", "kinds", multiple=True, type=click.Choice(ATTACK_KINDS),
              help="Attack kind (repeatable): the ℓ2-ball adversarial and gaussian, or the realistic spikes, "
                   "motion, coil-map whose size ε is defined in docs/maths.md §14. [default: adversarial gaussian]")
@click.option("--steps", type=click.IntRange(min=1), default=None, help="PGD steps per restart. [default: 10]")
@click.option("--restarts", type=click.IntRange(min=1), default=None, help="Random restarts; the per-slice worst is kept. [default: 1]")
@click.option("--step-size", type=POSITIVE, default=None, help="Step α relative to ε‖b‖. [default: 2.5/steps]")
@click.option("--optimizer", type=click.Choice(["pgd", "adam"]), default=None, help="PGD-ℓ2 or projected Adam. [default: pgd]")
@click.option("--target", type=click.Choice(["clean", "ground_truth"]), default=None,
              help="Push the reconstruction away from the clean one or from the ground truth. [default: clean]")
@click.option("--roi", type=click.Choice(["none", "support"]), default=None, help="Region of interest of the attack loss. [default: none]")
@click.option("--draws", type=click.IntRange(min=1), default=None, help="Gaussian draws averaged per slice. [default: 4]")
@click.option("--candidates", type=click.IntRange(min=1), default=None,
              help="Realistic kinds: perturbations searched per slice (spike positions, motion angles over [−ε, ε] rad, "
                   "map directions); the most damaging is kept, 1 = no search. [default: 5]")
@click.option("--spikes", type=click.IntRange(min=1), default=None,
              help="Corrupted k-space samples of --kind spikes; together ‖γ‖ = ε‖b‖. [default: 4]")
@click.option("--motion-lines", type=click.FloatRange(min=0, max=1, min_open=True), default=None,
              help="--kind motion: the fraction of the measured phase-encode lines acquired after the patient moved. [default: 0.5]")
@common_options("modl mol mnmmol")
@click.pass_obj
def attack(obj, eps, kinds, steps, restarts, step_size, optimizer, target, roi, draws, candidates, spikes, motion_lines,
           models, samples, split, data, accel, batch_size, reports_dir, resume, no_report) -> None:
    """Attack the measured k-space of each model (docs/maths.md §7) and report the damage.

    Adversarial: projected gradient ascent on ‖f(b+γ) − f(b)‖² within ‖γ‖ ≤ ε‖b‖ on the sampled
    locations; DEQ models are differentiated through their fixed point. Gaussian: random γ of the
    same size. Realistic (docs/maths.md §14): spikes (a few corrupted samples, ‖γ‖ = ε‖b‖), motion
    (rotation up to ε rad and translation ε·W px for the last lines), coil-map (maps off by
    ‖S̃ − S‖ = ε‖S‖); the worst of --candidates per slice is kept. Examples:

    \b
        robustkit attack --model mnmmol --eps 0.05

    \b
        robustkit attack --kind spikes --kind motion --kind coil-map --eps 0.02
    """
    mapping = {**_common(models, samples, split, data, accel, batch_size),
               **_mapping(eps=eps, kinds=kinds, steps=steps, restarts=restarts, step_size=step_size,
                          optimizer=optimizer, target=target, roi=roi, draws=draws,
                          candidates=candidates, spikes=spikes, motion_lines=motion_lines)}
    execute(obj, "attack", mapping, reports_dir, resume, not no_report)


@click.command("sweep-delta")
@click.option("--deltas", "deltas", multiple=True, type=POSITIVE, metavar="δ",
              help="Compare only MnM-MOL models trained with these δ (repeatable). [default: every MnM-MOL in the zoo]")
@click.option("--train", is_flag=True, help="Train the MnM-MOL models missing from the zoo for --deltas first (slow).")
@click.option("--common-delta", type=POSITIVE, default=None, help="δ at which every model's L is also measured. [default: 0.3]")
@click.option("--eps", "adv_eps", type=click.FloatRange(min=0), default=None, help="ε of the adversarial attack. [default: 0.05]")
@common_options("every MnM-MOL in the zoo")
@click.pass_obj
def sweep_delta(obj, deltas, train, common_delta, adv_eps, models, samples, split, data, accel, batch_size,
                reports_dir, resume, no_report) -> None:
    """Compare MnM-MOL models trained with different ball radii δ: quality, L[H_θ] at their own
    and a common δ, the fraction within 1 − m, init-test success and adversarial damage. Example:

    \b
        robustkit sweep-delta --deltas 0.05 --deltas 0.1 --deltas 0.3 --deltas 0.5
    """
    mapping = {**_common(models, samples, split, data, accel, batch_size),
               **_mapping(deltas=deltas, common_delta=common_delta, adv_eps=adv_eps, train=train or None)}
    execute(obj, "sweep-delta", mapping, reports_dir, resume, not no_report)


@click.command("init-test")
@click.option("--start", "starts", multiple=True,
              type=click.Choice(["sense", "zero_filled", "zeros", "ball", "noise"]), help="Starts to try (repeatable). [default: all]")
@click.option("--radius", "radii", multiple=True, type=click.FloatRange(min=0), help="Ball-start radius in units of δ‖x*‖ (repeatable). [default: 0.1 0.5 1]")
@click.option("--delta", type=POSITIVE, default=None, help="Ball radius δ. [default: each model's own, else 0.3]")
@click.option("--cap-factor", type=POSITIVE, default=None, help="Iteration cap as a multiple of the training cap. [default: 3]")
@common_options("mol mnmmol")
@click.pass_obj
def init_test(obj, starts, radii, delta, cap_factor, models, samples, split, data, accel, batch_size,
              reports_dir, resume, no_report) -> None:
    """Iterate each DEQ model from several starts (docs/maths.md §8) and check they reach the fixed point
    of the SENSE start: iterations, residual, distance, residual traces. Example:

    \b
        robustkit init-test --model mnmmol
    """
    mapping = {**_common(models, samples, split, data, accel, batch_size),
               **_mapping(starts=starts, radii=radii, delta=delta, cap_factor=cap_factor)}
    execute(obj, "init-test", mapping, reports_dir, resume, not no_report)


@click.command()
@click.option("--delta", type=POSITIVE, default=None, help="Ball radius δ. [default: each model's own, else 0.3]")
@click.option("--steps", type=click.IntRange(min=1), default=None, help="Ascent steps per restart. [default: 20]")
@click.option("--restarts", type=click.IntRange(min=1), default=None, help="Ascent restarts. [default: 2]")
@click.option("--power-iters", type=click.IntRange(min=1), default=None, help="Cap on the Lanczos steps (one Jv and one Jᵀw each) for ‖J_H‖₂; it stops earlier only once the estimate has plateaued. [default: 100]")
@common_options("modl mol mnmmol")
@click.pass_obj
def audit(obj, delta, steps, restarts, power_iters, models, samples, split, data, accel, batch_size,
          reports_dir, resume, no_report) -> None:
    """Per slice: lower bounds of L[H_θ](x*; δ) (random-start ball ascent, slow-mode and
    top-singular seeded pairs, the Jacobian spectral norm at x*), pass/fail of the LARGEST against
    1 − m, the observed contraction rate of the plain iteration (flagged when it exceeds that bound),
    and each model's end-to-end amplification. Example:

    \b
        robustkit audit --model mnmmol --delta 0.3
    """
    mapping = {**_common(models, samples, split, data, accel, batch_size),
               **_mapping(delta=delta, steps=steps, restarts=restarts, power_iters=power_iters)}
    execute(obj, "audit", mapping, reports_dir, resume, not no_report)


@click.command()
@click.option("--feature", "features", multiple=True, type=click.Choice(["disc", "gaussian", "cross"]),
              help="Feature kind to insert (repeatable). [default: all three]")
@click.option("--size", "sizes", multiple=True, type=click.IntRange(min=1), metavar="PX",
              help="Feature size in pixels: disc diameter, Gaussian FWHM, cross span (repeatable). [default: 2 4 8]")
@click.option("--contrast", "contrasts", multiple=True, type=POSITIVE,
              help="Feature amplitude relative to the local intensity (repeatable). [default: 0.2 0.5]")
@click.option("--positions", type=click.IntRange(min=1), default=None,
              help="Random centres inside the anatomy per feature, size and contrast. [default: 2]")
@click.option("--search", "searches", multiple=True, type=click.Choice(["random", "adversarial"]),
              help="random: the random positions; adversarial (FNAF): the worst of them and --budget more. [default: both]")
@click.option("--budget", type=click.IntRange(min=0), default=None,
              help="Extra random candidates (kind and centre) of the adversarial search per size and contrast. [default: 8]")
@click.option("--threshold", type=click.FloatRange(min=0, max=1, min_open=True), default=None,
              help="Detector threshold on the recovered contrast and the correlation with the template. [default: 0.5]")
@common_options("modl mol mnmmol")
@click.pass_obj
def features(obj, features, sizes, contrasts, positions, searches, budget, threshold,
             models, samples, split, data, accel, batch_size, reports_dir, resume, no_report) -> None:
    """Insert small features (discs, Gaussian blobs, crosses) into the ground truth inside the
    anatomy, measure them through the same coils and mask (b + A x_f), and check whether each model
    recovers them (docs/maths.md §11): error in the feature region, contrast recovered, and a
    matched-filter detection; a feature not detected is a false negative. The adversarial search
    (FNAF) keeps, per size and contrast, the candidate the model loses most. Example:

    \b
        robustkit features --model mnmmol --size 2 --size 4 --contrast 0.5
    """
    mapping = {**_common(models, samples, split, data, accel, batch_size),
               **_mapping(features=features, sizes=sizes, contrasts=contrasts, positions=positions,
                          searches=searches, budget=budget, threshold=threshold)}
    execute(obj, "features", mapping, reports_dir, resume, not no_report)


@click.command()
@click.option("--eps", "eps", multiple=True, callback=_eps_value, metavar="ε",
              help="Relative attack radius ‖γ‖ ≤ ε‖b‖ (repeatable). [default: 0.01 0.05]")
@click.option("--adv-steps", type=click.IntRange(min=1), default=None, help="PGD steps of the attack. [default: 10]")
@click.option("--adv-restarts", type=click.IntRange(min=1), default=None, help="Random restarts of the attack. [default: 1]")
@click.option("--delta", type=POSITIVE, default=None, help="Ball radius δ of the L estimates. [default: each model's own, else 0.3]")
@click.option("--steps", type=click.IntRange(min=1), default=None, help="Ball-ascent steps per restart. [default: 20]")
@click.option("--restarts", type=click.IntRange(min=1), default=None, help="Ball-ascent restarts. [default: 2]")
@click.option("--power-iters", type=click.IntRange(min=1), default=None, help="Cap on the Lanczos steps for ‖J_H‖₂. [default: 100]")
@common_options("mol mnmmol")
@click.pass_obj
def bound(obj, eps, adv_steps, adv_restarts, delta, steps, restarts, power_iters, models, samples, split, data, accel,
          batch_size, reports_dir, resume, no_report) -> None:
    """The monotone bound against the measured attack (docs/maths.md §12): per DEQ model, slice and
    L estimator (ball, slow, top, power, max) at the clean fixed point, m_eff = 1 − L and the bound
    ‖x*(b+γ) − x*(b)‖/‖Aᴴγ‖ ≤ 1/m_eff beside the ratio a PGD attack measures. Status: holds,
    vacuous (m_eff ≤ 0) or violated (the measured ratio exceeds the bound beyond the solves' slack:
    proof that the local constraint fails there, when both solves converged). MOL is checked on
    its own fixed-point equation. Example:

    \b
        robustkit bound --model mnmmol --eps 0.05
    """
    mapping = {**_common(models, samples, split, data, accel, batch_size),
               **_mapping(eps=eps, adv_steps=adv_steps, adv_restarts=adv_restarts, delta=delta, steps=steps,
                          restarts=restarts, power_iters=power_iters)}
    execute(obj, "bound", mapping, reports_dir, resume, not no_report)


@click.command()
@click.option("--axis", "axes", multiple=True, type=click.Choice(["accel", "mask", "noise", "coils", "anatomy"]),
              help="Axis to shift, one at a time, the others held nominal (repeatable). [default: all five]")
@click.option("--eval-accel", "accels", multiple=True, type=click.FloatRange(min=1), metavar="A",
              help="Acceleration of the accel axis (repeatable); --accel stays the nominal one. [default: 2 4 6 8]")
@click.option("--mask", "masks", multiple=True, type=click.Choice(["random", "equispaced", "variable-density-2d"]),
              help="Mask kind of the mask axis (repeatable; random is the nominal). [default: all three]")
@click.option("--noise", "noises", multiple=True, type=click.FloatRange(min=0), metavar="σ",
              help="Relative k-space noise σ of the noise axis (repeatable; 0 is the nominal). [default: 0.01 0.02 0.05 0.1]")
@click.option("--coils", "coils", multiple=True, type=click.IntRange(min=1), metavar="N",
              help="Coils kept on the coils axis, evenly spaced, maps renormalised, k-space re-simulated "
                   "(repeatable; all coils is the nominal). [default: 8 4]")
@click.option("--anatomy", "anatomy", multiple=True, metavar="PLANE|FILE",
              help="Anatomy axis: a plane of the built-in data (axial, coronal, sagittal; built and cached on first "
                   "use) or a prepared HDF5 file (repeatable; --data is the nominal). [default: coronal sagittal]")
@common_options("modl mol mnmmol")
@click.pass_obj
def shift(obj, axes, accels, masks, noises, coils, anatomy, models, samples, split, data, accel, batch_size,
          reports_dir, resume, no_report) -> None:
    """Evaluate each model under acquisitions it was not trained for, one axis at a time
    (docs/studies.md, shift): acceleration, mask kind, k-space noise, fewer coils, other anatomy.
    Per condition: PSNR/SSIM, the drop from the nominal condition and, for DEQs, whether the
    solves converged. Example:

    \b
        robustkit shift --model modl --model mnmmol --axis accel --eval-accel 2 --eval-accel 8
    """
    mapping = {**_common(models, samples, split, data, accel, batch_size),
               **_mapping(axes=axes, accels=accels, masks=masks, noises=noises, coils=coils, anatomy=anatomy)}
    execute(obj, "shift", mapping, reports_dir, resume, not no_report)


@click.command("run")
@click.argument("study_file", metavar="SUITE_OR_FILE")
@click.option("--reports-dir", type=click.Path(), default="reports", show_default=True, help="Where run folders go.")
@click.option("--resume", type=click.Path(), default=None, metavar="SUITE_DIR", help="Continue an interrupted suite folder.")
@click.option("--no-report", is_flag=True, help="Do not build the HTML report at the end.")
@click.option("--data", default=None, help="Run every study of the file on this data instead. " + DATA_HELP.split("; ")[0] + ".")
@click.option("--split", default=None, help="Run every study of the file on this split instead ('all': every sample).")
@click.pass_obj
def run_file(obj, study_file, reports_dir, resume, no_report, data, split) -> None:
    """Run every study of a shipped suite or a TOML study file: `robustkit run quick` (a short look
    at every shipped model), `robustkit run paper` (the full-size run) or
    `robustkit run my.toml`. An existing file wins over a shipped suite of the same name.

    The file has one table per study ([attack], [init-test], [audit], [sweep-delta], [features], [bound], [shift]) with that
    study's keys, and an optional [defaults] table applied to all of them; --data and --split
    replace the file's data and split in every study, e.g.
    `robustkit run quick --data knees.h5`. Writes one run folder per study and a
    suite folder reports/<file>-<timestamp>/ with suite.json.
    """
    from robustkit.distributed import is_main
    from robustkit.studies.suite import run_suite

    suite_dir = run_suite(study_file, obj or {}, reports_dir, resume, overrides=_mapping(data=data, split=split),
                          on_study=lambda run_dir: _after_suite_study(run_dir, not no_report))
    if not is_main():  # under torchrun rank 0 alone prints and builds the report
        return
    if not no_report:
        from robustkit.report import build_index, build_suite_page

        try:
            click.echo(f"report: {build_suite_page(suite_dir)}")
        except RobustkitError as exc:
            click.echo(f"robustkit: warning: the suite page is incomplete: {exc}", err=True)
        build_index(Path(suite_dir).parent)
        _leaderboard(Path(suite_dir).parent)
    click.echo(f"suite: {suite_dir}")
