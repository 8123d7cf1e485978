"""Real knee magnitudes → a prepared multi-coil file, simulated exactly as the built-in data is.

    python scripts/knees_dev.py /path/to/knees_dev_P1-P10.npz --out /tmp/knees.h5 [--slices 0:4] [--crop 160x128]
    robustkit models evaluate modl mol mnmmol --data /tmp/knees.h5

    # a training file: images 0-5 train (5 crops each), 6-7 val, 8-9 test (centre crops), split by patient
    python scripts/knees_dev.py knees_dev_P1-P10.npz --out /tmp/knees-train.h5 --crop 120x104 --splits 6,2,2 --train-crops 5
    robustkit train --model mnmmol --data /tmp/knees-train.h5 --out knee-mnmmol

The input is an ``.npz`` with key ``rss``: float ``(N, H, W)`` fully sampled root-sum-of-squares
magnitudes (e.g. the development knees, 10 × 320 × 256). Each image ``m`` gets what the built-in
MNI152 slices get (:mod:`robustkit.data.builtin`): the smooth random phase ``smooth_phase`` drawn
from ``default_rng([seed, i])``, the same ring of loop coils (``birdcage_maps``) normalised to
``Σ_c |S_c|² = 1`` on the object's support (pixels above 10 % of the image's maximum, dilated by
``--margin`` pixels, holes filled) and 0 outside it, and ``k = s F(S x)``, ``target = s x`` with
``max|target| = 1`` (``encode_slice``). ``--crop HxW`` keeps the centre of each magnitude image
first (a smaller problem; the rows and columns of :func:`robustkit.data.crop.centre_slices`).

Without ``--splits`` no split is assigned, so robustkit reads every slice by default. ``--splits
a,b,c`` gives the first ``a`` chosen images the split ``train``, the next ``b`` ``val`` and the
last ``c`` ``test``: one image per patient, so the split is by patient. ``--train-crops 5`` (with
``--crop``) takes from each training image the centre crop and four crops shifted by a quarter of
the crop size diagonally, each with its own phase (``default_rng([seed, i, t])`` for crop ``t ≥ 1``),
so that a few patients give more training slices; validation and test images keep the centre crop
and the phase ``default_rng([seed, i])``, the same slices as a file written without these options.
The file is written where ``--out`` says (never into the repository); nothing else is.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def knee_samples(rss: np.ndarray, indices: list[tuple[int, int]], seed: int, n_coils: int, margin: int, source: str,
                 splits: list[str | None]):
    """One :class:`~robustkit.data.sample.Sample` per magnitude image ``rss[j]`` ``(H, W)``: crop ``t``
    of image ``i`` of the input file, ``(i, t) = indices[j]`` (they seed the phase), with split
    ``splits[j]`` (``None``: no split)."""
    from scipy import ndimage

    from robustkit.data.builtin import BRAIN_LEVEL, COIL_RADIUS, LOOP_RADIUS, encode_slice, smooth_phase
    from robustkit.data.sample import Sample
    from robustkit.physics.coils import birdcage_maps

    coils = birdcage_maps((n_coils, *rss.shape[1:]), COIL_RADIUS, LOOP_RADIUS)
    for (i, t), image, split in zip(indices, rss, splits):
        magnitude = np.asarray(image, dtype=np.float64)
        support = ndimage.binary_fill_holes(ndimage.binary_dilation(magnitude > BRAIN_LEVEL * magnitude.max(), iterations=margin))
        phase = smooth_phase(magnitude.shape, np.random.default_rng([seed, i, t] if t else [seed, i]))
        k, maps, target, scale = encode_slice(magnitude, phase, coils, support)
        meta = {"source": "knees-dev", "file": source, "slice": i, "scale": scale, "seed": seed, "split": split}
        if t:
            meta["crop_index"] = t
        yield Sample(kspace=k.astype(np.complex64), maps=maps.astype(np.complex64), target=target.astype(np.complex64), meta=meta)


def main(argv: list[str] | None = None) -> Path:
    from robustkit.data.crop import centre_slices, parse_crop
    from robustkit.data.loaders import parse_slices
    from robustkit.data.prepared import summarize, write_prepared
    from robustkit.hashing import sha256_file

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("npz", type=Path, help="the .npz with key 'rss' (N, H, W)")
    parser.add_argument("--out", type=Path, required=True, help="the prepared HDF5 file to write (outside the repository)")
    parser.add_argument("--slices", default=None, help="images to keep, START:STOP [default: all]")
    parser.add_argument("--coils", type=int, default=12, help="simulated coils [default: 12, as the built-in data]")
    parser.add_argument("--seed", type=int, default=0, help="seed of the smooth phases [default: 0]")
    parser.add_argument("--crop", default=None, metavar="HxW", help="keep the centre HxW of each image [default: all]")
    parser.add_argument("--margin", type=int, default=4, help="support dilation in pixels [default: 4]")
    parser.add_argument("--splits", default=None, metavar="A,B,C",
                        help="the first A chosen images train, the next B val, the last C test [default: no split]")
    parser.add_argument("--train-crops", type=int, choices=(1, 5), default=1,
                        help="crops per training image with --crop: the centre, or the centre and 4 shifted [default: 1]")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    rss = np.load(args.npz)["rss"]
    chosen = list(range(len(rss)))[parse_slices(args.slices)]
    images = rss[chosen]
    splits: list[str | None] = [None] * len(chosen)
    if args.splits is not None:
        counts = [int(n) for n in args.splits.split(",")] if all(n.isdigit() for n in args.splits.split(",")) else []
        if len(counts) != 3 or sum(counts) != len(chosen):
            parser.error(f"--splits {args.splits} must be three counts A,B,C that add up to the {len(chosen)} chosen images")
        splits = ["train"] * counts[0] + ["val"] * counts[1] + ["test"] * counts[2]
    if args.train_crops > 1 and (args.crop is None or args.splits is None):
        parser.error("--train-crops 5 needs --crop (the crops' size) and --splits (the training images)")
    indices = [(i, 0) for i in chosen]
    if args.crop is not None:
        size = parse_crop(args.crop)
        if size[0] > rss.shape[1] or size[1] > rss.shape[2]:
            parser.error(f"--crop {args.crop} is larger than the images, {rss.shape[1]}x{rss.shape[2]}")
        centre = centre_slices(rss.shape[1:], size)
        crops, indices, new_splits = [], [], []
        for j, i in enumerate(chosen):
            shifts = [(0, 0)]
            if splits[j] == "train" and args.train_crops == 5:
                shifts += [(dr * size[0] // 4, dc * size[1] // 4) for dr in (-1, 1) for dc in (-1, 1)]
            for t, (dr, dc) in enumerate(shifts):
                top = min(max(0, centre[0].start + dr), rss.shape[1] - size[0])
                left = min(max(0, centre[1].start + dc), rss.shape[2] - size[1])
                crops.append(images[j][top:top + size[0], left:left + size[1]])
                indices.append((i, t))
                new_splits.append(splits[j])
        images, splits = np.stack(crops), new_splits
    provenance = {
        "source": "scripts/knees_dev.py",
        "input": {"file": str(args.npz), "sha256": sha256_file(args.npz), "key": "rss", "shape": list(rss.shape)},
        "images": chosen,
        "simulation": "robustkit.data.builtin: smooth_phase rng([seed, i]), birdcage_maps ring coils normalised on the "
                      f"support (> 10% of max, dilated {args.margin} px, holes filled), encode_slice",
        "crop": args.crop,
        "splits": args.splits,
        "train_crops": args.train_crops,
        "seed": args.seed,
        "coils": args.coils,
        "scale": "k and target multiplied by meta['scale'] so that max|target| = 1",
    }
    samples = knee_samples(images, indices, args.seed, args.coils, args.margin, args.npz.stem, splits)
    out = write_prepared(args.out, samples, provenance, overwrite=args.overwrite)
    print(summarize(out))
    return out


if __name__ == "__main__":
    main()
