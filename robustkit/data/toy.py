"""A tiny synthetic dataset in the built-in data's format, for examples and tests (docs/api.md).

Each slice is built like a built-in slice (:mod:`robustkit.data.builtin`), from random ellipses
instead of the MNI template: magnitude ``m`` = a sum of ``3`` ellipses, a smooth random phase
``φ``, ``C`` ring-coil maps normalised to ``Σ_c |S_c|² = 1`` on the object's support, fully sampled
k-space ``k = s · F(S x)`` and target ``s · x`` with ``max|target| = 1``. Every slice is in split
``split`` (default ``test``, the studies' default), so it is used as is by every study.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from robustkit.errors import RobustkitError


def ellipses(shape: tuple[int, int], rng: np.random.Generator, n: int = 3) -> np.ndarray:
    """A magnitude image ``(H, W)`` in ``[0, 1]``: ``n`` random filled ellipses inside the field of view."""
    y, x = np.meshgrid(np.linspace(-1, 1, shape[0]), np.linspace(-1, 1, shape[1]), indexing="ij")
    image = np.zeros(shape)
    for _ in range(n):
        cy, cx = rng.uniform(-0.3, 0.3, 2)
        ry, rx = rng.uniform(0.25, 0.6, 2)
        image += rng.uniform(0.3, 1.0) * (((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 < 1)
    return image / image.max()


def toy_dataset(path: str | os.PathLike, n: int = 4, shape: tuple[int, int] = (24, 20), coils: int = 4,
                seed: int = 0, split: str = "test", overwrite: bool = False) -> Path:
    """Write ``n`` synthetic slices of size ``shape`` with ``coils`` coils to the prepared HDF5 file
    ``path`` (read it with :class:`~robustkit.data.prepared.PreparedDataset` or pass it as a study's
    ``data``); returns the path. Deterministic in ``seed``."""
    from robustkit.data.builtin import COIL_RADIUS, LOOP_RADIUS, encode_slice, smooth_phase
    from robustkit.data.prepared import write_prepared
    from robustkit.data.sample import Sample
    from robustkit.physics.coils import birdcage_maps

    if n < 1 or coils < 1 or min(shape) < 8:
        raise RobustkitError(f"a toy dataset needs n >= 1, coils >= 1 and images of at least 8x8, got n={n}, "
                             f"coils={coils}, shape={shape}")
    rng = np.random.default_rng(seed)
    raw_maps = birdcage_maps((coils, *shape), COIL_RADIUS, LOOP_RADIUS)
    samples = []
    for i in range(n):
        magnitude = ellipses(shape, rng)
        k, maps, target, scale = encode_slice(magnitude, smooth_phase(shape, rng), raw_maps, magnitude > 0)
        samples.append(Sample(kspace=k.astype(np.complex64), maps=maps.astype(np.complex64),
                              target=target.astype(np.complex64),
                              meta={"source": "toy", "slice": i, "scale": scale, "split": split}))
    provenance = {"source": "robustkit.data.toy", "n": n, "shape": list(shape), "coils": coils, "seed": seed}
    return write_prepared(path, samples, provenance, overwrite=overwrite)
