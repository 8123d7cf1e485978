"""The public Python API: lazy exports, the protocols, the adapter, and studies run on network objects."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import robustkit
from robustkit.errors import RobustkitError
from robustkit.models.adapter import adapt, as_model, object_label, state_dict_sha256
from robustkit.protocols import FixedPointModel, Reconstructor, SolverSettings
from robustkit.studies import make_config, run
from tests.conftest import random_complex
from tests.user_nets import MapOnlyDEQ, RealOutput, TinyDEQ, TinyNet, tiny_deq, tiny_net

ROOT = Path(__file__).resolve().parents[1]


def test_import_robustkit_is_light_and_every_export_resolves():
    code = ("import sys, robustkit; heavy = [m for m in ('pandas', 'matplotlib', 'seaborn', 'scipy', 'torch') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"
    code = ("import sys; from robustkit.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print([m for m in ('pandas', 'matplotlib', 'seaborn') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"
    for name in robustkit.__all__:
        assert getattr(robustkit, name) is not None, name
    assert robustkit.studies.run is run and robustkit.SolverSettings is SolverSettings
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        robustkit.nope  # noqa: B018


def _operator(shape=(2, 3, 16, 16), accel_keep=0.5, seed=0):
    from robustkit.physics.sense import SenseOperator

    maps = random_complex(shape, seed=seed)
    maps = maps / maps.abs().pow(2).sum(1, keepdim=True).sqrt()
    g = torch.Generator().manual_seed(seed + 1)
    mask = (torch.rand(shape[0], 1, 1, shape[-1], generator=g) < accel_keep).float().expand(-1, -1, shape[-2], -1)
    return SenseOperator(maps, mask)


def test_protocols_are_structural():
    net, deq = TinyNet(), TinyDEQ()
    assert isinstance(net, Reconstructor) and not isinstance(net, FixedPointModel)
    assert isinstance(deq, FixedPointModel) and isinstance(MapOnlyDEQ(), FixedPointModel)
    builtin = robustkit.build_model("mnmmol", {"width": 4, "depth": 2})
    assert isinstance(builtin, Reconstructor) and isinstance(builtin, FixedPointModel)


def test_adapter_reads_the_builtin_models_natively():
    mnm = robustkit.build_model("mnmmol", {"width": 4, "depth": 2, "eval_tol": 3e-6, "eval_max_iter": 77, "max_iter": 11})
    lm = adapt(mnm)
    assert lm.name == "mnmmol" and lm.is_deq and lm.native and lm.has_H
    assert (lm.m, lm.delta) == (0.02, 0.3)
    assert (lm.settings.tol, lm.settings.max_iter, lm.settings.train_max_iter) == (3e-6, 77, 11)
    lm.set_backward("jfb")
    assert mnm.config.backward == "jfb" and lm.settings.backward == "jfb"
    modl = adapt(robustkit.build_model("modl", {"width": 4, "depth": 2}))
    assert not modl.is_deq and modl.settings is None and modl.m is None and modl.H_map(None) is None
    with pytest.raises(RobustkitError, match="init-test needs the fixed-point protocol member fixed_point_map; 'modl' is unrolled"):
        modl.require("fixed_point_map", "init-test")


def test_user_deq_is_solved_by_robustkit_and_differentiable_in_the_kspace():
    """f(x) = c x + Aᴴb has x* = Aᴴb / (1 − c): the solve and ∂x*/∂b (implicit) match the closed form."""
    op = _operator()
    b = op.forward(random_complex((2, 16, 16), seed=3)).requires_grad_(True)
    lm = adapt(MapOnlyDEQ(c=0.5))
    assert lm.is_deq and not lm.native and not lm.has_H and lm.H_map(op) is None
    assert (lm.settings.tol, lm.settings.max_iter, lm.settings.method) == (1e-7, 100, "anderson")
    x, stats = lm.solve(b, op)
    assert stats.converged.all() and lm.last_stats is stats
    exact = op.adjoint(b) / 0.5
    torch.testing.assert_close(x, exact, rtol=1e-5, atol=1e-6)
    w = random_complex((2, 16, 16), seed=4)
    (grad,) = torch.autograd.grad((w.conj() * x).real.sum(), b)
    (want,) = torch.autograd.grad((w.conj() * exact).real.sum(), b)
    torch.testing.assert_close(grad, want, rtol=1e-4, atol=1e-6)
    assert float(grad.abs().max()) > 0


def test_adapter_refuses_a_wrong_output_and_bad_solver_settings():
    op = _operator()
    b = op.forward(random_complex((2, 16, 16), seed=3))
    with pytest.raises(RobustkitError, match=r"returned torch.float32 \(2, 16, 16\).*complex image \(2, 16, 16\)"):
        adapt(RealOutput()).solve(b, op)
    with pytest.raises(RobustkitError, match="unknown solver setting.*'?tolerance"):
        SolverSettings.coerce({"tolerance": 1e-3})
    with pytest.raises(RobustkitError, match="unknown solver method 'newton'"):
        SolverSettings(method="newton")
    with pytest.raises(RobustkitError, match="must be a robustkit.SolverSettings or a dict"):
        adapt(type("Odd", (MapOnlyDEQ,), {"solver_settings": 3})())
    with pytest.raises(RobustkitError, match="not a torch.nn.Module"):
        adapt(lambda kspace, op: kspace)
    with pytest.raises(RobustkitError, match="zoo name, a plug-in"):
        as_model(3.0)


def test_state_dict_hash_tells_weights_apart():
    a, b = tiny_net(), tiny_net()
    assert state_dict_sha256(a) == state_dict_sha256(b)
    with torch.no_grad():
        b.cnn.net[0].bias[0] += 1e-6
    assert state_dict_sha256(a) != state_dict_sha256(b)
    assert re.fullmatch(r"TinyNet@sha256:[0-9a-f]{16}", object_label(a))
    assert object_label("mnmmol") == "mnmmol"


def _config(name, data, models, **kw):
    settings = {"attack": {"eps": [0.05], "steps": 2, "draws": 1},
                "audit": {"steps": 2, "restarts": 1, "slow_steps": 1, "power_iters": 2, "probe_steps": 1},
                "init-test": {"radii": [0.5], "starts": ["zeros", "ball"], "cap_factor": 1},
                "sweep-delta": {"steps": 1, "restarts": 1, "adv_steps": 1, "init_radii": [0.5], "init_starts": ["zeros"]}}
    return make_config(name, {"data": data, "models": models, **settings[name], **kw})


def test_attack_runs_on_network_objects_with_readable_names(toy_data, tmp_path):
    other = tiny_net()
    with torch.no_grad():
        other.cnn.net[0].bias.add_(0.1)
    models = [tiny_net(), other, MapOnlyDEQ()]
    frame = run("attack", _config("attack", toy_data, models), reports_dir=tmp_path / "r", progress=False)
    assert list(frame["model"].unique()) == ["TinyNet", "TinyNet-2", "MapOnlyDEQ"]
    deq = frame[frame["model"] == "MapOnlyDEQ"]
    assert deq["converged"].astype(bool).all() and frame[frame["model"] == "TinyNet"]["iterations"].isna().all()
    adv = frame[frame["kind"] == "adversarial"]
    assert (adv["perturbation"] <= 0.05 * (1 + 1e-5)).all() and (adv["attack_loss"] > 0).all()
    # x*(b) = 2 Aᴴb for MapOnlyDEQ (c = 0.5) and ‖A‖ ≤ 1: no perturbation is amplified more than 2×,
    # and the gradient attack (through the implicit backward) beats random noise of the same size
    amp = deq.set_index(["kind", "sample"])["amplification"]
    assert (amp["adversarial"] <= 2 * (1 + 1e-4)).all() and (amp["adversarial"] > amp["gaussian"]).all()
    run_dir = Path(frame.attrs["run_dir"])
    meta = json.loads((run_dir / "meta.json").read_text())
    by_name = {m["name"]: m for m in meta["models"]}
    assert by_name["TinyNet"]["state_dict_sha256"] != by_name["TinyNet-2"]["state_dict_sha256"]
    assert by_name["TinyNet"]["source"] == "python object" and by_name["MapOnlyDEQ"]["solver"]["tol"] == 1e-7
    stored = json.loads((run_dir / "config.json").read_text())["models"]
    assert stored == [object_label(m) for m in models] and stored[0] != stored[1]


def test_resume_tells_network_objects_apart(toy_data, tmp_path):
    config = _config("audit", toy_data, [tiny_net()], probe_steps=0)
    run_dir = run("audit", config, reports_dir=tmp_path / "r", progress=False).attrs["run_dir"]
    assert len(run("audit", _config("audit", toy_data, [tiny_net()], probe_steps=0), resume=run_dir, progress=False)) == 2
    changed = tiny_net()
    with torch.no_grad():
        changed.cnn.net[0].bias.add_(0.1)
    with pytest.raises(RobustkitError, match="differ.*models"):
        run("audit", _config("audit", toy_data, [changed], probe_steps=0), resume=run_dir, progress=False)


def test_audit_gives_each_model_the_parts_that_apply(toy_data, tmp_path):
    frame = run("audit", _config("audit", toy_data, [tiny_net(), MapOnlyDEQ(), tiny_deq()]),
                reports_dir=tmp_path / "r", progress=False).set_index(["model", "sample"])
    plain, map_only, deq = frame.loc["TinyNet"], frame.loc["MapOnlyDEQ"], frame.loc["TinyDEQ"]
    assert plain["amplification"].notna().all() and plain[["L", "iterations", "passes"]].isna().all().all()
    assert map_only["iterations"].notna().all() and map_only[["L", "jacobian_norm"]].isna().all().all()
    assert (map_only["residual"] <= 1e-7).all()
    assert deq[["L", "L_slow", "jacobian_norm", "iterations", "amplification"]].notna().all().all()
    assert (deq["threshold"] == 0.98).all() and (deq["delta"] == 0.3).all()
    # TinyDEQ: H_θ(x) = (0.5 I − AᴴA) x − F_θ(x)/λ with 0 ⪯ AᴴA ⪯ I, so L[H_θ] ≤ 0.5 + L[F_θ]/λ < 1 here
    assert (deq["jacobian_norm"] < 1).all() and (deq["L"] < 1).all()


def test_init_test_and_sweep_delta_accept_fixed_point_objects_and_name_what_others_lack(toy_data, tmp_path):
    frame = run("init-test", _config("init-test", toy_data, [tiny_deq()]), reports_dir=tmp_path / "r", progress=False)
    assert frame["converged"].all() and frame["same_fixed_point"].all() and set(frame["model"]) == {"TinyDEQ"}
    sweep = run("sweep-delta", _config("sweep-delta", toy_data, [tiny_deq()]), reports_dir=tmp_path / "r", progress=False)
    assert list(sweep["delta"].unique()) == [0.3] and sweep["init_success"].notna().all()
    for name, model, member in [("init-test", tiny_net(), "fixed_point_map"), ("sweep-delta", MapOnlyDEQ(), "H_map")]:
        with pytest.raises(RobustkitError, match=f"{name} needs the fixed-point protocol member {member}"):
            run(name, _config(name, toy_data, [model]), reports_dir=tmp_path / "refused", progress=False)
    assert not (tmp_path / "refused").exists()


def _readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Your own network", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_example_runs(tmp_path, monkeypatch, capsys):
    code = _readme_example()
    assert len(code.strip().splitlines()) <= 25
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {"__name__": "__readme__"})
    out = capsys.readouterr().out
    assert "TinyNet" in out and "TinyDEQ" in out
    assert len([p for p in (tmp_path / "reports").iterdir() if p.is_dir()]) == 2


def test_a_model_declaring_is_deq_must_leave_its_statistics():
    class SelfSolved(TinyNet):
        is_deq = True

    op = _operator()
    with pytest.raises(RobustkitError, match="declares is_deq = True but its forward left no solver statistics"):
        adapt(SelfSolved()).solve(op.forward(random_complex((2, 16, 16))), op)
