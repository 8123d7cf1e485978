"""``robustkit data build``: build (or reuse) the built-in MNI152 multi-coil dataset."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Output file [default: the cache, $ROBUSTKIT_CACHE or ~/.cache/robustkit].")
@click.option("--resolution", type=click.Choice(["2", "1"]), default="2", show_default=True,
              help="Template resolution in mm: 2 gives 120 x 104 slices, 1 gives 240 x 200 (GPU).")
@click.option("--coils", type=click.IntRange(min=2), default=12, show_default=True, help="Number of simulated coils.")
@click.option("--plane", type=click.Choice(["axial", "coronal", "sagittal"]), default="axial", show_default=True,
              help="Slice plane of the template: axial (120 x 104 at 2 mm), coronal (120 x 104) or sagittal "
                   "(104 x 120); each plane is its own cache file (docs/data.md).")
@click.option("--overwrite", is_flag=True, help="Rebuild even if the file exists.")
@click.option("--sense-report", is_flag=True,
              help="Also print SENSE PSNR/SSIM at 4x and 6x on the test split (with and without 1 % noise).")
def build(out: Path | None, resolution: str, coils: int, plane: str, overwrite: bool, sense_report: bool) -> None:
    """Build the built-in dataset (MNI152 brain slices, simulated coils; no download) and summarise it."""
    from robustkit.data import builtin

    ctx = click.get_current_context()
    seed = int((ctx.obj or {}).get("seed", 0))
    res = int(resolution)
    if out is None:
        path = builtin.builtin_path(res, seed, coils, plane)
        if overwrite or not path.exists():
            path = builtin.build_builtin(path, res, seed, coils, overwrite=overwrite, plane=plane)
    else:
        path = builtin.build_builtin(out, res, seed, coils, overwrite=overwrite, plane=plane)
    from robustkit.data.prepared import summarize

    click.echo(summarize(path))
    if sense_report:
        from robustkit.evaluate import format_sense_report
        from robustkit.evaluate import sense_report as report

        click.echo(format_sense_report(report(path, seed=seed)))
