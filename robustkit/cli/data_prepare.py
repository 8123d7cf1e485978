"""``robustkit data prepare`` (real formats → the prepared HDF5 format) and ``robustkit data info``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from robustkit.hashing import sha256_file

#: provenance values longer than this are shortened in ``info``.


def _input_record(path: Path, fmt: str) -> dict[str, Any]:
    """Name, size and SHA-256 of an input file (the ``.cfl`` of a BART pair)."""
    data = path
    if fmt == "bart":
        from robustkit.data.loaders.bart import base, read_cfl

        read_cfl(path)  # one line if the pair is missing or broken (e.g. --format bart on an HDF5 file)
        data = base(path).with_name(base(path).name + ".cfl")
    return {"file": str(path), "format": fmt, "bytes": data.stat().st_size, "sha256": sha256_file(data)}


@click.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--format", "fmt", default="auto", show_default=True,
              help="Input format: auto (detect), fastmri, calgary, modl or bart.")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The prepared HDF5 file to write (atomically).")
@click.option("--maps", type=click.Path(path_type=Path), default=None,
              help="BART coil maps (.cfl/.hdr) for BART k-space; otherwise maps come from the file or ESPIRiT.")
@click.option("--bart-axes", default=None, metavar="H,W,COIL[,SLICE]",
              help="BART dims holding the image rows, columns, coils (and slices), as names or numbers, e.g. "
                   "PHS1,PHS2,COIL. [default: READ,PHS1,COIL,SLICE, or PHS1,PHS2,… when READ is 1]")
@click.option("--slices", default=None, help="Slices to keep, START:STOP (per file; per split for MoDL).")
@click.option("--split", type=click.Choice(["auto", "train", "val", "test"]), default="auto", show_default=True,
              help="Split of every sample; auto: MoDL trn/tst prefix, else train/val/test in the path.")
@click.option("--ignore-mask", is_flag=True,
              help="Treat the k-space as fully sampled and drop the file's mask (MoDL: robustkit draws masks).")
@click.option("--calib", type=click.IntRange(min=2), default=24, show_default=True, help="ESPIRiT calibration size.")
@click.option("--kernel", type=click.IntRange(min=1), default=6, show_default=True, help="ESPIRiT kernel width.")
@click.option("--espirit-crop", "espirit_crop", type=click.FloatRange(0, 1, max_open=True), default=0.95, show_default=True,
              help="ESPIRiT eigenvalue crop: maps are 0 where the eigenvalue is below it.")
@click.option("--crop", default=None, metavar="HxW",
              help="Centre-crop every slice to H x W in image space (coil images and maps), k-space recomputed by "
                   "the centred orthonormal FFT, e.g. to match a model's training size. Fully sampled data only.")
@click.option("--overwrite", is_flag=True, help="Replace --out if it exists.")
def prepare(
    inputs: tuple[Path, ...],
    fmt: str,
    out: Path,
    maps: Path | None,
    bart_axes: str | None,
    slices: str | None,
    split: str,
    ignore_mask: bool,
    calib: int,
    kernel: int,
    espirit_crop: float,
    crop: str | None,
    overwrite: bool,
) -> None:
    """Convert fastMRI, Calgary-Campinas, MoDL or BART files into one prepared dataset.

    Coil maps come from the file (MoDL, BART --maps) or ESPIRiT; the target is the coil-combined
    fully sampled image; each slice is scaled so that max|target| = 1. Example:

    \b
        robustkit data prepare knee.h5 --out knee-320x256.h5 --crop 320x256
    """
    import itertools

    from robustkit import __version__
    from robustkit.data.crop import crop_sample, parse_crop
    from robustkit.data.loaders import LoadOptions, iter_samples, parse_slices, resolve_format
    from robustkit.data.prepared import write_prepared
    from robustkit.errors import RobustkitError

    if out.exists() and not overwrite:
        raise RobustkitError(f"{out} already exists; choose another output path or pass --overwrite")
    if maps is not None and len(inputs) > 1:
        raise RobustkitError("--maps belongs to one BART input; prepare each BART file separately")
    for path in inputs:
        if path.exists() and out.exists() and path.resolve() == out.resolve():
            raise RobustkitError(f"--out {out} is also an input; write to another file")
    seen: dict[Path, Path] = {}
    for path in inputs:
        key = path.resolve()
        if key in seen:
            raise RobustkitError(f"{path} is given twice (as {seen[key]} too); its slices would be written twice: give it once")
        seen[key] = path
    options = LoadOptions(
        slices=parse_slices(slices),
        maps=maps,
        split=None if split == "auto" else split,
        ignore_mask=ignore_mask,
        calib=calib,
        kernel=kernel,
        crop=espirit_crop,
        bart_axes=bart_axes,
        progress=True,
    )
    size = parse_crop(crop) if crop is not None else None
    formats = [resolve_format(path, fmt).name for path in inputs]  # every input checked before any work
    samples = itertools.chain.from_iterable(
        iter_samples(path, name, options) for path, name in zip(inputs, formats)
    )
    if size is not None:
        samples = (crop_sample(s, size) for s in samples)
    provenance = {
        "source": "robustkit data prepare",
        "robustkit_version": __version__,
        "inputs": [_input_record(path, name) for path, name in zip(inputs, formats)],
        "options": {
            "slices": slices or ":",
            "split": split,
            "ignore_mask": ignore_mask,
            "maps": str(maps) if maps else None,
            "bart_axes": bart_axes,
            "espirit": {"calib": calib, "kernel": kernel, "crop": espirit_crop, "thresh": 0.02},
            "crop": None if size is None else list(size),
        },
        "fft": "centred orthonormal, F = fftshift(fft2(ifftshift(.), norm='ortho'))",
        "target": "sum_c conj(S_c) F^H k_c of the fully sampled k-space (none when undersampled)",
        "scale": "k-space and target multiplied by meta['scale'] so that max|target| = 1 "
        "(max of the zero-filled combination when there is no target)",
    }
    if size is not None:
        provenance["crop"] = (f"centre {size[0]}x{size[1]} of the coil images and maps (rows and columns from "
                              "(H - h) // 2); k-space = F of the cropped coil images; meta['crop'] per slice")
    write_prepared(out, samples, provenance, overwrite=overwrite)
    from robustkit.data.prepared import summarize

    summary = summarize(out)
    click.echo(summary)
    if "no split" in summary.splitlines()[1]:
        click.echo("  note: samples without a split are read as 'all' (the default when a file has no splits); "
                   "pass --split to assign one")


@click.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--format", "fmt", default="auto", show_default=True,
              help="For raw files: auto (detect), fastmri, calgary, modl or bart.")
def info(path: Path, fmt: str) -> None:
    """Summarise a prepared dataset, or say what `data prepare` would load from a raw file."""
    from robustkit.data.loaders import inspect, is_prepared
    from robustkit.data.prepared import summarize

    if is_prepared(path):
        click.echo(summarize(path))
        return
    details = inspect(path, fmt)
    click.echo(f"{path}: {details.pop('description')}; not prepared yet (`robustkit data prepare` would load):")
    details.pop("format")
    for key, value in details.items():
        click.echo(f"  {key}: {' x '.join(map(str, value)) if isinstance(value, list) else value}")
