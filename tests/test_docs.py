"""The documentation in docs/ stays in step with the code: every study column and config key, every
CLI option is documented, and every "docs/maths.md §n" citation names a section that exists."""

from __future__ import annotations

import dataclasses
import inspect
import re
from pathlib import Path

import click
import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
#: where code, tests and user files may cite the docs
CITING = ("robustkit", "tests", "benchmarks", "scripts", "studies", "models", "README.md")


def _text_files():
    for name in CITING:
        path = ROOT / name
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.suffix in (".py", ".md", ".toml")]
        yield from files


def _maths_sections() -> set[str]:
    return set(re.findall(r"^## §(\d+) ", (DOCS / "maths.md").read_text(), flags=re.M))


def test_maths_sections_are_numbered_in_order():
    numbers = [int(n) for n in re.findall(r"^## §(\d+) ", (DOCS / "maths.md").read_text(), flags=re.M)]
    assert numbers == list(range(1, len(numbers) + 1))


def test_every_maths_citation_names_an_existing_section():
    sections = _maths_sections()
    bad = []
    for path in _text_files():
        text = path.read_text(errors="replace")
        for match in re.finditer(r"docs/maths\.md((?:,? ?§\d+(?:[–-]§?\d+)?)+)", text):
            for number in re.findall(r"\d+", match.group(1)):
                if number not in sections:
                    bad.append(f"{path.relative_to(ROOT)}: {match.group(0)}")
    assert not bad, "citations of missing sections: " + "; ".join(bad)


def test_no_citation_of_a_document_the_repository_lacks():
    hits = [f"{p.relative_to(ROOT)}:{i + 1}" for p in _text_files() if p.name != "test_docs.py"
            for i, line in enumerate(p.read_text(errors="replace").splitlines()) if re.search(r"\bSPEC\b", line)]
    assert not hits, "cite docs/maths.md instead of SPEC at " + ", ".join(hits)


@pytest.mark.parametrize("study", ["attack", "init-test", "audit", "sweep-delta", "features", "bound", "shift"])
def test_every_results_column_and_config_key_is_documented(study):
    from robustkit.studies import STUDIES, study_module

    text = (DOCS / "studies.md").read_text()
    module = study_module(study)
    config = getattr(module, STUDIES[study][1])
    missing = [c for c in module.COLUMNS if f"`{c}`" not in text]
    missing += [f.name for f in dataclasses.fields(config) if f"`{f.name}`" not in text]
    assert not missing, f"{study}: not in docs/studies.md: {missing}"


def _commands(group: click.Group, ctx: click.Context, prefix: str = ""):
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if isinstance(command, click.Group):
            yield from _commands(command, ctx, f"{prefix}{name} ")
        else:
            yield f"{prefix}{name}", command


def test_every_cli_command_and_option_is_in_the_guide():
    from robustkit.cli import cli

    text = (DOCS / "cli.md").read_text()
    missing = []
    with click.Context(cli) as ctx:
        for name, command in _commands(cli, ctx):
            if f"robustkit {name}" not in text:
                missing.append(f"robustkit {name}")
            for param in command.params:
                longs = [o for o in getattr(param, "opts", []) if o.startswith("--") and o != "--help"]
                if isinstance(param, click.Option) and longs and not any(f"`{o}" in text for o in longs):
                    missing.append(f"{name} {longs[0]}")
    for param in cli.params:
        if isinstance(param, click.Option) and not any(f"{o}" in text for o in param.opts if o.startswith("--")):
            missing.append(param.opts[0])
    assert not missing, "not in docs/cli.md: " + ", ".join(missing)


def test_the_module_paths_the_maths_cites_exist():
    text = (DOCS / "maths.md").read_text()
    paths = set(re.findall(r"`(robustkit/[\w/]+\.py)`", text))
    paths |= {f"robustkit/{p}" for p in re.findall(r"`((?:physics|models|solvers|analysis|studies|data|attacks)/[\w/]+\.py)`", text)}
    assert paths
    assert [p for p in sorted(paths) if not (ROOT / p).is_file()] == []


def _num(v: float) -> str:
    """A number as the docs write it: ``2e-4``, ``1e-5``, ``0.3``, ``200``."""
    return f"{v:.0e}".replace("e-0", "e-") if 0 < v < 1e-2 else f"{v:g}"


def test_documented_defaults_match_the_code():
    """A few numbers docs/maths.md §10 states, read from the code."""
    from robustkit.analysis.lipschitz import local_lipschitz
    from robustkit.models.mnmmol import MnMMOLConfig
    from robustkit.models.mol import MOLConfig
    from robustkit.physics.sense import sense_init
    from robustkit.training import PENALTY_DEFAULTS

    text = (DOCS / "maths.md").read_text()
    mnm, mol = MnMMOLConfig(), MOLConfig()
    sense = {p.name: p.default for p in inspect.signature(sense_init).parameters.values()}
    ascent = {p.name: p.default for p in inspect.signature(local_lipschitz).parameters.values()}
    stated = {
        f"γ = {mnm.gamma:g}, λ₀ = {mnm.lam:g}, δ = {mnm.delta:g}, m = {mnm.m:g}; tol {_num(mnm.tol)} / {mnm.max_iter}, "
        f"eval {_num(mnm.eval_tol)} / {mnm.eval_max_iter}",
        f"α = {mol.alpha:g}, CG {mol.cg_iters}, λ₀ = {mol.lam:g}, m = {mol.m:g}; tol {_num(mol.tol)} / {mol.max_iter}, "
        f"eval {_num(mol.eval_tol)} / {mol.eval_max_iter}",
        f"{sense['iters']} CG its, λ₀ = {sense['lam']:g}, μ = {sense['mu']:g}",
        f"{PENALTY_DEFAULTS['mnmmol'][0]:g} · relu(L − {PENALTY_DEFAULTS['mnmmol'][1]:g})²",
        f"{ascent['steps']} steps, {ascent['restarts']} restarts, η₀ = {ascent['step_size']:g}",
    }
    assert [s for s in stated if s not in text] == []
