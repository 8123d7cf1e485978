"""Bad input is refused with one clear line, through the Python API and the CLI, writing nothing.

Every case is run twice: ``load(...)`` must raise :class:`RobustkitError` with a message naming the
problem, and ``robustkit data prepare ... --out OUT`` (through ``robustkit.cli.main``, exactly as
the console script runs) must exit with status 2, print one line ``robustkit: error: ...`` and
leave nothing at OUT (no temporary file either).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import h5py
import numpy as np
import pytest

from robustkit.cli import main
from robustkit.data.loaders import load
from robustkit.errors import RobustkitError
from robustkit.physics.masks import MaskSpec, cartesian_mask
from tests.test_loaders import C, H, W, line_mask, to_bart, volume, write_cfl, write_fastmri


@dataclass
class Case:
    """A bad input: ``make(tmp_path)`` writes it and returns the path; ``match`` is a regex of the message."""

    make: Callable[[Path], Path]
    match: str
    api: dict[str, Any] = field(default_factory=dict)
    cli: list[str] = field(default_factory=list)


def _fastmri(tmp: Path, **changes) -> Path:
    k, _, _ = volume(2)
    return write_fastmri(tmp / "f.h5", k, **changes)


def _truncated(tmp: Path) -> Path:
    path = _fastmri(tmp)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 6 // 10])
    return path


def _nan(tmp: Path, value: float = np.nan) -> Path:
    k, _, _ = volume(2)
    k[1, 2, 5, 7] = value
    return write_fastmri(tmp / "f.h5", k)


def _text(tmp: Path) -> Path:
    (tmp / "notes.txt").write_text("hello")
    return tmp / "notes.txt"


def _h5(tmp: Path, **datasets) -> Path:
    with h5py.File(tmp / "x.h5", "w") as f:
        for key, value in datasets.items():
            f.create_dataset(key, data=value)
    return tmp / "x.h5"


def _modl(tmp: Path, drop: str | None = None, maps_w: int = W, mask_shape: tuple = (3, H, W)) -> Path:
    _, images, maps = volume(3)
    masks = np.ones(mask_shape, bool)
    path = tmp / "dataset.hdf5"
    with h5py.File(path, "w") as f:
        f.create_dataset("trnOrg", data=images.astype(np.complex64))
        f.create_dataset("trnCsm", data=maps[..., :maps_w].astype(np.complex64))
        f.create_dataset("trnMask", data=masks.astype(np.int8))
        if drop:
            del f[drop]
    return path


def _bart(tmp: Path, maps_coils: int = C, truncate: bool = False, phs2: int = 1, value: float | None = None) -> Path:
    k, _, maps = volume(2)
    if value is not None:
        k[0, 1, 3, 3] = value
    array = to_bart(k)
    if phs2 > 1:
        array = np.concatenate([array] * phs2, axis=2)
    cfl = write_cfl(tmp / "ksp", array)
    write_cfl(tmp / "sens", to_bart(maps[:, :maps_coils]))
    if truncate:
        cfl.write_bytes(cfl.read_bytes()[:-100])
    return cfl


def _prepared(tmp: Path) -> Path:
    from robustkit.data.loaders import load as load_
    from robustkit.data.prepared import write_prepared

    raw = _fastmri(tmp)
    return write_prepared(tmp / "p.h5", load_(raw, calib=20, kernel=5), {"source": "test"})


def _group(tmp: Path) -> Path:
    with h5py.File(tmp / "g.h5", "w") as f:
        f.create_group("kspace")
    return tmp / "g.h5"


def _folder(tmp: Path) -> Path:
    (tmp / "raw").mkdir()
    _fastmri(tmp / "raw")
    return tmp / "raw"


CASES: dict[str, Case] = {
    "missing file": Case(lambda t: t / "nope.h5", r"nope\.h5 does not exist"),
    "truncated HDF5 (auto)": Case(_truncated, r"truncated or corrupt"),
    "truncated HDF5 (--format fastmri)": Case(
        _truncated, r"truncated or corrupt", {"fmt": "fastmri"}, ["--format", "fastmri"]
    ),
    "not HDF5 nor BART": Case(_text, r"cannot tell the format"),
    "--format bart for an HDF5 file": Case(_fastmri, r"\.hdr does not exist; a BART array needs both", {"fmt": "bart"},
                                           ["--format", "bart"]),
    "unknown format name": Case(_fastmri, r"unknown format 'dicom'", {"fmt": "dicom"}, ["--format", "dicom"]),
    "HDF5 of unknown layout": Case(lambda t: _h5(t, ksp=np.zeros((2, 4, 8, 8), np.complex64)), r"no known format"),
    "missing key": Case(
        lambda t: _h5(t, ksp=np.zeros((2, 4, 8, 8), np.complex64)),
        r"no dataset 'kspace'",
        {"fmt": "fastmri"},
        ["--format", "fastmri"],
    ),
    "k-space a group (--format fastmri)": Case(_group, r"'kspace' is an HDF5 group, not an array", {"fmt": "fastmri"},
                                               ["--format", "fastmri"]),
    "k-space a group (--format calgary)": Case(_group, r"'kspace' is an HDF5 group, not an array", {"fmt": "calgary"},
                                               ["--format", "calgary"]),
    "no coils": Case(lambda t: write_fastmri(t / "f.h5", np.zeros((2, 0, H, W), np.complex64)), r"has 0 coils"),
    "no slices": Case(lambda t: write_fastmri(t / "f.h5", np.zeros((0, C, H, W), np.complex64)), r"has 0 slices"),
    "a folder (--format fastmri)": Case(_folder, r"raw is a folder; pass the raw files in it", {"fmt": "fastmri"},
                                        ["--format", "fastmri"]),
    "images smaller than the SSIM window": Case(
        lambda t: write_fastmri(t / "f.h5", volume(1, 6, W)[0]), r"the image is 6x24 \(H x W\); robustkit needs at least 7"),
    "missing MoDL maps": Case(lambda t: _modl(t, drop="trnCsm"), r"no dataset 'trnCsm'"),
    "wrong rank": Case(
        lambda t: _h5(t, kspace=np.ones((2, 4, 8, 8, 2), np.complex64)), r"must have shape \(slices, coils, H, W\)"
    ),
    "odd Calgary channels": Case(
        lambda t: _h5(t, kspace=np.ones((2, 8, 8, 7), np.float32)),
        r"must be real of shape",
        {"fmt": "calgary"},
        ["--format", "calgary"],
    ),
    "MoDL maps not matching images": Case(lambda t: _modl(t, maps_w=W - 2), r"coil maps trnCsm .* do not match"),
    "BART maps not matching k-space": Case(
        lambda t: _bart(t, maps_coils=C - 1), r"coil maps .* do not match k-space", {"maps": "MAPS"}, ["--maps", "MAPS"]
    ),
    "NaN in k-space": Case(_nan, r"f\.h5 slice 1: k-space contains NaN or Inf"),
    "Inf in k-space": Case(lambda t: _bart(t, value=np.inf), r"ksp slice 0: k-space contains NaN or Inf"),
    "mask of the wrong size": Case(
        lambda t: _fastmri(t, mask=np.ones(W + 2, bool)), r"mask of length 26 does not match k-space width 24"
    ),
    "mask with no samples": Case(lambda t: _fastmri(t, mask=np.zeros(W, bool)), r"mask samples no k-space location"),
    "MoDL mask of the wrong shape": Case(
        lambda t: _modl(t, mask_shape=(3, H, W + 1)), r"mask trnMask .* does not match"
    ),
    "truncated BART data": Case(lambda t: _bart(t, truncate=True), r"truncated or the header is wrong"),
    "3-D BART k-space": Case(lambda t: _bart(t, phs2=2), r"dims \[32, 24, 2, 4, .*leaves PHS2 2 unread.*bart fft"),
    "unreadable --bart-axes": Case(_bart, r"cannot read --bart-axes 'PHS1,FOO'", {"bart_axes": "PHS1,FOO"},
                                   ["--bart-axes", "PHS1,FOO"]),
    "--bart-axes for a non-BART file": Case(
        _fastmri, r"--bart-axes applies to BART files only", {"bart_axes": "PHS1,PHS2,COIL"}, ["--bart-axes", "PHS1,PHS2,COIL"]
    ),
    "--maps for a non-BART file": Case(
        _fastmri, r"--maps applies to BART files only", {"maps": "MAPS"}, ["--maps", "MAPS"]
    ),
    "--slices selecting nothing": Case(
        _fastmri, r"selects none of its 2 slices", {"slices": "5:9"}, ["--slices", "5:9"]
    ),
    "--ignore-mask on undersampled data": Case(
        lambda t: _fastmri(t, mask=line_mask()),
        r"undersampled .* drop --ignore-mask",
        {"ignore_mask": True},
        ["--ignore-mask"],
    ),
    "already prepared": Case(_prepared, r"already a robustkit prepared dataset"),
}


def _resolve(case: Case, tmp_path: Path) -> tuple[Path, dict[str, Any], list[str]]:
    """Write the case's files; ``MAPS`` placeholders become the BART maps path."""
    path = case.make(tmp_path)
    maps = str(tmp_path / "sens")
    api = {key: (maps if value == "MAPS" else value) for key, value in case.api.items()}
    cli = [maps if arg == "MAPS" else arg for arg in case.cli]
    return path, api, cli


def run_cli(args: list[str], capsys) -> tuple[int, str]:
    """``robustkit ARGS`` as the console script runs it: (exit status, stderr)."""
    with pytest.raises(SystemExit) as exc:
        main(args)
    return exc.value.code, capsys.readouterr().err


@pytest.mark.parametrize("name", CASES)
def test_api_raises_a_clear_error(name, tmp_path):
    path, api, _ = _resolve(CASES[name], tmp_path)
    with pytest.raises(RobustkitError, match=CASES[name].match) as exc:
        load(path, calib=20, kernel=5, **api)
    assert "\n" not in str(exc.value) and ";" in str(exc.value)  # one line: problem; fix


@pytest.mark.parametrize("name", CASES)
def test_cli_exits_2_with_one_line_and_writes_nothing(name, tmp_path, capsys):
    path, _, cli = _resolve(CASES[name], tmp_path)
    out = tmp_path / "out" / "prepared.h5"
    args = ["data", "prepare", str(path), "--out", str(out), "--calib", "20", "--kernel", "5", *cli]
    code, err = run_cli(args, capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("robustkit: error: ") and re.search(CASES[name].match, lines[0])
    assert not out.exists()
    assert not out.parent.exists() or not list(out.parent.iterdir())  # no temporary file left either


def test_existing_output_is_left_untouched(tmp_path, capsys):
    raw = _fastmri(tmp_path)
    out = tmp_path / "out.h5"
    out.write_bytes(b"precious")
    code, err = run_cli(["data", "prepare", str(raw), "--out", str(out)], capsys)
    assert code == 2 and "already exists" in err and "--overwrite" in err
    assert out.read_bytes() == b"precious"


def test_inputs_of_two_image_sizes_are_refused_and_cropped_to_one(tmp_path, capsys):
    """Every command reads a prepared file at one image size (a batch of two sizes cannot be
    stacked): two sizes are refused with the crop that would fit both; with it the file is written."""
    small = write_fastmri(tmp_path / "a.h5", volume(1, H, W)[0])
    large = write_fastmri(tmp_path / "b.h5", volume(1, H + 6, W + 4)[0])
    out = tmp_path / "mix.h5"
    code, err = run_cli(["data", "prepare", str(small), str(large), "--out", str(out)], capsys)
    assert code == 2 and not out.exists()
    assert f"sample 1 is {H + 6}×{W + 4} but the first is {H}×{W}" in err and f"add --crop {H}x{W}" in err
    from robustkit.cli import main

    main(["data", "prepare", str(small), str(large), "--out", str(out), "--crop", f"{H}x{W}"])
    assert out.exists()


@pytest.mark.parametrize("name", ["missing file", "truncated HDF5 (auto)", "not HDF5 nor BART"])
def test_info_on_bad_input(name, tmp_path, capsys):
    path, _, _ = _resolve(CASES[name], tmp_path)
    code, err = run_cli(["data", "info", str(path)], capsys)
    assert code == 2 and re.search(CASES[name].match, err) and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("accel", [0, -4, float("nan")])
def test_non_positive_acceleration_is_refused(accel):
    with pytest.raises(RobustkitError, match="acceleration must be a number ≥ 1"):
        cartesian_mask((H, W), accel, np.random.default_rng(0))
    with pytest.raises(RobustkitError, match="acceleration"):
        MaskSpec(accel=accel).draw((H, W), seed=0)


@pytest.mark.parametrize("crop, match", [
    ("40x24", r"f\.h5 slice 0: --crop 40x24 is larger than the image, 32x24 \(H x W\); choose a crop within it"),
    ("0.9", r"cannot read --crop '0\.9'; give the image size HxW.*--espirit-crop"),
    ("6x20", r"--crop 6x20 is too small: robustkit needs at least 7 pixels a side"),
])
def test_crop_that_cannot_be_done_exits_2_and_writes_nothing(crop, match, tmp_path, capsys):
    raw = _fastmri(tmp_path)
    out = tmp_path / "out" / "prepared.h5"
    code, err = run_cli(["data", "prepare", str(raw), "--out", str(out), "--calib", "20", "--kernel", "5", "--crop", crop], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and re.search(match, err)
    assert not out.exists() and (not out.parent.exists() or not list(out.parent.iterdir()))


def test_crop_of_undersampled_data_is_refused(tmp_path, capsys):
    raw = _fastmri(tmp_path, mask=line_mask())
    out = tmp_path / "p.h5"
    code, err = run_cli(["data", "prepare", str(raw), "--out", str(out), "--calib", "20", "--kernel", "5", "--crop", "16x16"], capsys)
    assert code == 2 and "--crop needs fully sampled k-space" in err and not out.exists()


@pytest.mark.parametrize("command", [["models", "evaluate", "NAME"], ["models", "check", "NAME"], ["audit", "--model", "NAME"]])
def test_data_without_samples_in_the_chosen_split_exits_2_naming_what_the_file_holds(command, tmp_path, capsys, monkeypatch):
    from robustkit.models import build_model
    from robustkit.models.zoo import save_model

    save_model(tmp_path / "zoo" / "m", build_model("mnmmol", {"width": 4, "depth": 2}), {"data": {"accel": 2.0}})
    monkeypatch.setenv("ROBUSTKIT_ZOO", str(tmp_path / "zoo"))
    (tmp_path / "raw").mkdir()
    data = _prepared(tmp_path / "raw")  # no split in the path, prepared without --split: no split at all
    reports = tmp_path / "reports"
    args = [a.replace("NAME", "m") for a in command] + ["--data", str(data), "--split", "test"]
    code, err = run_cli(args + (["--reports-dir", str(reports)] if command[0] == "audit" else []), capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert re.search(r"file .*p\.h5 has 2 samples without a split; no 'test' — use --split all", err)
    assert not reports.exists()


@pytest.mark.parametrize("command, words", [
    (["models", "evaluate", "NAME"], "so PSNR, SSIM and NMSE cannot be scored"),
    (["shift", "--model", "NAME", "--axis", "coils", "--coils", "2"], "so the shift study's PSNR and SSIM cannot be scored"),
    (["attack", "--model", "NAME", "--eps", "0.05", "--kind", "gaussian"], "so the attack study's PSNR and SSIM cannot"),
])
def test_slices_without_a_target_are_refused_where_they_would_be_scored(command, words, tmp_path, capsys, monkeypatch):
    """A file prepared from undersampled k-space has no target: scoring it gave PSNR −inf and exit 0."""
    from robustkit.models import build_model
    from robustkit.models.zoo import save_model

    save_model(tmp_path / "zoo" / "m", build_model("modl", {"width": 4, "depth": 2, "K": 1}), {"data": {"accel": 2.0}})
    monkeypatch.setenv("ROBUSTKIT_ZOO", str(tmp_path / "zoo"))
    data = tmp_path / "p.h5"
    main(["data", "prepare", str(_fastmri(tmp_path, mask=line_mask())), "--out", str(data), "--calib", "20", "--kernel", "5"])
    capsys.readouterr()
    reports = tmp_path / "reports"
    args = [a.replace("NAME", "m") for a in command] + ["--data", str(data), "--accel", "2"]
    code, err = run_cli(args + (["--reports-dir", str(reports)] if command[0] != "models" else []), capsys)
    errors = [line for line in err.splitlines() if line.startswith("robustkit: error")]  # warnings may precede it
    assert code == 2 and len(errors) == 1
    assert "2 of the 2 slices of" in err and "have no target" in err and words in err
    assert not reports.exists()


def test_a_file_with_its_own_masks_says_that_accel_is_not_used(tmp_path, capsys):
    """--accel draws masks only for slices without one: on a file that carries its own, it used to be
    ignored silently while headers, warnings and run files reported it."""
    from robustkit.data.evaluation import eval_dataset
    from robustkit.errors import RobustkitWarning

    data = tmp_path / "p.h5"
    main(["data", "prepare", str(_fastmri(tmp_path, mask=line_mask())), "--out", str(data), "--calib", "20", "--kernel", "5"])
    mask = line_mask()
    own = mask.size / mask.sum()
    with pytest.warns(RobustkitWarning, match=rf"carries its own acquisition masks \(acceleration {own:.3g}× on average\): "
                                              r"--accel 8 is not used"):
        _, info = eval_dataset(str(data), None, 8.0)
    assert info.accel == pytest.approx(own)


@pytest.mark.parametrize("argv", [[], ["models"], ["data"]])
def test_a_bare_command_group_prints_its_help_as_written(argv, capsys):
    """``robustkit``, ``robustkit models``: the group's help with its line breaks, exit 2."""
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.startswith("Usage: robustkit") and err.count("\n") > 5
    assert "robustkit: error" not in err and "Commands:" in err


def test_train_and_study_file_errors_name_the_option_and_the_file(tmp_path, capsys):
    """One option per message; a non-empty --out says what it holds; a study file's bad value names
    its table and file."""
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    suite = tmp_path / "samp0.toml"
    suite.write_text("[attack]\nsamples = 0\n")
    for argv, message in [
        (["train", "--model", "modl", "--epochs", "0"], "--epochs must be ≥ 1, got 0"),
        (["train", "--model", "modl", "--accel", "0.5"], "--accel must be ≥ 1, got 0.5"),
        (["train", "--model", "modl", "--out", str(tmp_path / "full")], "is not empty (it holds keep.txt)"),
        (["run", str(suite)], f"samples must be >= 1, got 0 (in [attack] of {suite})"),
    ]:
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        err = capsys.readouterr().err.strip()
        assert exit_.value.code == 2 and message in err and "\n" not in err, (argv, err)
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"


def test_the_same_input_given_twice_is_refused(tmp_path, capsys):
    raw = _fastmri(tmp_path)
    out = tmp_path / "twice.h5"
    code, err = run_cli(["data", "prepare", str(raw), str(tmp_path / "." / raw.name), "--out", str(out)], capsys)
    assert code == 2 and "is given twice" in err and not out.exists()
