"""The report layer: pages built from tiny fake run folders (the documented layout, no models run).

What a reader relies on: the conclusion quotes the numbers of the results, every table's CSV sits
where the page links it and reloads to the same frame, user strings cannot inject HTML, the page
fetches nothing, bad folders are named. The slow test opens a page in headless Chromium.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import struct
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from robustkit.cli import cli, main
from robustkit.errors import RobustkitError
from robustkit.report import ReportIncomplete, build_index, build_report, build_run_page, build_suite_page

MODELS = {"modl-t": "modl", "mnmmol-t": "mnmmol"}
N = 3  # slices per model
PNG = b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------ fake run folders
def _meta(status: str, models: dict[str, str]) -> dict:
    return {"status": status, "started": "2026-01-01T00:00:00+0000", "finished": "2026-01-01T00:01:00+0000",
            "seed": 0, "device": "cpu", "command": "robustkit test", "git_revision": "abc",
            "versions": {"robustkit": "0.1.0"},
            "models": [{"name": n, "model": k, "weights_sha256": "0" * 64} for n, k in models.items()]}


def _attack(rng, models):
    rows, traces = [], []
    for m in models:
        for s in range(N):
            clean = 30 + rng.normal()
            rows.append(dict(model=m, sample=s, kind="clean", eps=0.0, psnr=clean, ssim=0.9, nmse=1e-3, psnr_clean=clean,
                             psnr_drop=0.0, amplification=np.nan, perturbation=0.0, converged=True))
            for kind in ("adversarial", "gaussian"):
                for eps in (0.02, 0.05, 0.1):
                    drop = eps * 100 * (2 if kind == "adversarial" else 0.3) + rng.random()
                    rows.append(dict(model=m, sample=s, kind=kind, eps=eps, psnr=clean - drop, ssim=0.9 - eps,
                                     nmse=1e-3 * (1 + eps), psnr_clean=clean, psnr_drop=drop,
                                     amplification=1 + rng.random(), perturbation=eps, converged=True))
                    if kind == "adversarial":
                        traces += [dict(model=m, kind=kind, eps=eps, sample=s, restart=0, step=k, loss=0.01 * k)
                                   for k in range(3)]
    return pd.DataFrame(rows), pd.DataFrame(traces)


def _init_test(rng, models):
    rows, traces = [], []
    for m in models:
        for s in range(N):
            for start, radius in (("sense", np.nan), ("zeros", np.nan), ("ball", 0.5), ("noise", np.nan)):
                same = not (start == "noise" and s == 0)
                rows.append(dict(model=m, sample=s, start=start, radius=radius, delta=0.3, start_distance=0.1,
                                 iterations=10 + s, residual=1e-5, converged=True, distance=1e-4 if same else 0.2,
                                 same_fixed_point=same, psnr=30.0, sense_in_ball=True, cap=60))
                traces += [dict(model=m, sample=s, start=start, radius=radius, iteration=k, residual=0.5 ** k)
                           for k in range(6)]
    return pd.DataFrame(rows), pd.DataFrame(traces)


def _audit(rng, models):
    rows, traces = [], []
    for m, kind in models.items():
        deq = kind != "modl"
        for s in range(N):
            L = 0.95 + 0.02 * s if deq else np.nan
            rows.append(dict(model=m, sample=s, delta=0.3 if deq else np.nan, threshold=0.98 if deq else np.nan,
                             L=L, L_change=0.0, L_slow=L - 0.01 if deq else np.nan, L_slow_change=0.0,
                             jacobian_norm=L - 0.02 if deq else np.nan, jacobian_iterations=30 if deq else np.nan,
                             jacobian_converged=deq or np.nan, passes=(L <= 0.98) if deq else np.nan,
                             iterations=12 if deq else np.nan, residual=1e-5 if deq else np.nan,
                             amplification=2 + rng.random()))
            if deq:
                traces += [dict(model=m, sample=s, estimator=e, step=k, value=L * (1 - 0.1 / (k + 1)))
                           for e in ("L", "L_slow", "jacobian_norm") for k in range(4)]
    return pd.DataFrame(rows), pd.DataFrame(traces)


def _sweep(rng, models):
    rows = []
    for i, m in enumerate(models):
        for s in range(N):
            rows.append(dict(model=m, sample=s, delta=[0.1, 0.3][i % 2], psnr=28 + i + rng.normal(), ssim=0.9,
                             iterations=15, converged=True, L_own=0.96, L_slow=0.95, L_common=0.97, common_delta=0.3,
                             threshold=0.98, within=s > 0, init_success=1.0 - 0.5 * (s == 0), sense_in_ball=True,
                             adv_eps=0.05, adv_psnr_drop=2.0 + rng.random()))
    return pd.DataFrame(rows), None


def _shift(rng, models):
    """Accel and noise axes; MoDL is made worse at 2x than at its nominal 4x, one MnM-MOL solve under noise fails."""
    rows = []
    for m, kind in models.items():
        deq = kind != "modl"
        for s in range(N):
            nominal = 30 + rng.normal()
            for axis, cond, drop in (("accel", "2x", 1.5 if not deq else -1.0), ("accel", "4x", 0.0), ("accel", "8x", 4.0),
                                     ("noise", "σ=0", 0.0), ("noise", "σ=0.05", 2.0 + rng.random())):
                rows.append(dict(model=m, sample=s, axis=axis, condition=cond, nominal=drop == 0.0, psnr=nominal - drop,
                                 ssim=0.9 - 0.01 * drop, nmse=1e-3, psnr_nominal=nominal, psnr_drop=drop,
                                 iterations=20 if deq else np.nan, residual=1e-5 if deq else np.nan,
                                 converged=(not (cond == "σ=0.05" and s == 0)) if deq else np.nan))
    return pd.DataFrame(rows), None


MAKERS = {"attack": _attack, "init-test": _init_test, "audit": _audit, "sweep-delta": _sweep, "shift": _shift}


def make_run(root: Path, study: str, name: str | None = None, status: str = "complete",
             models: dict[str, str] = MODELS, config: dict | None = None, seed: int = 0) -> Path:
    """A run folder as the study commands write it (config/meta/results/traces/cells, attack examples)."""
    path = root / (name or f"{study}-20260101-000000")
    path.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    results, traces = MAKERS[study](rng, models)
    results.insert(0, "study", study)
    cfg = {"study": study, "models": list(models), "data": "builtin", "split": "test", "accel": 4.0, "samples": N,
           "seed": 0, **(config or {})}
    (path / "config.json").write_text(json.dumps(cfg))
    (path / "meta.json").write_text(json.dumps(_meta(status, models)))
    (path / "cells.json").write_text("[]")
    results.to_csv(path / "results.csv", index=False)
    if traces is not None:
        traces.to_csv(path / "traces.csv", index=False)
    if study == "attack":
        (path / "examples").mkdir()
        for m in models:
            for kind in ("adversarial", "gaussian"):
                z = rng.normal(size=(1, 8, 8)) + 1j * rng.normal(size=(1, 8, 8))
                np.savez(path / "examples" / f"{m}__{kind}__eps0.05.npz", sample=np.array([0]), target=z,
                         clean=z + 0.1, attacked=z + 0.3, perturbation=np.abs(rng.normal(size=(1, 8, 8))))
    return path


# ------------------------------------------------------------------ reading pages
class Page(HTMLParser):
    """What the tests read off a page: images, links, the conclusion's text, tables' rows, all text."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.imgs: list[str] = []
        self.links: list[str] = []
        self.tags: list[str] = []
        self.conclusion: list[str] = []
        self.tables: list[list[list[str]]] = []
        self.text: list[str] = []
        self._depth_concl = 0
        self._cell: list[str] | None = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        if tag == "img":
            self.imgs.append(a.get("src", ""))
        if tag == "a" and "href" in a:
            self.links.append(a["href"])
        if tag == "div" and "conclusion" in (a.get("class") or "").split():
            self._depth_concl = 1
        elif tag == "div" and self._depth_concl:
            self._depth_concl += 1
        if tag == "table":
            self.tables.append([])
        if tag == "tr":
            self.tables[-1].append([])
        if tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag == "div" and self._depth_concl:
            self._depth_concl -= 1
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        self.text.append(data)
        if self._depth_concl:
            self.conclusion.append(data)
        if self._cell is not None:
            self._cell.append(data)


def read_page(path: Path) -> Page:
    return Page(path.read_text())


def csv_links(page: Page, page_path: Path) -> list[Path]:
    return [page_path.parent / unquote(h) for h in page.links if h.endswith(".csv")]


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """A zoo with a card (and history) for modl-t only: mnmmol-t's curves are noted as missing."""
    root = tmp_path_factory.mktemp("zoo")
    (root / "modl-t").mkdir()
    history = [{"epoch": e, "train_loss": 1.0 / e, "val_psnr": 20 + e, "val_ssim": 0.5 + 0.1 * e} for e in (1, 2, 3)]
    (root / "modl-t" / "card.json").write_text(json.dumps({"model": "modl", "weights_sha256": "0" * 64, "history": history}))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ROBUSTKIT_ZOO", str(root))
        yield root


@pytest.fixture
def fast_figures(monkeypatch):
    """For tests about something else than figures: every figure becomes a 1×1 PNG (no drawing)."""
    from robustkit.report import figures

    tiny = base64.b64encode(PNG + struct.pack(">I", 13) + b"IHDR" + struct.pack(">II", 1, 1) + b"\x08\x02\x00\x00\x00")
    monkeypatch.setattr(figures, "to_png", lambda fig: tiny.decode())


@pytest.fixture(scope="module")
def reports(tmp_path_factory, zoo):
    """One run of every study and a suite of two of them, all pages built once."""
    root = tmp_path_factory.mktemp("reports")
    runs = {study: make_run(root, study, name=f"{study}-2026010{i + 1}-000000") for i, study in enumerate(MAKERS)}
    suite = root / "quick-20260109-000000"
    suite.mkdir()
    (suite / "suite.json").write_text(json.dumps({"file": "studies/quick.toml", "config": {"attack": {}, "audit": {}},
                                                  "studies": {"attack": runs["attack"].name, "audit": runs["audit"].name}}))
    pages = build_report([root])
    return root, runs, suite, pages


# ------------------------------------------------------------------ tests
def test_every_study_gets_a_self_contained_page(reports):
    root, runs, suite, pages = reports
    assert {p.parent for p in pages} >= {*runs.values(), suite, root}
    for study, run in runs.items():
        page = read_page(run / "report.html")
        assert page.imgs, study
        for src in page.imgs:  # figures embedded as valid PNGs
            assert src.startswith("data:image/png;base64,")
            w, h = png_size(base64.b64decode(src.split(",", 1)[1]))
            assert w > 50 and h > 50
        for link in page.links:  # nothing to fetch: only relative links
            assert not re.match(r"^[a-z]+:|^//", link), link
        assert "script" not in page.tags and "link" not in page.tags
        assert "Conclusion" in "".join(page.text)


def test_each_table_csv_is_linked_and_reloads_to_its_table(reports):
    _, runs, _, _ = reports
    for study, run in runs.items():
        page = read_page(run / "report.html")
        links = csv_links(page, run / "report.html")
        tables_csv = [p for p in links if p.parent.name == "tables"]
        assert tables_csv, study
        html_tables = [t for t in page.tables if t and t[0] and t[0][0] == "model"]  # data tables (not run details)
        assert len(html_tables) == len(tables_csv)
        for path, rows in zip(tables_csv, html_tables):
            assert path.exists(), path
            frame = pd.read_csv(path)
            assert len(rows) - 1 == len(frame)  # one HTML row per frame row
            for row, model in zip(rows[1:], frame["model"]):
                assert f"({model})" in row[0] or row[0] == model
        assert (run / "results.csv") in links


SUMMARIES = {"attack": "attack_summary", "init-test": "init_summary", "audit": "audit_summary", "sweep-delta": "sweep_summary",
             "shift": "shift_summary"}


@pytest.mark.parametrize("study", MAKERS)
def test_table_csv_is_the_frame_of_the_results(reports, study):
    from robustkit.report import tables

    run = reports[1][study]
    results = pd.read_csv(run / "results.csv")
    traces = pd.read_csv(run / "traces.csv") if (run / "traces.csv").exists() else None
    name = SUMMARIES[study]
    frame = getattr(tables, name)(results, traces) if study == "init-test" else getattr(tables, name)(results)
    if study != "sweep-delta":
        frame = tables.model_order(frame, list(MODELS))
    pd.testing.assert_frame_equal(pd.read_csv(run / "tables" / f"{name}.csv"), frame, check_dtype=False)


def test_attack_table_and_conclusion_have_the_numbers_of_the_results(reports):
    _, runs, _, _ = reports
    run = runs["attack"]
    r = pd.read_csv(run / "results.csv")
    expected = (r.groupby(["model", "kind", "eps"], sort=False)
                .agg(n=("psnr", "size"), psnr_mean=("psnr", "mean"), psnr_std=("psnr", lambda x: x.std(ddof=1)),
                     psnr_drop_mean=("psnr_drop", "mean"))
                .reset_index())
    got = pd.read_csv(run / "tables" / "attack_summary.csv")
    merged = expected.merge(got, on=["model", "kind", "eps"], suffixes=("", "_csv"))
    assert len(merged) == len(expected) == len(got)
    for c in ("n", "psnr_mean", "psnr_std", "psnr_drop_mean"):
        np.testing.assert_allclose(merged[c], merged[f"{c}_csv"], rtol=1e-12)

    page = read_page(run / "report.html")
    table = next(t for t in page.tables if t and t[0] and t[0][0] == "model")
    psnr_col = next(i for i, h in enumerate(table[0]) if h.startswith("PSNR"))
    shown = [row[psnr_col] for row in table[1:]]
    assert shown == [f"{m:.2f} ± {s:.2f}" for m, s in zip(got["psnr_mean"], got["psnr_std"])]
    conclusion = " ".join("".join(page.conclusion).split())
    adv = r[(r["kind"] == "adversarial") & (r["eps"] == 0.05)]  # largest ε ≤ 5 % (the grid has 10 % too)
    for model, label in (("modl-t", "MoDL (modl-t)"), ("mnmmol-t", "MnM-MOL (mnmmol-t)")):
        d = adv[adv["model"] == model]["psnr_drop"]
        assert f"{label} loses {d.mean():.2f} ± {d.std(ddof=1):.2f} dB" in conclusion
    assert "At ε = 5 % adversarial" in conclusion and "At ε = 5 % gaussian" in conclusion


def test_conclusions_of_audit_init_test_and_sweep(reports):
    _, runs, _, _ = reports
    text = {s: " ".join("".join(read_page(p / "report.html").conclusion).split()) for s, p in runs.items()}
    a = pd.read_csv(runs["audit"] / "results.csv")
    passes = int(a.loc[a["model"] == "mnmmol-t", "passes"].sum())
    assert f"{passes} of {N} test slices for MnM-MOL (mnmmol-t)" in text["audit"]
    assert "MoDL (modl-t)" in text["audit"]  # its amplification
    i = pd.read_csv(runs["init-test"] / "results.csv")
    noise = i[(i["model"] == "mnmmol-t") & (i["start"] == "noise")]["same_fixed_point"]
    assert f"noise {int(noise.sum())}/{N}" in text["init-test"] and f"ball r=0.5 {N}/{N}" in text["init-test"]
    s = pd.read_csv(runs["sweep-delta"] / "results.csv")
    for delta, d in s.groupby("delta"):
        assert f"δ = {delta:g}" in text["sweep-delta"]
        assert f"PSNR {d['psnr'].mean():.2f} ± {d['psnr'].std(ddof=1):.2f} dB" in text["sweep-delta"]
        assert f"L[H_θ] ≤ T on {int(d['within'].sum())}/{N} slices" in text["sweep-delta"]


def test_shift_conclusion_flags_more_samples_and_unconverged_solves(reports):
    _, runs, _, _ = reports
    text = " ".join("".join(read_page(runs["shift"] / "report.html").conclusion).split())
    r = pd.read_csv(runs["shift"] / "results.csv")
    modl = r[(r["model"] == "modl-t") & (r["axis"] == "accel")].groupby("condition")["psnr"].mean()
    assert f"MoDL (modl-t) gets worse with more samples: {modl['2x']:.2f} dB at 2x against {modl['4x']:.2f} dB" in text
    assert "MnM-MOL (mnmmol-t) gets worse" not in text
    assert f"MnM-MOL (mnmmol-t): solve under the noise shift converged on {N - 1} of {N} slices" in text
    assert "MnM-MOL (mnmmol-t): solve under the accel shift" not in text and "nominal solve" not in text
    drop = r[(r["model"] == "modl-t") & (r["condition"] == "8x")]["psnr_drop"]
    assert f"accel (nominal 4x): the largest PSNR drop from nominal is MoDL (modl-t) {drop.mean():.2f} ± {drop.std():.2f} dB at 8x" in text
    noisy = r[(r["model"] == "mnmmol-t") & (r["condition"] == "σ=0.05")]["psnr_drop"]
    assert f"MnM-MOL (mnmmol-t) {noisy.mean():.2f} ± {noisy.std():.2f} dB at σ=0.05 (solve converged on {N - 1} of {N})" in text


def test_training_curves_from_cards_and_missing_cards_noted(reports):
    _, runs, _, _ = reports
    page = read_page(runs["audit"] / "report.html")
    text = "".join(page.text)
    assert "Training curves of the 1 zoo models" in text
    assert "no training curves for mnmmol-t" in text
    training = pd.read_csv(runs["audit"] / "tables" / "training.csv")
    assert training["model"].tolist() == ["modl-t"] and training["epochs"].tolist() == [3]


def test_suite_page_combines_its_runs(reports):
    root, runs, suite, _ = reports
    page_path = suite / "report.html"
    page = read_page(page_path)
    text = "".join(page.conclusion)
    assert "MoDL (modl-t) loses" in text and "test slices for MnM-MOL (mnmmol-t)" in text
    links = csv_links(page, page_path)
    assert any(p.name == "attack_summary.csv" for p in links) and any(p.name == "audit_summary.csv" for p in links)
    assert all(p.exists() for p in links)
    assert all(h.startswith("../") or h == "tables/training.csv" for h in page.links if h.endswith(".csv"))
    assert "".join(page.text).count("Training curves of the") == 1  # once for the suite, not per run
    assert suite / "tables" / "training.csv" in links


def test_index_links_every_page_newest_first(reports):
    root, runs, suite, _ = reports
    page = read_page(root / "index.html")
    linked = [h.split("/")[0] for h in page.links]
    assert linked == [suite.name, *[runs[s].name for s in reversed(list(MAKERS))]]
    assert all((root / unquote(h)).exists() for h in page.links)


def test_user_strings_are_escaped(tmp_path, zoo, fast_figures):
    evil = "<script>alert(1)</script>"
    run = make_run(tmp_path, "audit", name="audit-<b>x</b>-20260101-000000", models={evil: "mnmmol", "modl-t": "modl"},
                   config={"note": evil})
    text = build_run_page(run).read_text()
    assert "<script" not in text and "<b>x" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text and "&lt;b&gt;x&lt;/b&gt;" in text
    page = read_page(run / "report.html")
    assert "script" not in page.tags and "b" not in page.tags
    assert all(p.exists() for p in csv_links(page, run / "report.html"))  # links to a folder with odd characters


def test_partial_runs_render_with_a_warning(tmp_path, zoo, fast_figures):
    run = make_run(tmp_path, "sweep-delta", status="interrupted")
    text = "".join(read_page(build_run_page(run)).text)
    assert "This run was interrupted" in text and f"--resume {run}" in text
    empty = tmp_path / "attack-20260101-000001"
    empty.mkdir()
    (empty / "config.json").write_text(json.dumps({"study": "attack"}))
    (empty / "meta.json").write_text(json.dumps(_meta("running", MODELS)))
    text = "".join(read_page(build_run_page(empty)).text)
    assert "still running" in text and "no finished cell yet" in text


def _no_results(p: Path) -> Path:
    run = make_run(p, "attack")
    (run / "results.csv").unlink()
    return run


def _columns_missing(p: Path) -> Path:
    run = make_run(p, "audit")
    pd.read_csv(run / "results.csv").drop(columns=["passes"]).to_csv(run / "results.csv", index=False)
    return run


BAD = {
    "missing": (lambda p: p / "attack-19990101-000000", "does not exist"),
    "not a run": (lambda p: (p / "random").mkdir() or p / "random", r"not a robustkit run folder \(no config\.json\)"),
    "unknown study": (lambda p: (make_run(p, "audit", name="fancy-1").joinpath("config.json")
                                 .write_text(json.dumps({"study": "fancy"})), p / "fancy-1")[1], "unknown study 'fancy'"),
    "no meta": (lambda p: ((make_run(p, "attack") / "meta.json").unlink(), p / "attack-20260101-000000")[1],
                r"incomplete \(no meta\.json\)"),
    "no results": (_no_results, r"incomplete \(status complete but no results\.csv\)"),
    "columns missing": (_columns_missing, "lacks the audit column"),
}


@pytest.mark.parametrize("case", BAD)
def test_unusable_run_folder_is_named(case, tmp_path):
    make, match = BAD[case]
    path = make(tmp_path)
    with pytest.raises(RobustkitError, match=match) as exc:
        build_run_page(path)
    assert str(path) in str(exc.value) and "\n" not in str(exc.value) and ";" in str(exc.value)


def test_several_runs_build_the_usable_and_name_the_rest(tmp_path, zoo, fast_figures):
    good = make_run(tmp_path, "sweep-delta")
    missing = tmp_path / "attack-19990101-000000"
    unknown = tmp_path / "fancy-1"
    unknown.mkdir()
    (unknown / "config.json").write_text(json.dumps({"study": "fancy"}))
    with pytest.raises(ReportIncomplete) as exc:
        build_report([missing, good, unknown])
    msg = str(exc.value)
    assert "2 of 3" in msg and str(missing) in msg and str(unknown) in msg and str(good) not in msg
    assert good / "report.html" in exc.value.built and tmp_path.resolve() / "index.html" in exc.value.built
    index = read_page(tmp_path / "index.html")
    assert f"{good.name}/report.html" in index.links
    assert "no page yet" in "".join(index.text)  # the unusable one is listed, not skipped


def test_suite_with_an_unusable_run_says_so(tmp_path, zoo, fast_figures):
    run = make_run(tmp_path, "sweep-delta")
    suite = tmp_path / "quick-20260102-000000"
    suite.mkdir()
    (suite / "suite.json").write_text(json.dumps({"file": "q.toml", "config": {"sweep-delta": {}, "audit": {}, "attack": {}},
                                                  "studies": {"sweep-delta": run.name, "audit": "audit-gone"}}))
    with pytest.raises(ReportIncomplete, match="audit-gone") as exc:
        build_suite_page(suite)
    text = "".join(read_page(suite / "report.html").text)
    assert "unusable run" in text and "audit-gone" in text and "not run yet: attack" in text
    assert suite / "report.html" in exc.value.built
    with pytest.raises(RobustkitError, match="no suite.json"):
        build_suite_page(run)


def test_cli(tmp_path, zoo, fast_figures, capsys):
    good = make_run(tmp_path, "init-test")
    result = CliRunner().invoke(cli, ["report", str(good)])
    assert result.exit_code == 0, result.output
    assert f"wrote {good / 'report.html'}" in result.output and "index.html" in result.output
    bad = tmp_path / "nope"
    result = CliRunner().invoke(cli, ["report", str(good), str(bad)])
    assert result.exit_code != 0 and isinstance(result.exception, RobustkitError) and str(bad) in str(result.exception)
    with pytest.raises(SystemExit) as exit_:
        main(["report", str(bad)])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1 and str(bad) in err[0]
    result = CliRunner().invoke(cli, ["report", "--reports-dir", str(tmp_path / "empty")])
    assert isinstance(result.exception, RobustkitError) and "does not exist" in str(result.exception)
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(cli, ["report", "--reports-dir", str(tmp_path / "empty")])
    assert result.exit_code == 0 and (tmp_path / "empty" / "index.html").exists()


def test_index_of_a_missing_folder_is_an_error(tmp_path):
    with pytest.raises(RobustkitError, match="does not exist"):
        build_index(tmp_path / "nope")


# ------------------------------------------------------------------ in a real browser
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run"]
PROBE = ("<script>window.addEventListener('load', function () {"
         "document.body.setAttribute('data-widths', Array.from(document.images).map("
         "function (i) { return i.complete ? i.naturalWidth : -1; }).join(','));});</script>")


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not on PATH (Debian: apt-get install chromium)")
def test_page_renders_in_headless_chromium(tmp_path, zoo):
    from PIL import Image

    run = make_run(tmp_path / "reports", "attack")
    page = build_run_page(run)
    shot = tmp_path / "shot.png"
    subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
                    "--window-size=1200,2000", page.as_uri()], check=True, capture_output=True, timeout=120)
    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=float)
    assert pixels.shape[:2] == (2000, 1200)
    assert pixels.std() > 20  # not blank
    assert len(np.unique(pixels.reshape(-1, 3)[::7], axis=0)) > 50  # figures' colours, not just text

    # The figures load: a copy of the page (without its no-script policy) reports each image's width.
    text = page.read_text()
    probe = run / "probe.html"
    probe.write_text(re.sub(r"<meta http-equiv=\"Content-Security-Policy\"[^>]*>", "", text)
                     .replace("</body>", PROBE + "</body>"))
    dom = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", probe.as_uri()],
                         check=True, capture_output=True, text=True, timeout=120).stdout
    widths = [int(w) for w in re.search(r'data-widths="([^"]*)"', dom).group(1).split(",")]
    assert len(widths) == len(read_page(page).imgs) >= 3 and all(w > 50 for w in widths)


def test_a_folder_that_is_not_a_run_leaves_the_users_files_alone(tmp_path):
    """``robustkit report site/photos`` (not a run) and ``robustkit leaderboard`` of a folder without
    runs exit 2 and write nothing: the user's ``site/index.html`` is not replaced."""
    site = tmp_path / "site"
    (site / "photos").mkdir(parents=True)
    (site / "index.html").write_text("<p>my home page</p>")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    for args in (["report", str(site / "photos")], ["leaderboard", str(site / "photos")], ["leaderboard", str(site)]):
        with pytest.raises(SystemExit) as exit_:
            main(args)
        assert exit_.value.code == 2, args
    with pytest.raises(ReportIncomplete, match=r"1 of 1 folders unusable \(nothing was written\)"):
        build_report([site / "photos"])
    assert (site / "index.html").read_text() == "<p>my home page</p>"
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_an_index_or_leaderboard_robustkit_did_not_write_is_not_replaced(tmp_path, zoo, fast_figures):
    from robustkit.report.leaderboard import build_leaderboard

    run = make_run(tmp_path, "sweep-delta")
    (tmp_path / "index.html").write_text("<p>mine</p>")
    with pytest.raises(RobustkitError, match="not written by robustkit"):
        build_index(tmp_path)
    assert (tmp_path / "index.html").read_text() == "<p>mine</p>"
    (tmp_path / "index.html").unlink()
    build_report([run])  # robustkit's own index is replaced freely
    build_report([run])
    assert 'name="generator" content="robustkit"' in (tmp_path / "index.html").read_text()
    (tmp_path / "leaderboard.csv").write_text("a,b\n1,2\n")
    with pytest.raises(RobustkitError, match="not written by robustkit"):
        build_leaderboard(tmp_path)
    assert (tmp_path / "leaderboard.csv").read_text() == "a,b\n1,2\n" and not (tmp_path / "leaderboard.html").exists()


def test_a_page_with_deq_solves_says_what_converged_guarantees(reports):
    root, runs, suite, pages = reports
    attack = (runs["attack"] / "report.html").read_text()
    assert "How close a converged solve is" in attack and "tolerance/(1 − ρ)" in attack
    sweep = pd.read_csv(runs["sweep-delta"] / "results.csv")
    page = (runs["sweep-delta"] / "report.html").read_text()
    assert ("How close a converged solve is" in page) == ("converged" in sweep and sweep["converged"].notna().any())
