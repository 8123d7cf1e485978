"""MoDL's ``dataset.hdf5`` (Aggarwal, Mani, Jacob, TMI 2019; the authors' brain data).

Layout: ``trnOrg`` complex ``(N, H, W)`` images ``x``, ``trnCsm`` complex ``(N, C, H, W)`` coil
maps ``S``, ``trnMask`` ``(N, H, W)`` (or one ``(H, W)``) 0/1 masks; ``tstOrg``/``tstCsm``/``tstMask``
likewise. Split: ``trn`` → train, ``tst`` → test. ``--slices`` selects within each split.

Convention: MoDL simulates ``b = M ⊙ fft2(S x) / √(HW)`` with numpy's *uncentred* FFT, so its
masks have DC at index (0, 0). robustkit uses the centred ``F = fftshift ∘ fft2 ∘ ifftshift``: the
loader computes ``k = F(S x)`` and moves each mask to the centred layout, ``M_c = fftshift(M)``.
The two k-spaces sample the same frequencies (they differ by a re-indexing and a sign pattern
``(−1)^{ky+kx}`` for even sizes), so the measurements and images are MoDL's. A mask sampled more
densely around its centre than around its corners is taken as already centred and kept.

Maps are normalised to ``Σ_c |S_c|² = 1`` where non-zero; the target is
``Σ_c conj(S_c) Fᴴ k_c = Σ_c |S_c|² x``. Samples keep the file's mask (k-space ``M_c ⊙ k``) unless
``ignore_mask``, which keeps the fully sampled k-space so robustkit draws its own masks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import numpy as np

from robustkit.data.loaders import (
    LoadOptions,
    as_complex,
    check_finite,
    check_mask,
    is_hdf5,
    make_sample,
    normalise_file_maps,
    open_hdf5,
    progress_bar,
    read_dataset,
    select,
)
from robustkit.data.sample import Sample
from robustkit.errors import RobustkitError

NAME = "MoDL"
PREFIXES = {"trn": "train", "tst": "test"}


def detect(path: Path) -> bool:
    """An HDF5 file with ``trnOrg`` or ``tstOrg``."""
    if not is_hdf5(path):
        return False
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return "trnOrg" in f or "tstOrg" in f
    except OSError:
        return False


def _groups(f, name: str) -> dict[str, tuple[int, int, int, int]]:
    """``prefix → (N, C, H, W)`` for each prefix present, after checking the three datasets agree."""
    found = {}
    for prefix in PREFIXES:
        if f"{prefix}Org" not in f:
            continue
        for key in (f"{prefix}Csm", f"{prefix}Mask"):
            if key not in f:
                read_dataset(f, key, fmt=NAME)  # raises the missing-key error
        org, csm, mask = f[f"{prefix}Org"], f[f"{prefix}Csm"], f[f"{prefix}Mask"]
        if org.ndim != 3:
            raise RobustkitError(f"{name}: {prefix}Org must have shape (N, H, W), got {org.shape}; check the file")
        n, h, w = org.shape
        if csm.ndim != 4 or csm.shape[0] != n or csm.shape[2:] != (h, w):
            raise RobustkitError(
                f"{name}: coil maps {prefix}Csm of shape {csm.shape} do not match images {prefix}Org of shape "
                f"{org.shape}; expected (N, C, H, W) = ({n}, C, {h}, {w})"
            )
        if mask.shape not in ((n, h, w), (h, w)):
            raise RobustkitError(
                f"{name}: mask {prefix}Mask of shape {mask.shape} does not match images of size ({h}, {w}); "
                f"expected ({n}, {h}, {w}) or ({h}, {w})"
            )
        found[prefix] = (n, csm.shape[1], h, w)
    if not found:
        read_dataset(f, "trnOrg", fmt=NAME)  # neither prefix: report the missing key
    return found


def centred_mask(mask: np.ndarray) -> tuple[np.ndarray, str]:
    """MoDL's mask ``(H, W)`` in robustkit's centred layout and the layout it was read in."""
    h, w = mask.shape
    box = (slice(h // 2 - h // 8, h // 2 + h // 8 + 1), slice(w // 2 - w // 8, w // 2 + w // 8 + 1))
    at_centre = mask[box].mean()
    at_corners = np.fft.fftshift(mask)[box].mean()
    if at_centre > at_corners:
        return mask, "centred"
    return np.fft.fftshift(mask), "uncentred (fftshift)"


def iter_samples(path: Path, options: LoadOptions) -> Iterator[Sample]:
    """One :class:`Sample` per selected image of each split of a MoDL file."""
    import torch

    from robustkit.physics.fft import fft2c

    name = path.name
    with open_hdf5(path, NAME) as f:
        groups = _groups(f, name)
        chosen = {prefix: list(range(n))[options.slices] for prefix, (n, _, _, _) in groups.items()}
        if not any(chosen.values()):  # a split may select nothing, the file may not
            select(max(n for n, _, _, _ in groups.values()), options.slices, name)
        for prefix, (n, _, h, w) in groups.items():
            shared = f[f"{prefix}Mask"].ndim == 2
            for i in progress_bar(chosen[prefix], f"{name} ({PREFIXES[prefix]})", options.progress):
                where = f"{name} {prefix} slice {i}"
                x = as_complex(read_dataset(f, f"{prefix}Org", i, NAME), "image", where)
                maps = as_complex(read_dataset(f, f"{prefix}Csm", i, NAME), "coil maps", where)
                maps = normalise_file_maps(maps, (maps.shape[0], h, w), where)
                k = fft2c(torch.from_numpy(maps.astype(np.complex128) * x)).numpy()
                check_finite(k, where)
                meta = {
                    "source": "modl",
                    "file": name,
                    "slice": i,
                    "split": options.split or PREFIXES[prefix],
                    "maps": "file (normalised)",
                    "fft": "k = F(S x), centred orthonormal; MoDL's uncentred masks fftshift-ed",
                }
                mask = None
                if not options.ignore_mask:
                    raw = read_dataset(f, f"{prefix}Mask", () if shared else i, NAME)
                    mask, layout = centred_mask(check_mask(raw, (h, w), where))
                    meta["mask_layout"] = layout
                yield make_sample(k, maps, meta, mask=mask, reference=True)


def inspect(path: Path) -> dict[str, Any]:
    """Images, coils, matrix and mask layout per split of a MoDL file."""
    name = path.name
    info: dict[str, Any] = {}
    with open_hdf5(path, NAME) as f:
        for prefix, (n, c, h, w) in _groups(f, name).items():
            shared = f[f"{prefix}Mask"].ndim == 2
            first = check_mask(read_dataset(f, f"{prefix}Mask", () if shared else 0, NAME), (h, w), name)
            _, layout = centred_mask(first)
            info[PREFIXES[prefix]] = (
                f"{n} slice{'s' if n != 1 else ''}, {c} coils, {h} x {w}, "
                f"masks {'shared' if shared else 'per slice'} "
                f"(R ≈ {first.size / first.sum():.2f}, stored {layout})"
            )
    info["target"] = "coil combination of F(S x) (fully sampled)"
    info["maps"] = "from the file (trnCsm/tstCsm), normalised"
    return info
