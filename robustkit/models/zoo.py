"""The model zoo: ``<zoo>/<NAME>/{weights.safetensors, card.json}``, sha256-verified on load.

Weights are stored with safetensors, which cannot execute code on load. The card (JSON) holds the
registry name, the architecture/solver config, training data and mask, acceleration, δ, epochs,
validation metrics, training wall-clock, ``weights_sha256`` and the command that produced it.

A name is looked up in the user zoo first (``--zoo``, ``$ROBUSTKIT_ZOO`` or ``./models``), then in
the read-only shipped zoo inside the package (:mod:`robustkit.locations`, docs/zoo.md). A user
entry shadows a shipped one of the same folder name. A broken card affects only its own entry:
:func:`zoo_entries` reports it as unusable with the reason, and every other lookup works.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from robustkit.choices import MODEL_NAMES
from robustkit.errors import RobustkitError
from robustkit.locations import refuse_package_write, shipped_zoo, user_zoo
from robustkit.io import make_folder, write_bytes

WEIGHTS = "weights.safetensors"
CARD = "card.json"

#: the user zoo (kept under this name for existing callers; see :func:`robustkit.locations.user_zoo`).
zoo_dir = user_zoo


def save_model(folder: str | os.PathLike, model, card: dict[str, Any]) -> Path:
    """Write ``model``'s weights and ``card`` (with model name, config and weights sha256) atomically."""
    from safetensors.torch import save

    folder = refuse_package_write(folder)
    make_folder(folder)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    blob = save(state)
    write_bytes(folder / WEIGHTS, blob)
    card = {**card, "model": model.name, "config": model.config.to_dict(), "weights_sha256": hashlib.sha256(blob).hexdigest()}
    write_bytes(folder / CARD, (json.dumps(card, indent=2, sort_keys=True) + "\n").encode())
    return folder


def read_card(folder: str | os.PathLike) -> dict[str, Any]:
    """The card of a model folder, checked by :func:`check_card` (errors name the file and the fix)."""
    folder = Path(folder)
    path = folder / CARD
    if not path.exists():
        raise RobustkitError(f"{folder} has no {CARD}; it is not a robustkit model folder")
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise RobustkitError(f"{path} is not valid JSON ({exc.msg}); restore it from git or retrain") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RobustkitError(f"{path} cannot be read ({exc.__class__.__name__}); restore it from git or retrain") from None
    check_card(card, path)
    return card


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_card(card: Any, path: str | os.PathLike = CARD) -> None:
    """Raise a one-line :class:`RobustkitError` when ``card`` is not a usable zoo card.

    Checked: a JSON object; ``model`` a registry name; ``config`` an object; ``data`` an object
    whose ``accel`` is a number ≥ 1 and ``shape`` two positive integers (both optional). The config's
    keys and the weights' shapes are checked when the model is built (:func:`load_model`).
    """
    fix = "restore the card from git or retrain the model"
    if not isinstance(card, dict):
        raise RobustkitError(f"{path} holds a JSON {type(card).__name__}, not an object (a zoo card); {fix}")
    model = card.get("model")
    if model is None:
        raise RobustkitError(f"{path} has no 'model' (one of {', '.join(MODEL_NAMES)}); {fix}")
    if model not in MODEL_NAMES:
        raise RobustkitError(f"{path}: 'model' is {model!r}, not one of {', '.join(MODEL_NAMES)}; {fix}")
    for key in ("config", "data"):
        if key in card and not isinstance(card[key], dict):
            raise RobustkitError(f"{path}: {key!r} must be a JSON object, not a {type(card[key]).__name__}; {fix}")
    data = card.get("data", {})
    accel = data.get("accel")
    if accel is not None and not (_is_number(accel) and accel >= 1):
        raise RobustkitError(f"{path}: 'data.accel' must be a number ≥ 1 (e.g. 4), not {accel!r}; {fix}")
    shape = data.get("shape")
    if shape is not None and not (isinstance(shape, list) and len(shape) == 2
                                  and all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in shape)):
        raise RobustkitError(f"{path}: 'data.shape' must be two positive integers [H, W], not {shape!r}; {fix}")


@dataclass(frozen=True)
class ZooEntry:
    """One folder of a zoo: its card, or why it cannot be used."""

    folder: Path
    zoo: str  #: "user" or "shipped"
    card: dict[str, Any] | None
    error: str | None = None
    shadowed: bool = False  #: a user entry of the same name hides this shipped one

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def usable(self) -> bool:
        return self.error is None


def zoos(root: Path | None = None) -> list[tuple[str, Path]]:
    """``[(label, folder)]`` in lookup order: the user zoo, then the shipped one (only ``root`` if given)."""
    if root is not None:
        return [("user", Path(root))]
    user, shipped = user_zoo(), shipped_zoo()
    same = user.exists() and user.resolve() == shipped.resolve()
    return [("user", user)] + ([] if same else [("shipped", shipped)])


def zoo_entries(root: Path | None = None, verify: bool = False) -> list[ZooEntry]:
    """Every folder with a card in the zoos, in lookup order. A bad card becomes an unusable entry
    (its error as the reason) instead of an error; ``verify`` also builds each model and checks its
    weights (sha256 and shapes), which imports torch."""
    entries: list[ZooEntry] = []
    seen: set[str] = set()
    for label, root_dir in zoos(root):
        for card_path in sorted(root_dir.glob(f"*/{CARD}")):
            folder = card_path.parent
            try:
                card, error = read_card(folder), None
                if verify:
                    _load_folder(folder, "cpu")
            except RobustkitError as exc:
                card, error = None, str(exc)
            entries.append(ZooEntry(folder, label, card, error, shadowed=folder.name in seen))
            seen.add(folder.name)
    return entries


def _available(entries: list[ZooEntry], root: Path | None) -> str:
    def names(label: str) -> str:
        found = [e.name + ("" if e.usable else " (unusable)") for e in entries if e.zoo == label and not e.shadowed]
        return ", ".join(found) or "none"

    if root is not None:
        return f"available: {names('user')}"
    return f"available in the user zoo {user_zoo()}: {names('user')}; in the shipped zoo: {names('shipped')}"


def resolve(ref: str, root: Path | None = None) -> Path:
    """A model folder from a path, a zoo folder name, or a registry name (its default zoo entry).

    Names are looked up in the user zoo, then the shipped zoo (only in ``root`` if given). A
    registry name means the first entry marked default (``robustkit train --default``), the user
    zoo's first: a user folder that only shares a shipped folder's name (``./models/modl-4x`` from
    a plain ``robustkit train --model modl``) hides that folder's name, not the shipped default.
    """
    path = Path(ref)
    if (path / CARD).exists():
        return path
    every = zoo_entries(root)
    entries = [e for e in every if not e.shadowed]
    for entry in entries:
        if entry.name == ref:
            return entry.folder
    for entry in every:
        if entry.usable and entry.card.get("model") == ref and entry.card.get("default"):
            return entry.folder
    where = f"the zoo {root}" if root is not None else "the user zoo or the shipped zoo"
    raise RobustkitError(
        f"no model {ref!r} in {where}; {_available(entries, root)} "
        "(or train one with `robustkit train --model NAME`)"
    )


def zoo_labels(folders: list[Path]) -> list[str]:
    """Labels for zoo folders that appear together in one table: the folder name, and
    ``NAME-shipped`` for a shipped folder whose name one of the user's folders in the list shares
    (``./models/modl-4x`` beside the shipped ``modl-4x``, reached as ``modl``)."""
    from robustkit.locations import shipped_zoo

    shipped = shipped_zoo().resolve()
    is_shipped = [f.resolve().parent == shipped for f in folders]
    user_names = {f.name for f, s in zip(folders, is_shipped) if not s}
    return [f"{f.name}-shipped" if s and f.name in user_names else f.name for f, s in zip(folders, is_shipped)]


def zoo_references(refs: list[Any]) -> dict[int, tuple[Path, str] | None]:
    """For the position of each zoo reference in ``refs`` (baselines, plug-in specs and network
    objects are left out): ``(folder, label)`` at its folder's first mention, ``None`` at a later
    mention of the same folder (``modl`` and ``modl-4x`` may be one). Labels: :func:`zoo_labels`."""
    from robustkit.models.baselines import is_baseline_ref
    from robustkit.models.plugins import is_plugin_ref

    folders = {i: resolve(r).resolve() for i, r in enumerate(refs)
               if isinstance(r, str) and not is_baseline_ref(r) and not is_plugin_ref(r)}
    unique = list(dict.fromkeys(folders.values()))
    label = dict(zip(unique, zoo_labels(unique)))
    first = {folder: i for i, folder in reversed(list(folders.items()))}
    return {i: (folder, label[folder]) if first[folder] == i else None for i, folder in folders.items()}


def load_model(ref: str, root: Path | None = None, map_location: str = "cpu"):
    """Build and load a zoo model, verifying the weights' sha256. Returns ``(model, card)`` in eval mode."""
    return _load_folder(resolve(ref, root), map_location)


def _load_folder(folder: Path, map_location: str):
    from safetensors import SafetensorError
    from safetensors.torch import load

    from robustkit.models.registry import build_model

    card = read_card(folder)
    weights = folder / WEIGHTS
    if not weights.exists():
        raise RobustkitError(f"{folder} has no {WEIGHTS}; retrain the model or restore the file")
    blob = weights.read_bytes()
    digest = hashlib.sha256(blob).hexdigest()
    if digest != card.get("weights_sha256"):
        raise RobustkitError(
            f"{weights} does not match the sha256 on its card (file {digest[:12]}…, card "
            f"{str(card.get('weights_sha256'))[:12]}…); the weights were changed or corrupted — restore them"
        )
    try:
        model = build_model(card["model"], card.get("config", {}))
    except RobustkitError as exc:
        raise RobustkitError(f"{folder / CARD}: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise RobustkitError(f"{folder / CARD}: its config does not build a {card['model']} model ({exc}); "
                             "restore the card from git or retrain") from None
    try:
        state = load(blob)
    except SafetensorError as exc:
        raise RobustkitError(f"{weights} is not a valid safetensors file ({exc})") from None
    expected = model.state_dict()
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if wrong:
        k = wrong[0]
        raise RobustkitError(
            f"{weights} does not fit the {card['model']} config on its card: {k} is {list(state[k].shape)}, the model "
            f"expects {list(expected[k].shape)} ({len(wrong)} tensor(s) differ); restore the card's config or retrain"
        )
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise RobustkitError(
            f"{weights} does not fit a {card['model']} model (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    model.to(map_location).eval()
    return model, card


def list_models(root: Path | None = None) -> list[dict[str, Any]]:
    """Cards of the usable entries that lookups see (with ``folder`` and ``zoo``): user zoo first,
    then the shipped zoo's entries that no user entry shadows; each zoo sorted by folder name."""
    return [{"folder": e.name, "zoo": e.zoo, **e.card} for e in zoo_entries(root) if e.usable and not e.shadowed]
