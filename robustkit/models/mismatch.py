"""How the data a model is evaluated on differs from the data its card says it was trained on.

A model is never refused for running on other data: F_θ is fully convolutional and the SENSE
operator comes from the data, so a model trained on 120×104 brains runs on 320×256 knees. The
difference is recorded (meta.json of a study run), printed as a one-line warning and shown on the
report, because the numbers then measure generalisation as well as the model (docs/data.md). Two
other facts of a card travel the same way, as notes a study's reader must see: a failed convergence
gate (:func:`failed_gate`) and a MoDL anchor (:func:`has_modl_anchor`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _same_data(trained: str, evaluated: str) -> bool:
    """``builtin`` only matches ``builtin``; two files match when their names do (a card stores
    the path as given when training, which moves with the user's folders)."""
    if "builtin" in (trained, evaluated):
        return trained == evaluated
    return Path(trained).name == Path(evaluated).name


def card_mismatch(card: dict[str, Any], data: str, shape: tuple[int, int] | list[int], accel: float) -> dict[str, Any]:
    """The differences between the card's training data and the evaluation data, each as
    ``{"trained": …, "data": …}`` under ``shape`` (``[H, W]``), ``accel`` and ``data`` (the data's
    name); empty when there is none or the card does not say."""
    trained = card.get("data") or {}
    out: dict[str, Any] = {}
    if trained.get("shape") is not None and list(trained["shape"]) != list(shape):
        out["shape"] = {"trained": list(trained["shape"]), "data": list(shape)}
    if trained.get("accel") is not None and abs(float(trained["accel"]) - float(accel)) > 1e-9:
        out["accel"] = {"trained": float(trained["accel"]), "data": float(accel)}
    if trained.get("name") is not None and not _same_data(str(trained["name"]), str(data)):
        out["data"] = {"trained": str(trained["name"]), "data": str(data)}
    return out


def mismatch_text(name: str, mismatch: dict[str, Any]) -> str:
    """One line, e.g. ``model 'modl-4x' was trained on builtin, on 120x104 images; here it runs on
    knees.h5, on 320x256 images (not refused: …)``; ``""`` when there is no difference."""
    if not mismatch:
        return ""
    words = {"data": lambda v: f"on {v}", "shape": lambda v: "on " + "x".join(map(str, v)) + " images",
             "accel": lambda v: f"at {v:g}x"}
    trained = ", ".join(words[k](mismatch[k]["trained"]) for k in words if k in mismatch)
    here = ", ".join(words[k](mismatch[k]["data"]) for k in words if k in mismatch)
    return f"model {name!r} was trained {trained}; here it runs {here} (not refused: the numbers include this shift)"


def warn_mismatch(name: str, card: dict[str, Any], data: str, shape: tuple[int, int] | list[int],
                  accel: float) -> dict[str, Any]:
    """:func:`card_mismatch`, issued as one :class:`~robustkit.errors.RobustkitWarning` line when
    not empty; returns it (studies record it in meta.json)."""
    from robustkit.errors import warn

    mismatch = card_mismatch(card, data, shape, accel)
    if mismatch:
        warn(mismatch_text(name, mismatch))
    return mismatch


def failed_gate(card: dict[str, Any]) -> list[str]:
    """The checks of the convergence gate the card records as failed (``[]`` when it passed or the
    card has no gate: MoDL, the shipped models trained before the gate, plug-ins)."""
    gate = card.get("gate")
    if not isinstance(gate, dict) or gate.get("passed") is not False:
        return []
    checks = [c for c in gate.get("checks", []) if isinstance(c, dict)]
    return [str(c.get("name", "?")) for c in checks if c.get("passed") is False] or ["gate"]


def gate_text(name: str, failed: list[str]) -> str:
    """One line saying that ``name``'s card records a failed convergence gate (``failed``: its checks)."""
    return (f"model {name!r} failed its convergence gate when trained ({', '.join(failed)}; card gate.passed = false): "
            "its solves may not reach a fixed point, read the converged columns (docs/training.md)")


def has_modl_anchor(card: dict[str, Any]) -> bool:
    """Whether the card's MnM-MOL leaks towards a frozen MoDL (``leak_to = "modl"``, the default
    recipe's anchor), whose image its fixed point takes where F_θ does not act."""
    config = card.get("config")
    return isinstance(config, dict) and config.get("leak_to") == "modl" and float(config.get("leak", 0) or 0) > 0


def anchor_text(name: str) -> str:
    """One line saying that ``name`` leaks towards a frozen MoDL and what follows for its robustness."""
    return (f"model {name!r} leaks towards a frozen MoDL (its anchor, leak_to = modl): where F_θ does not act its fixed "
            "point takes the MoDL's image, so expect about that MoDL's response to perturbed measurements "
            "(docs/training.md)")
