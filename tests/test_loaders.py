"""Real-format loaders: tiny files written in each format load into canonical samples.

Each test writes a file the way the format's own tools do (fastMRI: centred FFT; Calgary-Campinas:
uncentred FFT with interleaved real/imag channels; MoDL: images, maps and uncentred masks; BART:
column-major .cfl with a text header) and checks shape, scaling (max|target| = 1), that the target
is the coil combination ``Σ_c conj(S_c) Fᴴ k_c`` (docs/maths.md §1) and the split.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from robustkit.cli.data_prepare import info, prepare
from robustkit.data.loaders import FORMATS, detect_format, inspect, load, parse_slices
from robustkit.data.prepared import read_provenance, read_samples, split_counts

H, W, C = 32, 24, 4
ESPIRIT = {"calib": 20, "kernel": 5}


# --- phantoms and writers (also used by test_bad_input.py) ------------------------------------


def fft2c(x: np.ndarray) -> np.ndarray:
    return np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))


def ifft2c(k: np.ndarray) -> np.ndarray:
    return np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(k, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))


def phantom(h: int = H, w: int = W, c: int = C, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(x, S, support)``: an elliptical object with a smooth phase, and smooth random complex maps
    (Gaussian blobs on a ring with linear phases) normalised to ``Σ_c |S_c|² = 1`` on the support."""
    rng = np.random.default_rng(seed)
    y, x = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    support = (y / 0.8) ** 2 + (x / 0.7) ** 2 < 1
    inner = ((y - 0.2) / 0.3) ** 2 + ((x + 0.1) / 0.25) ** 2 < 1
    magnitude = support * (0.6 + 0.2 * np.cos(3 * x) * np.sin(2 * y)) + 0.4 * inner
    image = magnitude * np.exp(1j * (0.5 * x - 0.3 * y + 0.4 * x * y + rng.uniform(0, 2 * np.pi)))
    theta = 2 * np.pi * np.arange(c) / c + rng.uniform(0, 0.5)
    maps = np.stack([
        np.exp(-((y - 1.1 * np.sin(t)) ** 2 + (x - 1.1 * np.cos(t)) ** 2) / (2 * 0.7**2))
        * np.exp(1j * (rng.normal() * x + rng.normal() * y + rng.uniform(0, 2 * np.pi)))
        for t in theta
    ])
    maps = maps / np.sqrt((np.abs(maps) ** 2).sum(0)) * support
    return image, maps, support


def volume(n: int = 2, h: int = H, w: int = W, c: int = C) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(k (n, C, H, W), images (n, H, W), maps (n, C, H, W))`` with ``k = F(S x)``."""
    parts = [phantom(h, w, c, seed=i) for i in range(n)]
    images = np.stack([p[0] for p in parts])
    maps = np.stack([p[1] for p in parts])
    return fft2c(maps * images[:, None]), images, maps


def write_fastmri(path: Path, kspace: np.ndarray, mask: np.ndarray | None = None) -> Path:
    with h5py.File(path, "w") as f:
        f.create_dataset("kspace", data=kspace.astype(np.complex64))
        f.attrs["acquisition"] = "CORPD_FBK"
        if mask is not None:
            f.create_dataset("mask", data=mask)
    return path


def write_calgary(path: Path, kspace: np.ndarray) -> Path:
    """Calgary-Campinas layout: uncentred ``fft2`` of the centred coil images, channels interleaved.

    ``fft2(x)[f mod N] = e^{−2πi f ⌊N/2⌋/N} F(x)[f]`` per axis: exact, so zeros stay zeros."""
    h, w = kspace.shape[-2:]
    fy, fx = (np.arange(h) - h // 2) * (h // 2) / h, (np.arange(w) - w // 2) * (w // 2) / w
    ramp = np.exp(-2j * np.pi * (fy[:, None] + fx[None, :]))
    uncentred = np.fft.ifftshift(kspace * ramp, axes=(-2, -1))  # (n, C, H, W)
    raw = np.empty(uncentred.shape[:1] + uncentred.shape[2:] + (2 * uncentred.shape[1],), np.float32)
    raw[..., 0::2] = uncentred.real.transpose(0, 2, 3, 1)
    raw[..., 1::2] = uncentred.imag.transpose(0, 2, 3, 1)
    with h5py.File(path, "w") as f:
        f.create_dataset("kspace", data=raw)
    return path


def write_modl(path: Path, images: np.ndarray, maps: np.ndarray, masks: np.ndarray, split: int) -> Path:
    """MoDL layout: ``trn*`` for the first ``split`` images, ``tst*`` for the rest; masks uncentred."""
    uncentred = np.fft.ifftshift(masks, axes=(-2, -1)).astype(np.int8)
    with h5py.File(path, "w") as f:
        for prefix, part in (("trn", slice(0, split)), ("tst", slice(split, None))):
            f.create_dataset(f"{prefix}Org", data=images[part].astype(np.complex64))
            f.create_dataset(f"{prefix}Csm", data=maps[part].astype(np.complex64))
            f.create_dataset(f"{prefix}Mask", data=uncentred[part])
    return path


def write_cfl(base: Path, array: np.ndarray) -> Path:
    """BART ``base.hdr`` + ``base.cfl`` (complex64, column-major)."""
    base.with_name(base.name + ".hdr").write_text("# Dimensions\n" + " ".join(map(str, array.shape)) + "\n")
    np.asarray(array, np.complex64).ravel(order="F").tofile(base.with_name(base.name + ".cfl"))
    return base.with_name(base.name + ".cfl")


def to_bart(slices: np.ndarray) -> np.ndarray:
    """``(n, C, H, W)`` → BART dims ``READ, PHS1, 1, COIL, 1, …, SLICE`` (14 dims)."""
    n, c, h, w = slices.shape
    out = np.zeros((h, w, 1, c) + (1,) * 9 + (n,), np.complex64)
    out[:, :, 0, :, 0, 0, 0, 0, 0, 0, 0, 0, 0, :] = slices.transpose(2, 3, 1, 0)
    return out


def line_mask(w: int = W, h: int = H, centre: int = 10, every: int = 3) -> np.ndarray:
    """A 1-D Cartesian mask over W (centred): ``centre`` central lines plus every ``every``-th line."""
    lines = np.zeros(w, bool)
    lines[::every] = True
    lines[w // 2 - centre // 2 : w // 2 - centre // 2 + centre] = True
    return lines


def combine(sample) -> np.ndarray:
    return (sample.maps.conj() * ifft2c(sample.kspace)).sum(0)


def magnitude_error(estimate: np.ndarray, truth: np.ndarray, support: np.ndarray) -> float:
    """``‖|x̂| − |x|‖ / ‖x‖`` on the support, after a least-squares scale."""
    a, b = np.abs(estimate[support]), np.abs(truth[support])
    return float(np.linalg.norm(a * (a @ b) / (a @ a) - b) / np.linalg.norm(b))


# --- tests -------------------------------------------------------------------------------------


def check_canonical(sample, shape=(C, H, W)) -> None:
    assert sample.kspace.shape == sample.maps.shape == shape
    assert sample.kspace.dtype == sample.maps.dtype == np.complex64
    ss = (np.abs(sample.maps) ** 2).sum(0)
    assert np.allclose(ss[ss > 0], 1, atol=1e-5)  # Σ_c |S_c|² = 1 where the maps are non-zero
    if sample.target is not None:
        assert sample.target.shape == shape[1:] and sample.target.dtype == np.complex64
        assert np.abs(sample.target).max() == pytest.approx(1, abs=1e-6)
        if sample.mask is None:  # with a file's mask the k-space is M ⊙ k and the target comes from k
            np.testing.assert_allclose(sample.target, combine(sample), atol=1e-5)


def test_fastmri_multicoil(tmp_path):
    k, images, _ = volume(3)
    (tmp_path / "data").mkdir()
    path = write_fastmri(tmp_path / "data" / "file1.h5", k)
    assert detect_format(path) == "fastmri"
    samples = load(path, slices="0:2", **ESPIRIT)
    assert [s.meta["slice"] for s in samples] == [0, 1]
    for s, x in zip(samples, images):
        check_canonical(s)
        assert s.mask is None and s.meta["source"] == "fastmri" and s.meta["maps"] == "espirit"
        assert s.meta["split"] is None  # nothing in the path says which split
        # k-space is the file's, scaled by meta["scale"]
        np.testing.assert_allclose(s.kspace, k[s.meta["slice"]] * s.meta["scale"], rtol=1e-5, atol=1e-6)
        # ESPIRiT maps reproduce the object: the target is the image up to a smooth phase
        _, _, support = phantom(seed=s.meta["slice"])
        assert magnitude_error(s.target, x, support) < 0.02


def test_fastmri_split_from_path_and_test_mask(tmp_path):
    k, _, _ = volume(1)
    lines = line_mask()
    folder = tmp_path / "multicoil_test"
    folder.mkdir()
    path = write_fastmri(folder / "file2.h5", k * lines, mask=lines)
    (s,) = load(path, **ESPIRIT)
    check_canonical(s)
    assert s.meta["split"] == "test"
    assert s.target is None and s.meta["scale_reference"] == "zero-filled"
    np.testing.assert_array_equal(s.mask, np.broadcast_to(lines, (H, W)).astype(np.float32))
    assert np.abs(combine(s)).max() == pytest.approx(1, abs=1e-5)
    assert (s.kspace[:, :, ~lines] == 0).all()


def test_fastmri_single_coil(tmp_path):
    k, images, _ = volume(1, c=1)
    (s,) = load(write_fastmri(tmp_path / "single.h5", k[:, 0]))
    assert s.maps.shape == (1, H, W) and np.allclose(s.maps, 1)
    np.testing.assert_allclose(s.target, ifft2c(k[0, 0]) * s.meta["scale"], atol=1e-6)


def test_calgary_uncentred_layout(tmp_path):
    k, images, _ = volume(2)
    (tmp_path / "Train").mkdir()
    path = write_calgary(tmp_path / "Train" / "e1.h5", k)
    assert detect_format(path) == "calgary"
    samples = load(path, **ESPIRIT)
    assert len(samples) == 2
    for s, x, kk in zip(samples, images, k):
        check_canonical(s)
        assert s.meta["split"] == "train" and "fftshift" in s.meta["layout"]
        # converted back exactly to robustkit's centred grid: k = s · F(S x)
        np.testing.assert_allclose(s.kspace, kk * s.meta["scale"], atol=1e-5)
        _, _, support = phantom(seed=s.meta["slice"])
        assert magnitude_error(s.target, x, support) < 0.02


@pytest.mark.parametrize("shape", [(32, 24), (33, 27)])
def test_calgary_centring_is_exact(shape):
    from robustkit.data.loaders.calgary import centre

    x, maps, _ = phantom(*shape)
    coil = maps * x
    centred, steps = centre(np.fft.fft2(coil, norm="ortho"))  # uncentred, image centred
    assert len(steps) == 2
    np.testing.assert_allclose(ifft2c(centred), coil, atol=1e-12)
    same, none = centre(fft2c(coil))
    assert none == [] and np.array_equal(same, fft2c(coil))


def test_calgary_undersampled_pattern(tmp_path):
    k, _, _ = volume(1)
    mask = np.zeros((H, W), bool)
    mask[:, W // 2 - 5 : W // 2 + 5] = True
    path = write_calgary(tmp_path / "e2.h5", k * mask)
    (s,) = load(path, **ESPIRIT)
    assert s.target is None
    np.testing.assert_array_equal(s.mask, mask.astype(np.float32))
    (full,) = load(path, ignore_mask=True, **ESPIRIT)
    assert full.mask is None and full.target is not None


def test_modl(tmp_path):
    k, images, maps = volume(3)
    masks = np.stack([np.broadcast_to(line_mask(every=2 + i), (H, W)) for i in range(3)])
    path = write_modl(tmp_path / "dataset.hdf5", images, maps, masks, split=2)
    assert detect_format(path) == "modl"
    samples = load(path)
    assert [s.meta["split"] for s in samples] == ["train", "train", "test"]
    for s, x, kk, m in zip(samples, images, k, masks):
        check_canonical(s)
        assert s.meta["mask_layout"] == "uncentred (fftshift)"
        np.testing.assert_array_equal(s.mask, m.astype(np.float32))  # back in the centred layout
        np.testing.assert_allclose(s.kspace, kk * m * s.meta["scale"], atol=1e-5)
        # the target comes from the fully sampled k-space: Σ|S|² x = x on the support
        np.testing.assert_allclose(s.target, (np.abs(s.maps) ** 2).sum(0) * x * s.meta["scale"], atol=1e-5)
    (first,) = load(path, slices="1", ignore_mask=True)
    assert first.mask is None and first.meta["slice"] == 1
    assert len(load(path, slices="0:1")) == 2  # per split


def test_bart_with_and_without_maps(tmp_path):
    k, images, maps = volume(2)
    write_cfl(tmp_path / "ksp", to_bart(k))
    write_cfl(tmp_path / "sens", to_bart(maps))
    for name in ("ksp", "ksp.cfl", "ksp.hdr"):
        assert detect_format(tmp_path / name) == "bart"
    given = load(tmp_path / "ksp.cfl", maps=tmp_path / "sens")
    estimated = load(tmp_path / "ksp", **ESPIRIT)
    for a, b, x, kk in zip(given, estimated, images, k):
        check_canonical(a)
        check_canonical(b)
        np.testing.assert_allclose(a.kspace, kk * a.meta["scale"], atol=1e-5)
        np.testing.assert_allclose(a.target, x * (np.abs(a.maps) ** 2).sum(0) * a.meta["scale"], atol=1e-5)
        _, _, support = phantom(seed=a.meta["slice"])
        assert magnitude_error(b.target, a.target, support) < 0.02
    lines = line_mask()
    write_cfl(tmp_path / "under", to_bart(k * lines))
    (s, _) = load(tmp_path / "under", maps=tmp_path / "sens")
    assert s.target is None and np.array_equal(s.mask[0], lines.astype(np.float32))


def test_bart_slice_in_phs1_phs2_loads_like_read_phs1(tmp_path):
    """A 2-D slice stored as dims [1, H, W, C] (READ = 1) is read from PHS1 × PHS2, maps too."""
    k, images, maps = volume(1)
    write_cfl(tmp_path / "ksp", to_bart(k))
    write_cfl(tmp_path / "sens", to_bart(maps))
    write_cfl(tmp_path / "ksp2", k[0].transpose(1, 2, 0)[None])  # (1, H, W, C)
    write_cfl(tmp_path / "sens2", maps[0].transpose(1, 2, 0)[None])
    (a,) = load(tmp_path / "ksp", maps=tmp_path / "sens")
    (b,) = load(tmp_path / "ksp2", maps=tmp_path / "sens2")
    check_canonical(b)
    np.testing.assert_array_equal(a.kspace, b.kspace)
    np.testing.assert_array_equal(a.target, b.target)
    assert b.meta["axes"] == "PHS1,PHS2,COIL,SLICE" and a.meta["axes"] == "READ,PHS1,COIL,SLICE"
    assert inspect(tmp_path / "ksp2")["matrix"] == [H, W]


def test_bart_axes_option_reads_what_the_guess_cannot(tmp_path):
    """dims [H, 1, W, C]: the guess (READ × PHS1) leaves PHS2 unread and says so; --bart-axes reads it."""
    from robustkit.errors import RobustkitError

    k, _, maps = volume(1)
    write_cfl(tmp_path / "ksp", to_bart(k))
    write_cfl(tmp_path / "odd", k[0].transpose(1, 2, 0)[:, None])  # (H, 1, W, C)
    with pytest.raises(RobustkitError, match=r"dims \[32, 1, 24, 4\] \(READ 32, PHS2 24, COIL 4\).*PHS2 24 unread.*--bart-axes"):
        load(tmp_path / "odd", **ESPIRIT)
    (a,) = load(tmp_path / "ksp", **ESPIRIT)
    for axes in ("READ,PHS2,COIL", "0,2,3,13", "read, phs2, coil"):
        (b,) = load(tmp_path / "odd", bart_axes=axes, **ESPIRIT)
        np.testing.assert_array_equal(a.kspace, b.kspace)
    swapped = (tmp_path / "t")
    write_cfl(swapped, k[0].transpose(2, 1, 0)[:, :, None])  # (W, H, 1, C): H is PHS1, W is READ
    (c,) = load(swapped, bart_axes="PHS1,READ,COIL", **ESPIRIT)
    np.testing.assert_array_equal(a.kspace, c.kspace)


def test_crop_is_the_centre_of_the_coil_images_and_round_trips(tmp_path):
    """--crop h x w: target = centre crop of the original target (rescaled to max 1), k-space = F of the
    cropped coil images, maps cropped alike; the provenance records it; the file reads back."""
    from robustkit.data.crop import centre_slices

    k, _, _ = volume(2)
    raw = write_fastmri(tmp_path / "f.h5", k)
    full, cropped = tmp_path / "full.h5", tmp_path / "crop.h5"
    for out, extra in ((full, []), (cropped, ["--crop", "21x16"])):
        result = CliRunner().invoke(prepare, [str(raw), "--out", str(out), "--calib", "20", "--kernel", "5", *extra])
        assert result.exit_code == 0, result.output
    rows, cols = centre_slices((H, W), (21, 16))
    assert (rows, cols) == (slice(5, 26), slice(4, 20))
    for a, b in zip(read_samples(full), read_samples(cropped)):
        ratio = b.meta["scale"] / a.meta["scale"]
        np.testing.assert_allclose(b.target, a.target[rows, cols] * ratio, rtol=0, atol=2e-6)
        np.testing.assert_array_equal(b.maps, a.maps[:, rows, cols])
        np.testing.assert_allclose(ifft2c(b.kspace), ifft2c(a.kspace)[:, rows, cols] * ratio, atol=2e-6)
        check_canonical(b, (C, 21, 16))
        assert b.meta["crop"] == {"from": [H, W], "to": [21, 16], "rows": [5, 26], "cols": [4, 20]}
    assert read_provenance(cropped)["options"]["crop"] == [21, 16] and "centre 21x16" in read_provenance(cropped)["crop"]
    assert sum(split_counts(cropped).values()) == 2
    again = tmp_path / "again.h5"
    from robustkit.data.prepared import write_prepared

    write_prepared(again, read_samples(cropped), read_provenance(cropped))
    for a, b in zip(read_samples(cropped), read_samples(again)):
        for field in ("kspace", "maps", "target"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
        assert a.meta == b.meta


def test_parse_slices():
    assert parse_slices("2:5") == slice(2, 5)
    assert parse_slices("3") == slice(3, 4)
    assert parse_slices(":4") == slice(None, 4)
    assert parse_slices(None) == slice(None)
    assert parse_slices("0:10:2") == slice(0, 10, 2)


def test_registry_and_inspect(tmp_path):
    assert set(FORMATS) == {"fastmri", "calgary", "modl", "bart"}
    k, _, _ = volume(2)
    details = inspect(write_fastmri(tmp_path / "f.h5", k))
    assert details["format"] == "fastmri" and details["slices"] == 2 and details["coils"] == C
    assert details["matrix"] == [H, W]


def test_cli_prepare_and_info(tmp_path):
    k, images, maps = volume(2)
    raw = write_fastmri(tmp_path / "f.h5", k)
    out = tmp_path / "out" / "prepared.h5"
    args = [str(raw), "--out", str(out), "--calib", "20", "--kernel", "5", "--split", "val"]
    result = CliRunner().invoke(prepare, args)
    assert result.exit_code == 0, result.output
    assert "samples: 2 (val 2)" in result.output
    samples = read_samples(out)
    assert len(samples) == 2 and all(s.meta["split"] == "val" for s in samples)
    check_canonical(samples[0])
    provenance = read_provenance(out)
    assert provenance["inputs"][0]["format"] == "fastmri" and len(provenance["inputs"][0]["sha256"]) == 64
    # refuses to overwrite, then overwrites on request
    again = CliRunner().invoke(prepare, args)
    assert again.exit_code != 0 and "already exists" in str(again.exception)
    assert CliRunner().invoke(prepare, args + ["--overwrite", "--slices", "1:2"]).exit_code == 0
    assert [s.meta["slice"] for s in read_samples(out)] == [1]
    # info on the prepared file and on the raw file
    shown = CliRunner().invoke(info, [str(out)])
    assert shown.exit_code == 0 and "samples: 1 (val 1)" in shown.output and "targets: 1 of 1" in shown.output
    raw_info = CliRunner().invoke(info, [str(raw)])
    assert raw_info.exit_code == 0 and "fastMRI" in raw_info.output and "slices: 2" in raw_info.output


def test_cli_prepare_several_formats_into_one_file(tmp_path):
    k, images, maps = volume(2)
    masks = np.stack([np.broadcast_to(line_mask(), (H, W))] * 2)
    modl = write_modl(tmp_path / "dataset.hdf5", images, maps, masks, split=1)
    write_cfl(tmp_path / "ksp", to_bart(k))
    out = tmp_path / "all.h5"
    result = CliRunner().invoke(prepare, [str(modl), str(tmp_path / "ksp.cfl"), "--out", str(out), "--kernel", "5"])
    assert result.exit_code == 0, result.output
    sources = [s.meta["source"] for s in read_samples(out)]
    assert sources == ["modl", "modl", "bart", "bart"]
