"""Networks from outside robustkit: ``--model FILE.py:FACTORY`` or ``--model package.module:FACTORY``.

``FACTORY`` is any callable (a function or a class) that takes no argument and returns a
``torch.nn.Module`` satisfying :class:`robustkit.protocols.Reconstructor` (docs/api.md). A file
is loaded with :func:`importlib.util.spec_from_file_location`, so it needs no package around it.
Every failure is one :class:`~robustkit.errors.RobustkitError` line naming the problem and the fix.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
from pathlib import Path
from types import ModuleType
from typing import Any

from torch import nn

from robustkit.errors import RobustkitError, exception_line

FORM = "FILE.py:FACTORY or package.module:FACTORY"


def is_plugin_ref(ref: Any) -> bool:
    """Whether a model reference names a plug-in (zoo names never contain ``:``)."""
    return isinstance(ref, str) and ":" in ref



def _import_file(path: Path) -> ModuleType:
    if not path.is_file():
        raise RobustkitError(f"plug-in file {path} does not exist; give an existing {FORM}")
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(f"robustkit_plugin_{path.stem}_{digest}", path)
    if spec is None or spec.loader is None:
        raise RobustkitError(f"plug-in file {path} cannot be imported as Python; give a .py file ({FORM})")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:  # the user's code (a script's sys.exit too): report it on one line
        raise RobustkitError(f"plug-in file {path} failed to import ({exception_line(exc)}); fix the file") from None
    return module


def _import_module(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and (name == exc.name or name.startswith(exc.name + ".")):
            file = Path(*name.split(".")).with_suffix(".py")
            hint = f"; to load the file {file}, write {file}:FACTORY" if file.is_file() else ""
            raise RobustkitError(
                f"no module {name!r} (plug-in {FORM}){hint or '; check the name, install the package or give a file path'}"
            ) from None
        raise RobustkitError(f"plug-in module {name!r} failed to import ({exception_line(exc)}); install what it needs") from None
    except (Exception, SystemExit) as exc:
        raise RobustkitError(f"plug-in module {name!r} failed to import ({exception_line(exc)}); fix the module") from None


def check_reconstructor(model: Any, where: str) -> nn.Module:
    """``model`` if it is an ``nn.Module`` callable as ``model(kspace, op)`` (or a fixed-point
    model that robustkit solves itself); otherwise a one-line error naming ``where`` it came from."""
    if not isinstance(model, nn.Module):
        raise RobustkitError(
            f"{where} returned an object of type {type(model).__name__}, not a torch.nn.Module; return the network "
            "(an nn.Module with forward(kspace, op) -> image)"
        )
    has_forward = type(model).forward is not nn.Module.forward
    if not has_forward and not callable(getattr(model, "fixed_point_map", None)):
        raise RobustkitError(
            f"{where}: {type(model).__name__} defines neither forward(kspace, op) nor fixed_point_map(kspace, op); "
            "define one of them"
        )
    if has_forward:
        try:
            inspect.signature(model.forward).bind(object(), object())
        except TypeError:
            raise RobustkitError(
                f"{where}: {type(model).__name__}.forward{inspect.signature(model.forward)} cannot be called as "
                "forward(kspace, op); robustkit passes k-space (B, C, H, W) and a SenseOperator"
            ) from None
        except ValueError:  # no signature (a C extension): let the first call tell
            pass
    return model


def load_plugin(spec: str) -> nn.Module:
    """The network built by the factory that ``spec`` (``FILE.py:FACTORY`` or
    ``package.module:FACTORY``) names; checked by :func:`check_reconstructor`."""
    target, _, attr = spec.rpartition(":")
    if not target or not attr.isidentifier():
        raise RobustkitError(f"plug-in {spec!r} is not of the form {FORM}")
    looks_like_file = target.endswith(".py") or "/" in target or "\\" in target
    module = _import_file(Path(target)) if looks_like_file else _import_module(target)
    if not hasattr(module, attr):
        found = sorted(k for k, v in vars(module).items() if callable(v) and not k.startswith("_")
                       and getattr(v, "__module__", None) == module.__name__)
        raise RobustkitError(
            f"{target} has no attribute {attr!r}; callables defined there: {', '.join(found) or 'none'}"
        )
    factory = getattr(module, attr)
    if not callable(factory):
        raise RobustkitError(
            f"{target}:{attr} is of type {type(factory).__name__}, not callable; name a function or class that returns the model"
        )
    try:
        model = factory()
    except Exception as exc:  # the user's code
        raise RobustkitError(f"plug-in factory {spec} raised {exception_line(exc)}; fix the factory") from None
    return check_reconstructor(model, f"plug-in factory {spec}")
