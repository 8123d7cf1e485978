"""The leaderboard: built from stored runs only (hand-made result frames), reloads equal to them."""

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from robustkit.cli import cli, main
from robustkit.report.leaderboard import build_leaderboard


def _write_run(root, name, study, rows, models, status="complete", weights=None, data=None):
    run_dir = root / name
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps({"study": study, "models": [m for m, _ in models]}))
    entries = [{"name": m, "source": s, **({"weights_sha256": weights} if weights else {})} for m, s in models]
    meta = {"status": status, "models": entries, **({"data": data} if data else {})}
    (run_dir / "meta.json").write_text(json.dumps(meta))
    pd.DataFrame(rows).to_csv(run_dir / "results.csv", index=False)
    return run_dir


def _attack_rows(model, psnr, ssim, adv, gauss, converged):
    rows = []
    for sample, (p, s, c) in enumerate(zip(psnr, ssim, converged)):
        rows.append({"model": model, "sample": sample, "kind": "clean", "eps": 0.0, "psnr": p, "ssim": s,
                     "psnr_drop": 0.0, "converged": c})
        for kind, drops in (("adversarial", adv), ("gaussian", gauss)):
            for eps, scale in ((0.02, 0.5), (0.05, 1.0), (0.1, 3.0)):  # headline ε: 0.05
                rows.append({"model": model, "sample": sample, "kind": kind, "eps": eps, "psnr": p - scale * drops[sample],
                             "ssim": s, "psnr_drop": scale * drops[sample], "converged": c})
    return rows


@pytest.fixture
def reports(tmp_path):
    root = tmp_path / "reports"
    # an OLDER attack run of mnmmol whose numbers must be ignored (the newer one wins)
    _write_run(root, "attack-20260101-000000", "attack", _attack_rows("mnmmol-4x", [1.0, 1.0], [0.1, 0.1], [9, 9], [9, 9],
                                                                       [True, True]), [("mnmmol-4x", "zoo")])
    _write_run(root, "attack-20260102-000000", "attack",
               _attack_rows("mnmmol-4x", [30.0, 32.0], [0.80, 0.84], [2.0, 4.0], [0.5, 0.7], [True, False])
               + _attack_rows("sense", [28.0, 29.0], [0.7, 0.72], [1.0, 1.5], [0.2, 0.4], [np.nan, np.nan]),
               [("mnmmol-4x", "zoo"), ("sense", "baseline")])
    # a NEWER but interrupted attack run: a complete run holds the model, so this one is not used
    _write_run(root, "attack-20260105-000000", "attack", _attack_rows("mnmmol-4x", [5.0], [0.1], [9], [9], [True]),
               [("mnmmol-4x", "zoo")], status="interrupted")
    shift = [{"model": "mnmmol-4x", "sample": s, "axis": axis, "condition": cond, "nominal": nominal, "psnr": 30.0 - drop,
              "ssim": 0.9, "psnr_drop": drop, "iterations": 50, "residual": 1e-6, "converged": True}
             for s in (0, 1) for axis, cond, nominal, drop in (
                 ("accel", "4x", True, 0.0), ("accel", "6x", False, 2.0 + s), ("accel", "8x", False, 5.0 + s),
                 ("noise", "σ=0.01", False, 1.0))]
    _write_run(root, "shift-20260103-000000", "shift", shift, [("mnmmol-4x", "zoo")])
    features = [{"model": "mnmmol-4x", "sample": s, "feature": "disc", "size": 2, "contrast": 0.5, "search": "random",
                 "contrast_recovered": 0.2 if fn else 0.9, "error_feature": 0.1, "detected": not fn, "false_negative": fn,
                 "row": 5, "col": 6, "candidates": 1, "iterations": 10, "residual": 1e-6, "converged": True}
                for s, fn in enumerate([True, False, False, False])]
    _write_run(root, "features-20260103-000000", "features", features, [("mnmmol-4x", "zoo")])
    audit = [{"model": "mnmmol-4x", "sample": s, "threshold": 0.98, "L": 0.9, "L_slow": 0.95, "L_max": lm,
              "passes": lm <= 0.98, "amplification": 1.0, "converged": True} for s, lm in enumerate([0.97, 0.991])]
    _write_run(root, "audit-20260104-000000", "audit", audit, [("mnmmol-4x", "zoo")])
    return root


def test_leaderboard_reloads_equal_to_the_runs_it_was_built_from(reports):
    csv_path, html_path, frame = build_leaderboard(reports)
    board = pd.read_csv(csv_path).set_index("model")
    assert list(board.index) == ["mnmmol-4x", "sense"]
    m, s = board.loc["mnmmol-4x"], board.loc["sense"]
    assert m["psnr"] == pytest.approx(31.0) and m["ssim"] == pytest.approx(0.82)
    assert m["eps"] == 0.05 and m["adv_psnr_drop"] == pytest.approx(3.0) and m["gauss_psnr_drop"] == pytest.approx(0.6)
    assert m["converged_clean"] == pytest.approx(0.5) and m["converged_attacked"] == pytest.approx(0.5)
    assert m["shift_accel_drop"] == pytest.approx(5.5) and m["shift_noise_drop"] == pytest.approx(1.0)
    assert m["false_negative_rate"] == pytest.approx(0.25) and m["L"] == pytest.approx(0.991)
    assert m["attack_run"] == "attack-20260102-000000" and m["L_run"] == "audit-20260104-000000"
    assert m["shift_run"] == "shift-20260103-000000" and m["features_run"] == "features-20260103-000000"
    assert m["source"] == "zoo" and s["source"] == "baseline"
    assert s["psnr"] == pytest.approx(28.5) and s["adv_psnr_drop"] == pytest.approx(1.25)
    for column in ("shift_accel_drop", "false_negative_rate", "L", "converged_clean"):  # no run holds these: empty
        assert np.isnan(s[column])
    reloaded = pd.read_csv(csv_path)
    pd.testing.assert_frame_equal(reloaded, frame, check_dtype=False)


def test_a_run_that_did_not_complete_is_used_only_alone_and_says_so(tmp_path):
    root = tmp_path / "reports"
    _write_run(root, "attack-20260101-000000", "attack", _attack_rows("mol-4x", [20.0], [0.5], [1], [1], [True]),
               [("mol-4x", "zoo")], status="failed")
    frame = build_leaderboard(root)[2].set_index("model")
    assert frame.loc["mol-4x", "psnr"] == pytest.approx(20.0)
    assert frame.loc["mol-4x", "attack_run"] == "attack-20260101-000000 (failed)"
    page = (root / "leaderboard.html").read_text()
    assert "Numbers from runs that did not complete (their status is in the run column) for mol-4x" in page


def test_a_complete_run_whose_name_ends_in_a_bracket_is_not_called_unfinished(tmp_path):
    root = tmp_path / "reports"  # a user renamed the folder; its status is complete
    _write_run(root, "attack-mine (copy)", "attack", _attack_rows("mol-4x", [20.0], [0.5], [1], [1], [True]),
               [("mol-4x", "zoo")])
    frame = build_leaderboard(root)[2].set_index("model")
    assert frame.loc["mol-4x", "attack_run"] == "attack-mine (copy)"
    assert "did not complete" not in (root / "leaderboard.html").read_text()


def test_unconverged_solves_are_named_above_the_table(reports):
    page = (build_leaderboard(reports)[1]).read_text()  # mnmmol-4x: clean solves converged on 1 of 2 slices
    assert "Not all solves converged for mnmmol-4x: some of their numbers are not of a fixed point" in page
    assert "adversarial solves converged" in page


def test_two_networks_under_one_name_are_two_rows(tmp_path):
    """Runs of the shipped modl-4x, then of the user's ./models/modl-4x: never one row."""
    root = tmp_path / "reports"
    shift = [{"model": "modl-4x", "sample": 0, "axis": "noise", "condition": "σ=0.05", "nominal": False, "psnr": 28.0,
              "ssim": 0.9, "psnr_drop": 12.0}]
    _write_run(root, "shift-20260101-000000", "shift", shift, [("modl-4x", "zoo")], weights="aaaaaaaa11")
    _write_run(root, "attack-20260102-000000", "attack", _attack_rows("modl-4x", [31.0], [0.8], [20], [5], [np.nan]),
               [("modl-4x", "zoo")], weights="bbbbbbbb22")
    frame = build_leaderboard(root)[2].set_index("model")
    assert list(frame.index) == ["modl-4x (weights aaaaaaaa)", "modl-4x"]
    new, old = frame.loc["modl-4x"], frame.loc["modl-4x (weights aaaaaaaa)"]
    assert new["psnr"] == pytest.approx(31.0) and np.isnan(new["shift_noise_drop"])  # the shift was of other weights
    assert old["shift_noise_drop"] == pytest.approx(12.0) and np.isnan(old["psnr"])


def test_leaderboard_html_is_a_sortable_table_without_network(reports):
    _, html_path, _ = build_leaderboard(reports)
    html = html_path.read_text()
    assert '<table class="sortable">' in html and "addEventListener('click'" in html
    assert "script-src 'sha256-" in html and "default-src 'none'" in html and "http" not in html.split("<body>")[1].replace(
        "leaderboard.csv", "")
    assert 'data-value="31.0"' in html and "5 %" in html and "attack-20260102-000000" in html


def test_leaderboard_cli_and_bad_reports_dir(reports, tmp_path, capsys):
    result = CliRunner().invoke(cli, ["leaderboard", str(reports)], catch_exceptions=False)
    assert result.exit_code == 0 and "2 models" in result.output
    for bad in (tmp_path / "nope", reports / "attack-20260102-000000" / "results.csv"):
        with pytest.raises(SystemExit) as info:
            main(["leaderboard", str(bad)])
        assert info.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "robustkit: error:" in err and "Traceback" not in err
    assert not (tmp_path / "nope").exists()


def test_report_command_builds_the_leaderboard_too(reports, tmp_path):
    """Even when some folders have no page (here: studies this report does not know), the
    leaderboard of the folder is still written from the runs it can read."""
    import shutil

    from robustkit.report.leaderboard import CSV, HTML

    root = tmp_path / "few"
    root.mkdir()
    for name in ("shift-20260103-000000", "features-20260103-000000"):
        shutil.copytree(reports / name, root / name)
    CliRunner().invoke(cli, ["report", "--reports-dir", str(root)])
    board = pd.read_csv(root / CSV)
    assert (root / HTML).is_file() and list(board["model"]) == ["mnmmol-4x"]
    assert board.loc[0, "false_negative_rate"] == pytest.approx(0.25) and np.isnan(board.loc[0, "psnr"])


def test_the_data_of_a_rows_runs_is_named_and_a_mix_is_flagged(tmp_path):
    root = tmp_path / "reports"
    shift = [{"model": "modl-4x", "sample": 0, "axis": "noise", "condition": "σ=0.05", "nominal": False, "psnr": 28.0,
              "ssim": 0.9, "psnr_drop": 12.0}]
    _write_run(root, "shift-20260101-000000", "shift", shift, [("modl-4x", "zoo")], data={"name": "knee.h5", "accel": 4.0})
    _write_run(root, "attack-20260102-000000", "attack", _attack_rows("modl-4x", [31.0], [0.8], [20], [5], [np.nan]),
               [("modl-4x", "zoo")], data={"name": "builtin", "accel": 4.0})
    csv_path, html_path, frame = build_leaderboard(root)
    assert frame.set_index("model").loc["modl-4x", "data"] == "builtin (4×); knee.h5 (4×)"
    assert "come from runs on different data" in html_path.read_text()


def test_a_later_gaussian_only_run_does_not_blank_the_adversarial_drop_and_slice_counts_are_shown(tmp_path):
    root = tmp_path / "reports"
    _write_run(root, "attack-20260101-000000", "attack",
               _attack_rows("modl-4x", [40.0, 41.0], [0.9, 0.9], [10.0, 12.0], [1.0, 1.0], [np.nan, np.nan])
               + _attack_rows("sense", [30.0, 31.0], [0.8, 0.8], [2.0, 2.0], [0.5, 0.5], [np.nan, np.nan]),
               [("modl-4x", "zoo"), ("sense", "baseline")])
    later = [r for r in _attack_rows("modl-4x", [42.0], [0.9], [0.0], [3.0], [np.nan]) if r["kind"] != "adversarial"]
    _write_run(root, "attack-20260102-000000", "attack", later, [("modl-4x", "zoo")])
    csv_path, html_path, frame = build_leaderboard(root)
    frame = frame.set_index("model")
    assert frame.loc["modl-4x", "adv_psnr_drop"] == pytest.approx(11.0)  # the older run's: it attacked the model
    assert frame.loc["modl-4x", "attack_run"] == "attack-20260101-000000"
    assert frame.loc["modl-4x", "slices"] == 2 and frame.loc["sense", "slices"] == 2
    assert "different numbers of slices" not in html_path.read_text()
    _write_run(root, "attack-20260103-000000", "attack", _attack_rows("sense", [29.0], [0.8], [2.0], [0.5], [np.nan]),
               [("sense", "baseline")])
    frame = build_leaderboard(root)[2].set_index("model")
    assert frame.loc["sense", "slices"] == 1
    assert "means over different numbers of slices (1, 2; the slices column)" in html_path.read_text()


def test_a_model_whose_card_failed_its_gate_is_named_on_the_leaderboard_and_the_report(tmp_path):
    from robustkit.report.runs import model_notes

    root = tmp_path / "reports"
    run_dir = _write_run(root, "attack-20260101-000000", "attack",
                         _attack_rows("m_gate", [30.0], [0.8], [2.0], [0.5], [False]), [("m_gate", "zoo")])
    meta = json.loads((run_dir / "meta.json").read_text())
    meta["models"][0]["gate_failed"] = ["converged", "lipschitz"]
    (run_dir / "meta.json").write_text(json.dumps(meta))
    page = build_leaderboard(root)[1].read_text()
    assert "m_gate failed the convergence gate when trained" in page
    (note,) = model_notes(meta)
    assert note.startswith("model 'm_gate' failed its convergence gate when trained (converged, lipschitz;")


def test_a_model_with_a_modl_anchor_is_named_on_the_leaderboard(tmp_path):
    """meta.json's ``anchor: modl`` (an MnM-MOL leaking towards a frozen MoDL) puts the model in a
    banner on the leaderboard, as its run's report notes it; a model without one is not named."""
    root = tmp_path / "reports"
    run_dir = _write_run(root, "attack-20260101-000000", "attack",
                         _attack_rows("m_anchor", [30.0], [0.8], [2.0], [0.5], [True]), [("m_anchor", "zoo")])
    meta = json.loads((run_dir / "meta.json").read_text())
    meta["models"][0]["anchor"] = "modl"
    (run_dir / "meta.json").write_text(json.dumps(meta))
    _, html_path, frame = build_leaderboard(root)
    assert frame.attrs["modl_anchor"] == ["m_anchor"]
    assert "m_anchor leak towards a frozen MoDL" in html_path.read_text()
    meta["models"][0].pop("anchor")
    (run_dir / "meta.json").write_text(json.dumps(meta))
    _, html_path, frame = build_leaderboard(root)
    assert frame.attrs["modl_anchor"] == [] and "frozen MoDL" not in html_path.read_text()
