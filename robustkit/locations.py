"""Where robustkit reads and writes: the user zoo, and the package data it ships.

Two zoos are searched by name (docs/zoo.md):

- the **user zoo**, where ``robustkit train`` writes: ``--zoo DIR`` (CLI), else ``$ROBUSTKIT_ZOO``,
  else ``./models`` in the current directory;
- the **shipped zoo**, ``robustkit/zoo/`` inside the installed package: read-only.

The shipped study files (``robustkit run quick``) are ``robustkit/suites/*.toml``. Both are package
data, found relative to the package (``importlib.resources``), so a wheel or a non-editable
``pip install .`` has them too. Nothing here imports torch: the CLI calls it before any command.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

from robustkit.errors import RobustkitError

#: the ``--zoo`` option of the running command (None: fall back to ``$ROBUSTKIT_ZOO`` / ``./models``).
_USER_ZOO: contextvars.ContextVar[Path | None] = contextvars.ContextVar("robustkit_user_zoo", default=None)


def package_dir() -> Path:
    """The folder of the imported ``robustkit`` package (site-packages/robustkit or a clone's robustkit/)."""
    return Path(str(resources.files("robustkit"))).resolve()


def shipped_zoo() -> Path:
    """The read-only zoo inside the package: ``robustkit/zoo/<NAME>/{weights.safetensors, card.json}``."""
    return package_dir() / "zoo"


def shipped_suites() -> dict[str, Path]:
    """``{name: path}`` of the shipped study files, ``robustkit/suites/<name>.toml``."""
    return {p.stem: p for p in sorted((package_dir() / "suites").glob("*.toml"))}


def user_zoo() -> Path:
    """The writable zoo: ``--zoo DIR``, else ``$ROBUSTKIT_ZOO``, else ``./models``."""
    chosen = _USER_ZOO.get()
    if chosen is not None:
        return chosen
    env = os.environ.get("ROBUSTKIT_ZOO")
    return Path(env) if env else Path.cwd() / "models"


@contextlib.contextmanager
def using_zoo(path: str | os.PathLike) -> Iterator[Path]:
    """Within the block, :func:`user_zoo` is ``path`` (the CLI's ``--zoo``)."""
    token = _USER_ZOO.set(Path(path))
    try:
        yield Path(path)
    finally:
        _USER_ZOO.reset(token)


def refuse_package_write(path: str | os.PathLike) -> Path:
    """``path``, unless it lies inside the installed package (the shipped zoo included): then an error."""
    path = Path(path)
    target, package = path.resolve(), package_dir()
    if target == package or package in target.parents:
        raise RobustkitError(
            f"{path} is inside the robustkit package ({package}), which is read-only; write to your zoo "
            f"{user_zoo()} (the default; --zoo DIR or $ROBUSTKIT_ZOO to move it) or give --out elsewhere"
        )
    return path
