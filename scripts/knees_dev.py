"""Real knee magnitudes → a prepared multi-coil file, simulated exactly as the built-in data is.

    python scripts/knees_dev.py /path/to/knees_dev_P1-P10.npz --out /tmp/knees.h5 [--slices 0:4] [--crop 160x128]
    robustkit models evaluate modl mol mnmmol --data /tmp/knees.h5

The input is an ``.npz`` with key ``rss``: float ``(N, H, W)`` fully sampled root-sum-of-squares
magnitudes (e.g. the development knees, 10 × 320 × 256). Each image ``m`` gets what the built-in
MNI152 slices get (:mod:`robustkit.data.builtin`): the smooth random phase ``smooth_phase`` drawn
from ``default_rng([seed, i])``, the same ring of loop coils (``birdcage_maps``) normalised to
``Σ_c |S_c|² = 1`` on the object's support (pixels above 10 % of the image's maximum, dilated by
``--margin`` pixels, holes filled) and 0 outside it, and ``k = s F(S x)``, ``target = s x`` with
``max|target| = 1`` (``encode_slice``). No split is assigned, so robustkit reads every slice by
default. ``--crop HxW`` keeps the centre of each magnitude image first (a smaller problem; the
rows and columns of :func:`robustkit.data.crop.centre_slices`). The file is written where ``--out``
says (never into the repository); nothing else is.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def knee_samples(rss: np.ndarray, indices: list[int], seed: int, n_coils: int, margin: int, source: str):
    """One :class:`~robustkit.data.sample.Sample` per magnitude image ``rss[j]`` ``(H, W)``, whose
    index in the input file is ``indices[j]`` (it seeds the phase)."""
    from scipy import ndimage

    from robustkit.data.builtin import BRAIN_LEVEL, COIL_RADIUS, LOOP_RADIUS, encode_slice, smooth_phase
    from robustkit.data.sample import Sample
    from robustkit.physics.coils import birdcage_maps

    coils = birdcage_maps((n_coils, *rss.shape[1:]), COIL_RADIUS, LOOP_RADIUS)
    for i, image in zip(indices, rss):
        magnitude = np.asarray(image, dtype=np.float64)
        support = ndimage.binary_fill_holes(ndimage.binary_dilation(magnitude > BRAIN_LEVEL * magnitude.max(), iterations=margin))
        phase = smooth_phase(magnitude.shape, np.random.default_rng([seed, i]))
        k, maps, target, scale = encode_slice(magnitude, phase, coils, support)
        meta = {"source": "knees-dev", "file": source, "slice": i, "scale": scale, "seed": seed, "split": None}
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
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    rss = np.load(args.npz)["rss"]
    chosen = list(range(len(rss)))[parse_slices(args.slices)]
    images = rss[chosen]
    if args.crop is not None:
        size = parse_crop(args.crop)
        if size[0] > rss.shape[1] or size[1] > rss.shape[2]:
            parser.error(f"--crop {args.crop} is larger than the images, {rss.shape[1]}x{rss.shape[2]}")
        images = images[(slice(None), *centre_slices(rss.shape[1:], size))]
    provenance = {
        "source": "scripts/knees_dev.py",
        "input": {"file": str(args.npz), "sha256": sha256_file(args.npz), "key": "rss", "shape": list(rss.shape)},
        "images": chosen,
        "simulation": "robustkit.data.builtin: smooth_phase rng([seed, i]), birdcage_maps ring coils normalised on the "
                      f"support (> 10% of max, dilated {args.margin} px, holes filled), encode_slice",
        "crop": args.crop,
        "seed": args.seed,
        "coils": args.coils,
        "scale": "k and target multiplied by meta['scale'] so that max|target| = 1",
    }
    samples = knee_samples(images, chosen, args.seed, args.coils, args.margin, args.npz.stem)
    out = write_prepared(args.out, samples, provenance, overwrite=args.overwrite)
    print(summarize(out))
    return out


if __name__ == "__main__":
    main()
