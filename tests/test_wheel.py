"""Install like a package: the wheel, in a fresh venv, run from an empty directory.

Builds the wheel from a copy of the sources (no stale ``build/``), installs torch as README says and
then the wheel into a new virtual environment, and from an empty directory runs
``robustkit models list`` (the seven shipped models, found as package data) and a one-slice attack
(its results.csv lands under that directory's ``reports/``, and nothing is written into the
package). Slow (minutes: it installs every dependency); ``.ci/run`` runs it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TORCH = ["torch==2.13.0", "torchvision==0.28.0"]  # README.md's install line
SHIPPED = ["mnmmol-4x", "mnmmol-4x-delta0.05", "mnmmol-4x-delta0.1", "mnmmol-4x-delta0.3", "mnmmol-4x-delta0.5",
           "modl-4x", "mol-4x"]


def _run(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=1500)
    assert result.returncode == 0, f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


@pytest.mark.slow
def test_wheel_installs_into_a_fresh_venv_and_runs_from_an_empty_directory(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "ROBUSTKIT_ZOO", "VIRTUAL_ENV", "PYTHONHOME"}}
    env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1", OMP_NUM_THREADS="1")

    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(REPO / "robustkit", src / "robustkit", ignore=shutil.ignore_patterns("__pycache__", "train_state.pt"))
    _run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "-q", "-w", str(tmp_path / "dist")], tmp_path, env)
    (wheel,) = (tmp_path / "dist").glob("robustkit-*.whl")

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], tmp_path, env)
    bin_dir = venv / "bin"
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    _run([str(bin_dir / "pip"), "install", "-q", *TORCH], tmp_path, env)
    _run([str(bin_dir / "pip"), "install", "-q", str(wheel)], tmp_path, env)

    empty = tmp_path / "empty"
    empty.mkdir()
    where = _run([str(bin_dir / "python"), "-c", "import robustkit; print(robustkit.__file__)"], empty, env)
    package = Path(where.strip()).parent
    assert package.is_relative_to(venv), f"robustkit imported from {package}, not the fresh venv"
    before = sorted(p.relative_to(package) for p in package.rglob("*") if "__pycache__" not in p.parts)

    listing = _run([str(bin_dir / "robustkit"), "models", "list"], empty, env)
    zoo_lines = listing.split("\nuser zoo: ")[0].splitlines()[1:]  # the built-in baselines follow that line
    rows = {line.split()[0]: line.split() for line in zoo_lines}
    assert "l1-wavelet" in listing.split("\nuser zoo: ")[1]
    assert sorted(rows) == SHIPPED and all(row[-1] == "shipped" for row in rows.values()), listing

    _run([str(bin_dir / "robustkit"), "attack", "--model", "modl", "--samples", "1", "--eps", "0.05",
          "--kind", "adversarial", "--steps", "2", "--no-report"], empty, env)
    (results,) = (empty / "reports").glob("attack-*/results.csv")
    header, *lines = results.read_text().splitlines()
    assert "psnr" in header.split(",") and len(lines) >= 2  # the clean and the attacked row
    assert sorted(p.name for p in empty.iterdir()) == ["reports"]  # nothing but the run
    after = sorted(p.relative_to(package) for p in package.rglob("*") if "__pycache__" not in p.parts)
    assert after == before  # nothing written into the installed package
