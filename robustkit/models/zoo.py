"""The model zoo: ``models/<NAME>/{weights.safetensors, card.json}``, sha256-verified on load.

Weights are stored with safetensors, which cannot execute code on load. The card (JSON) holds the
registry name, the architecture/solver config, training data and mask, acceleration, δ, epochs,
validation metrics, training wall-clock, ``weights_sha256`` and the command that produced it.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from robustkit.errors import RobustkitError
from robustkit.io import write_bytes

WEIGHTS = "weights.safetensors"
CARD = "card.json"


def zoo_dir() -> Path:
    """``$ROBUSTKIT_ZOO`` or the repository's ``models/`` folder."""
    env = os.environ.get("ROBUSTKIT_ZOO")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "models"


def save_model(folder: str | os.PathLike, model, card: dict[str, Any]) -> Path:
    """Write ``model``'s weights and ``card`` (with model name, config and weights sha256) atomically."""
    from safetensors.torch import save

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    blob = save(state)
    write_bytes(folder / WEIGHTS, blob)
    card = {**card, "model": model.name, "config": model.config.to_dict(), "weights_sha256": hashlib.sha256(blob).hexdigest()}
    write_bytes(folder / CARD, (json.dumps(card, indent=2, sort_keys=True) + "\n").encode())
    return folder


def read_card(folder: str | os.PathLike) -> dict[str, Any]:
    folder = Path(folder)
    path = folder / CARD
    if not path.exists():
        raise RobustkitError(f"{folder} has no {CARD}; it is not a robustkit model folder")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise RobustkitError(f"{path} is not valid JSON ({exc.msg}); restore it from git or retrain") from None


def resolve(ref: str, root: Path | None = None) -> Path:
    """A model folder from a path, a zoo folder name, or a registry name (its default zoo entry)."""
    root = root or zoo_dir()
    path = Path(ref)
    if (path / CARD).exists():
        return path
    if (root / ref / CARD).exists():
        return root / ref
    defaults = [p.parent for p in sorted(root.glob(f"*/{CARD}")) if _is_default(p.parent, ref)]
    if defaults:
        return defaults[0]
    available = ", ".join(sorted(p.parent.name for p in root.glob(f"*/{CARD}"))) or "none"
    raise RobustkitError(
        f"no model {ref!r} in the zoo {root}; available: {available} "
        "(or train one with `robustkit train --model NAME`)"
    )


def _is_default(folder: Path, name: str) -> bool:
    card = read_card(folder)
    return card.get("model") == name and bool(card.get("default"))


def load_model(ref: str, root: Path | None = None, map_location: str = "cpu"):
    """Build and load a zoo model, verifying the weights' sha256. Returns ``(model, card)`` in eval mode."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    from robustkit.models.registry import build_model

    folder = resolve(ref, root)
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
    model = build_model(card["model"], card.get("config", {}))
    try:
        state = load(blob)
    except SafetensorError as exc:
        raise RobustkitError(f"{weights} is not a valid safetensors file ({exc})") from None
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise RobustkitError(
            f"{weights} does not fit a {card['model']} model (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    model.to(map_location).eval()
    return model, card


def list_models(root: Path | None = None) -> list[dict[str, Any]]:
    """Cards of every zoo entry (with ``folder``), sorted by folder name."""
    root = root or zoo_dir()
    return [{"folder": p.parent.name, **read_card(p.parent)} for p in sorted(root.glob(f"*/{CARD}"))]
