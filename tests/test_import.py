"""Importing checkpoints written in the reference layouts (MnM-MOL, MOL, MoDL reference code).

The tests write the checkpoints themselves (random weights, as ``torch.save({"epoch", "state_dict"})``
with the reference's keys) and compare the imported robustkit model with the reference computation,
written here from the reference equations (docs/import.md), not with robustkit's operators.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from robustkit.analysis.solver_validity import solver_validity, summarize_validity, validity_rows
from robustkit.cli import main
from robustkit.errors import RobustkitError
from robustkit.models.importers import LAYOUTS, convert, import_checkpoint, load_reference_checkpoint
from robustkit.models.zoo import load_model
from robustkit.physics import SenseOperator
from robustkit.physics.masks import cartesian_mask
from robustkit.solvers import solve
from tests.conftest import random_complex

H, W, C = 24, 20, 3


# ----------------------------------------------------------------------------- the reference, from its equations

def reference_state(width: int = 8, depth: int = 5, lam: float = 8.0, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random state dict with the reference keys: ``f.lam``, ``f.dw.net.{i}.conv.{weight,bias}``."""
    g = torch.Generator().manual_seed(seed)
    chans = [2] + [width] * (depth - 1) + [2]
    state = {"f.lam": torch.tensor(lam)}
    for i in range(depth):
        fan_in = 9 * chans[i]
        state[f"f.dw.net.{i}.conv.weight"] = torch.randn(chans[i + 1], chans[i], 3, 3, generator=g) / fan_in ** 0.5
        state[f"f.dw.net.{i}.conv.bias"] = 0.1 * torch.randn(chans[i + 1], generator=g)
    return state


def ref_cnn(state, x: torch.Tensor) -> torch.Tensor:
    """``dw(x)``: ``[Re x, Im x]`` channels, 3×3 convs with ReLU after all but the last, back to complex."""
    depth = sum(k.endswith("conv.weight") for k in state)
    h = torch.stack([x.real, x.imag], dim=1)
    for i in range(depth):
        h = F.conv2d(h, state[f"f.dw.net.{i}.conv.weight"], state[f"f.dw.net.{i}.conv.bias"], padding=1)
        if i < depth - 1:
            h = F.relu(h)
    return h[:, 0] + 1j * h[:, 1]


def fft(x):
    return torch.fft.fftshift(torch.fft.fft2(torch.fft.ifftshift(x, dim=(-2, -1)), norm="ortho"), dim=(-2, -1))


def ifft(k):
    return torch.fft.fftshift(torch.fft.ifft2(torch.fft.ifftshift(k, dim=(-2, -1)), norm="ortho"), dim=(-2, -1))


def ref_ata(x, csm, mask):
    return (csm.conj() * ifft(mask * fft(x[:, None] * csm))).sum(1)


def ref_atb(b, csm):
    return (csm.conj() * ifft(b)).sum(1)


def ref_cg(lhs, rhs, x0, iters):
    """The reference CG: inner products ``|Σ conj(a) b|`` with a 1e-10 guard."""
    dot = lambda a, b: (a.conj() * b).sum(dim=(-2, -1)).abs()  # noqa: E731
    x, r = x0, rhs - lhs(x0)
    p, rr = r, dot(r, r)
    for _ in range(iters):
        ap = lhs(p)
        a = rr / (dot(p, ap) + 1e-10)
        x, r = x + a[:, None, None] * p, r - a[:, None, None] * ap
        rr_new = dot(r, r)
        p, rr = r + (rr_new / (rr + 1e-10))[:, None, None] * p, rr_new
    return x


def ref_inv(x0, rhs, lam, csm, mask, iters):
    return ref_cg(lambda v: lam * ref_ata(v, csm, mask) + 1.001 * v, rhs, x0, iters)


def ref_sense(b, csm, mask):
    atb = ref_atb(b, csm)
    return ref_inv(torch.zeros_like(atb), 100 * atb, 100, csm, mask, 50)


def problem(seed: int = 0, batch: int = 1):
    maps = random_complex((batch, C, H, W), seed=seed + 1)
    maps = maps / (maps.abs() ** 2).sum(1, keepdim=True).sqrt()
    mask = torch.from_numpy(cartesian_mask((H, W), 3, np.random.default_rng(seed))).to(torch.float32)
    x = random_complex((batch, H, W), seed=seed + 2)
    x = x / x.abs().amax(dim=(-2, -1), keepdim=True)
    b = mask * fft(x[:, None] * maps)
    return SenseOperator(maps, mask), b, maps, mask


def write(path: Path, state, epoch: int | None = 30) -> Path:
    torch.save({"state_dict": state} if epoch is None else {"epoch": epoch, "state_dict": state}, path)
    return path


def rel(a, b) -> float:
    return float((a - b).abs().norm() / b.abs().norm())


# ----------------------------------------------------------------------------- the maths of each layout

def test_cnn_reproduces_the_reference_network_on_a_random_image():
    state = reference_state()
    model, mapping = convert(state, "mnmmol-ref")
    x = random_complex((2, H, W), seed=5)
    with torch.no_grad():
        assert rel(model.cnn(x), ref_cnn(state, x)) < 1e-6
    assert mapping["f.dw.net.4.conv.bias"] == "cnn.net.8.bias" and mapping["f.lam"] == "lam"


def test_mnmmol_update_and_damped_solve_match_the_reference():
    state = reference_state(lam=8.0)
    model, _ = convert(state, "mnmmol-ref")
    op, b, csm, mask = problem()
    lam = state["f.lam"]
    atb = ref_atb(b, csm)
    x = ref_sense(b, csm, mask)

    def ref_step(x):  # x − (0.1/λ)[λ(AᴴA x − Aᴴb) + dw(x)]
        return x - 0.1 / lam * (lam * (ref_ata(x, csm, mask) - atb) + ref_cnn(state, x))

    with torch.no_grad():
        assert rel(model.initial(b, op, None), x) < 1e-5
        assert rel(model.iteration(x, b, op), ref_step(x)) < 1e-5
        ref = x
        for _ in range(6):
            ref = ref_step(ref)
        ours, _ = solve(model.fixed_point_map(b, op), x, method=model.config.solver, tol=0.0, max_iter=6)
    assert rel(ours, ref) < 1e-5
    c = model.config
    assert (c.gamma, c.solver, c.tol, c.max_iter, c.eval_tol, c.eval_max_iter) == (0.1, "damped", 2e-4, 200, 2e-4, 200)


def test_mol_forward_backward_step_matches_the_reference():
    state = reference_state(lam=100.0, seed=1)
    model, _ = convert(state, "mol-ref")
    op, b, csm, mask = problem(seed=1)
    alpha, lam = 0.01, state["f.lam"]
    x = ref_sense(b, csm, mask)
    rhs = (1 - alpha) * x + alpha * ref_cnn(state, x) + alpha * lam * ref_atb(b, csm)
    with torch.no_grad():
        assert rel(model.iteration(x, b, op), ref_inv(x, rhs, alpha * lam, csm, mask, 5)) < 1e-4
    assert (model.config.alpha, model.config.solver, model.config.tol, model.config.max_iter) == (0.01, "damped", 1e-4, 500)


def test_modl_unrolled_reconstruction_matches_the_reference():
    state = reference_state(lam=7.0, seed=2)
    model, _ = convert(state, "modl-ref")
    op, b, csm, mask = problem(seed=2)
    lam, atb = state["f.lam"], ref_atb(b, csm)
    x = ref_sense(b, csm, mask)
    for _ in range(10):
        x = ref_inv(x, x - ref_cnn(state, x) + lam * atb, lam, csm, mask, 5)
    with torch.no_grad():
        assert rel(model(b, op), x) < 1e-4


def test_image_scale_is_folded_into_the_network():
    """With ``scale = s`` the model reconstructs ``x/s`` where the reference reconstructs ``x`` from ``s·b``."""
    state = reference_state(lam=7.0, seed=3)
    s = 3.0
    model, _ = convert(state, "modl-ref", scale=s, overrides={"K": 3})
    op, b, csm, mask = problem(seed=3)
    bs = s * b
    lam, atb = state["f.lam"], ref_atb(bs, csm)
    x = ref_sense(bs, csm, mask)
    for _ in range(3):
        x = ref_inv(x, x - ref_cnn(state, x) + lam * atb, lam, csm, mask, 5)
    with torch.no_grad():
        assert rel(s * model(b, op), x) < 1e-4
        unscaled, _ = convert(state, "modl-ref", overrides={"K": 3})
        assert rel(s * unscaled(b, op), x) > 1e-3  # the convention matters for a network with biases


# ----------------------------------------------------------------------------- the zoo entry

@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_import_writes_a_verified_zoo_entry(layout, tmp_path):
    state = reference_state(lam=9.0)
    src = write(tmp_path / "model_best_trn.pth.tar", state, epoch=None if layout == "mol-ref" else 12)
    folder, card = import_checkpoint(src, layout, "imported", out=tmp_path / "zoo" / "imported")
    model, loaded = load_model(str(folder))
    assert loaded["source"]["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert loaded["source"]["file"] == "model_best_trn.pth.tar" and loaded["source"]["layout"] == layout
    assert loaded["source"]["epoch"] == (None if layout == "mol-ref" else 12)
    assert set(loaded["key_mapping"]) == set(state) and loaded["conventions"]["fft"]
    assert model.name == LAYOUTS[layout].model and float(model.lam.detach()) == pytest.approx(9.0)
    x = random_complex((1, H, W), seed=9)
    with torch.no_grad():
        assert rel(model.cnn(x), ref_cnn(state, x)) < 1e-6


def test_a_checkpoint_saved_on_a_gpu_loads_on_the_cpu(tmp_path, monkeypatch):
    import torch.serialization as ts

    with monkeypatch.context() as m:
        m.setattr(ts, "location_tag", lambda storage: "cuda:0")  # what the authors' GPU run wrote
        src = write(tmp_path / "gpu.pth.tar", reference_state())
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(src, weights_only=True)
    state, extras = load_reference_checkpoint(src)
    assert state["f.lam"].device.type == "cpu" and extras == {"epoch": 30}


def test_cli_import_then_load(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ROBUSTKIT_ZOO", raising=False)
    src = write(tmp_path / "model.pth.tar", reference_state(width=4, depth=3))
    main(["models", "import", str(src), "--from", "mnmmol-ref", "--name", "ref-mnm", "--accel", "6"])
    out = capsys.readouterr().out
    assert "width 4, depth 3" in out
    card = json.loads((tmp_path / "models" / "ref-mnm" / "card.json").read_text())
    assert card["data"]["accel"] == 6.0 and card["config"]["gamma"] == 0.1
    assert card["command"].startswith("robustkit models import") and "--accel 6" in card["command"]
    load_model(str(tmp_path / "models" / "ref-mnm"))


# ----------------------------------------------------------------------------- bad input: one line, exit 2, nothing written

class Evil:
    """Unpickling this would create a file: the test proves it never runs."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (Path.touch, (self.target,))


def _evil(tmp: Path) -> Path:
    torch.save({"epoch": 1, "state_dict": {"f.lam": Evil(tmp / "PWNED")}}, tmp / "evil.pth.tar")
    return tmp / "evil.pth.tar"


def _plain_pickle(tmp: Path) -> Path:
    (tmp / "evil.pkl").write_bytes(pickle.dumps({"state_dict": Evil(tmp / "PWNED")}, protocol=2))
    return tmp / "evil.pkl"


def _text(tmp: Path) -> Path:
    (tmp / "notes.txt").write_text("not a checkpoint\n")
    return tmp / "notes.txt"


def _wrong_keys(tmp: Path) -> Path:
    state = reference_state()
    del state["f.dw.net.2.conv.bias"]
    state["f.dw.net.2.conv.weight_orig"] = state.pop("f.dw.net.2.conv.weight")
    return write(tmp / "sn.pth.tar", state)


def _wrong_shape(tmp: Path) -> Path:
    state = reference_state()
    state["f.dw.net.0.conv.weight"] = torch.zeros(8, 2, 5, 5)
    return write(tmp / "k5.pth.tar", state)


def _complex_lambda(tmp: Path) -> Path:
    state = reference_state()
    state["f.lam"] = torch.tensor(1 + 5j)
    return write(tmp / "clam.pth.tar", state)


def _nan_weight(tmp: Path) -> Path:
    state = reference_state()
    state["f.dw.net.1.conv.weight"][0, 0, 0, 0] = float("nan")
    return write(tmp / "nan.pth.tar", state)


def _int_weights(tmp: Path) -> Path:
    state = reference_state()
    state["f.dw.net.0.conv.weight"] = state["f.dw.net.0.conv.weight"].to(torch.int64)
    return write(tmp / "int.pth.tar", state)


def _with_optimizer(tmp: Path) -> Path:
    torch.save({"state_dict": reference_state(), "optimizer": {"lr": torch.tensor(1e-3)}}, tmp / "opt.pth.tar")
    return tmp / "opt.pth.tar"


def _not_a_tensor(tmp: Path) -> Path:
    state = reference_state()
    state["f.lam"] = 0.05
    return write(tmp / "float.pth.tar", state)


BAD = {
    "malicious torch.save": (_evil, r"needs code execution .*never runs"),
    "malicious pickle": (_plain_pickle, r"needs code execution"),
    "not a checkpoint": (_text, r"is not a PyTorch checkpoint"),
    "wrong keys": (_wrong_keys, r"unknown keys \['f\.dw\.net\.2\.conv\.weight_orig'\]; missing keys "
                                r"\['f\.dw\.net\.2\.conv\.weight', 'f\.dw\.net\.2\.conv\.bias'\]"),
    "wrong shape": (_wrong_shape, r"f\.dw\.net\.0\.conv has weight \(8, 2, 5, 5\)"),
    "missing file": (lambda tmp: tmp / "nope.pth.tar", r"does not exist"),
    "complex lambda": (_complex_lambda, r"f\.lam is complex64; the reference weights and λ are real"),
    "NaN weight": (_nan_weight, r"f\.dw\.net\.1\.conv\.weight holds NaN or Inf values"),
    "integer weights": (_int_weights, r"f\.dw\.net\.0\.conv\.weight is int64"),
    "optimizer saved with it": (_with_optimizer, r"unexpected top-level keys \['optimizer'\].*torch\.save\(\{'state_dict'"),
    "a float, not a tensor": (_not_a_tensor, r"entry 'f\.lam' is of type float, not a tensor"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_checkpoint_is_refused_through_api_and_cli(case, tmp_path, capsys):
    make, match = BAD[case]
    src = make(tmp_path)
    out = tmp_path / "zoo" / "x"
    with pytest.raises(RobustkitError, match=match):
        import_checkpoint(src, "mnmmol-ref", "x", out=out)
    with pytest.raises(SystemExit) as exit_info:
        main(["models", "import", str(src), "--from", "mnmmol-ref", "--name", "x", "--out", str(out)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and err.startswith("robustkit: error:")
    assert not out.exists() and not (tmp_path / "PWNED").exists()


def test_existing_entry_is_never_overwritten(tmp_path, capsys):
    src = write(tmp_path / "a.pth.tar", reference_state())
    folder, _ = import_checkpoint(src, "modl-ref", "a", out=tmp_path / "a")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    other = write(tmp_path / "b.pth.tar", reference_state(seed=4))
    with pytest.raises(SystemExit) as exit_info:
        main(["models", "import", str(other), "--from", "modl-ref", "--name", "a", "--out", str(folder)])
    assert exit_info.value.code == 2 and "already holds a zoo entry" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


@pytest.mark.parametrize("args, match", [
    (["--name", "ok", "--alpha", "0.1"], "--alpha applies to --from mol-ref only"),
    (["--name", "ok", "--scale", "0"], "--scale must be a positive number"),
    (["--name", "../up"], "is not a valid zoo name"),
    (["--name", "sense"], "is the name of a built-in baseline"),
    (["--name", "x", "--out", "FILE/sub"], "cannot create the folder"),
])
def test_bad_options_are_refused(args, match, tmp_path, capsys):
    src = write(tmp_path / "a.pth.tar", reference_state())
    (tmp_path / "FILE").write_text("a file where a folder would go\n")
    args = [str(tmp_path / a) if a.startswith("FILE") else a for a in args]
    if "--out" not in args:
        args = ["--out", str(tmp_path / "o"), *args]
    with pytest.raises(SystemExit) as exit_info:
        main(["models", "import", str(src), "--from", "mnmmol-ref", *args])
    assert exit_info.value.code == 2 and match in capsys.readouterr().err and not (tmp_path / "o").exists()


# ----------------------------------------------------------------------------- which solver the model allows

class LinearDEQ:
    """A stand-in DEQ whose ``H_θ(x) = μ x`` (so ``L[H_θ] = |μ|`` and ``L[(1−γ)I + γH_θ] = |1 − γ + γμ|``)."""

    is_deq = True

    def __init__(self, mu: float, gamma: float):
        self.mu = mu
        self.config = type("Config", (), {"gamma": gamma, "delta": 0.3})()

    def H_map(self, op):  # noqa: N802
        return lambda x: self.mu * x

    def fixed_point_map(self, kspace, op):
        g = self.config.gamma
        return lambda x: (1 - g) * x + g * (self.mu * x + op.adjoint(kspace))


class ZeroOp:
    def adjoint(self, k):
        return torch.zeros(k.shape[0], H, W, dtype=k.dtype)


@pytest.mark.parametrize("mu, verdict", [(0.5, "H_theta"), (-1.5, "damped-only"), (2.0, "neither")])
def test_solver_validity_tells_the_damped_step_from_a_contracting_h(mu, verdict):
    gamma = 0.1
    x = random_complex((2, H, W), seed=7)
    v = solver_validity(LinearDEQ(mu, gamma), torch.zeros(2, C, H, W, dtype=torch.complex64), ZeroOp(), x_star=x,
                        steps=3, restarts=1, slow_steps=2)
    assert v.L_H.tolist() == pytest.approx([abs(mu)] * 2, rel=1e-4)
    assert v.L_step.tolist() == pytest.approx([abs(1 - gamma + gamma * mu)] * 2, rel=1e-4)
    assert v.verdict == [verdict] * 2


def test_solver_validity_of_an_imported_mnmmol_on_tiny_data(tmp_path):
    from robustkit.data.prepared import PreparedDataset
    from robustkit.physics.masks import MaskSpec
    from tests.test_training import tiny_dataset

    state = reference_state(width=4, depth=3, lam=10.0)
    model, _ = convert(state, "mnmmol-ref")
    ds = PreparedDataset(tiny_dataset(tmp_path / "d.h5"), split="val", mask=MaskSpec(accel=1))
    rows = validity_rows(model, ds, limit=2, steps=3, restarts=1, slow_steps=2)
    s = summarize_validity(rows)
    assert s["n"] == 2 and s["gamma"] == 0.1
    # AᴴA = I at accel 1: H_θ = −F_θ/λ is small, and the damped step 0.9 I − 0.1 F_θ/λ has a
    # constant within 0.9 ± 0.1·L[H_θ].
    for r in rows:
        assert 0 < r["L_H"] < 0.5 and 0.85 < r["L_step"] < 0.95 and r["verdict"] == "H_theta"
    # a larger bound found elsewhere (models check's Lanczos) decides: the verdict never rests on less
    known = validity_rows(model, ds, limit=2, steps=3, restarts=1, slow_steps=2, known_L_H=[1.2, 0.1])
    assert known[0]["L_H"] == pytest.approx(1.2) and known[0]["verdict"] == "damped-only"
    assert known[1]["L_H"] == pytest.approx(rows[1]["L_H"]) and known[1]["verdict"] == "H_theta"


def test_models_check_prints_the_solver_validity_of_an_imported_model(tmp_path, monkeypatch, capsys):
    import robustkit.data.builtin as builtin
    from tests.test_training import tiny_dataset

    data = tiny_dataset(tmp_path / "d.h5")
    monkeypatch.setattr(builtin, "ensure_builtin", lambda *a, **k: data)  # the check's data, without the built-in brain
    src = write(tmp_path / "model-30.pth.tar", reference_state(width=4, depth=3, lam=10.0))
    folder = tmp_path / "zoo" / "ref"
    main(["models", "import", str(src), "--from", "mnmmol-ref", "--name", "ref", "--out", str(folder), "--accel", "1"])
    main(["models", "check", str(folder), "--split", "val", "--limit", "1", "--write-card"])
    out = capsys.readouterr().out
    # Fully sampled (AᴴA = I): H_θ = −F_θ/λ with a small random F_θ contracts, so γ = 1 is valid too.
    assert "val solver validity (lower bounds, 1 slices): max L[H_θ] = 0." in out and "at γ = 0.1: no estimate of L[H_θ] reached 1" in out
    validity = json.loads((folder / "card.json").read_text())["checks"]["val"]["solver_validity"]
    assert validity["verdict"] == "H_theta" and validity["n"] == 1


def test_a_checkpoint_saved_from_data_parallel_imports_as_the_same_weights(tmp_path):
    state = reference_state()
    plain, _ = import_checkpoint(write(tmp_path / "a.pth.tar", state), "mnmmol-ref", "a", out=tmp_path / "a")
    wrapped = {f"module.{k}": v for k, v in state.items()}
    parallel, _ = import_checkpoint(write(tmp_path / "b.pth.tar", wrapped), "mnmmol-ref", "b", out=tmp_path / "b")
    assert (plain / "weights.safetensors").read_bytes() == (parallel / "weights.safetensors").read_bytes()
