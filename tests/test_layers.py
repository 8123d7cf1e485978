"""The one-way imports of the package layers: physics → data → models/solvers → attacks/analysis →
studies → report → cli. A module never imports a package of a later layer, lazily or not."""

import ast
from pathlib import Path

import robustkit

LAYER = {"physics": 0, "data": 1, "models": 2, "solvers": 2, "attacks": 3, "analysis": 3,
         "studies": 4, "report": 5, "cli": 6}


def imported(tree: ast.AST) -> list[str]:
    """Absolute module names imported anywhere in ``tree`` (inside functions too)."""
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def test_no_layer_imports_a_later_one():
    root = Path(robustkit.__file__).parent
    wrong, seen = [], 0
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).parts
        if len(parts) < 2 or parts[0] not in LAYER:
            continue
        seen += 1
        for name in imported(ast.parse(path.read_text(encoding="utf-8"))):
            p = name.split(".")
            if p[0] == "robustkit" and len(p) > 1 and LAYER.get(p[1], -1) > LAYER[parts[0]]:
                wrong.append(f"{path.relative_to(root)} imports {name}")
    assert seen > 40 and not wrong, wrong


def test_the_check_sees_a_lazy_wrong_way_import():
    tree = ast.parse("def f():\n    from robustkit.studies.attack import run\n")
    assert imported(tree) == ["robustkit.studies.attack"]
