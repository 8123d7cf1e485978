"""Import checkpoints trained with the authors' public code into the zoo (docs/import.md).

Three reference layouts, all a ``torch.save`` of ``{"state_dict": model.state_dict()}`` (MnM-MOL
and its MoDL notebook add ``"epoch"``) where ``model`` wraps one solver block ``f``:

- ``mnmmol-ref``: maneeshrj/MnM-MOL ``deGrad`` in ``DEQ`` → :class:`~robustkit.models.mnmmol.MnMMOL`,
  damped step γ = 0.1 iterated plainly to the reference tolerance;
- ``mol-ref``: anikpram/Monotone-Operator-Learning ``fwdbwdBlock`` in ``DEQ`` →
  :class:`~robustkit.models.mol.MOL`, α = 0.01, iterated plainly;
- ``modl-ref``: maneeshrj/MnM-MOL ``modlBlock`` in ``Unroll`` → :class:`~robustkit.models.modl.MoDL`, K = 10.

Keys: ``f.lam → lam`` and ``f.dw.net.{i}.conv.{weight,bias} → cnn.net.{2i}.{weight,bias}`` (the
reference wraps each conv in a ``convlayer`` holding its ReLU; robustkit's ``nn.Sequential``
interleaves them). Both sides feed the CNN ``[real, imag]`` channels, so no channel permutation.

Loading never runs a pickle's code: ``torch.load(..., weights_only=True, map_location="cpu")``
(the authors saved on a GPU; ``map_location`` lets a CPU-only machine read the file).
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from robustkit.choices import BASELINE_NAMES
from robustkit.errors import RobustkitError, exception_line

_CONV_KEY = re.compile(r"^f\.dw\.net\.(\d+)\.conv\.(weight|bias)$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
#: top-level keys of the reference checkpoint dictionary besides ``state_dict``.
_ALLOWED_TOP = {"state_dict", "epoch"}
#: the import a pickle would run, as named by the weights-only unpickler.
_GLOBAL = re.compile(r"GLOBAL ([\w.]+)", re.IGNORECASE)


@dataclass(frozen=True)
class ReferenceLayout:
    """How one reference code base stores and runs its model.

    Attributes:
        model: robustkit registry name built from it.
        source: the reference repository and the classes whose ``state_dict`` is stored.
        config: solver settings carried over (the reference's training/inference settings).
        accel: the acceleration of the reference's shipped settings (the card's ``data.accel``).
        conventions: what the import maps, and why, one line each (copied to the card).
    """

    model: str
    source: str
    config: dict[str, Any]
    accel: float
    conventions: dict[str, str] = field(default_factory=dict)


_COMMON = {
    "fft": "both: centred orthonormal 2-D FFT fftshift(fft2(ifftshift(x), norm='ortho')); no change",
    "channels": "both feed F_θ [real, imag] on the channel axis (complex_to_real / to_channels); no permutation",
    "sense_init": "both start from 50 CG steps on (100 AᴴA + 1.001 I) x = 100 Aᴴb",
}
_SCALE_NOTE = "image scale s = {scale:g} folded into F_θ: F'(x) = F(s·x)/s (first conv ×s, last conv and bias ÷s)"

LAYOUTS: dict[str, ReferenceLayout] = {
    "mnmmol-ref": ReferenceLayout(
        model="mnmmol",
        source="https://github.com/maneeshrj/MnM-MOL (solvers.py deGrad in DEQ, train_mnm_mol.ipynb)",
        config={
            "gamma": 0.1, "delta": 0.3, "m": 0.02, "solver": "damped",
            "tol": 2e-4, "max_iter": 200, "eval_tol": 2e-4, "eval_max_iter": 200,
            "backward": "implicit", "backward_method": "damped", "backward_tol": 2e-4, "backward_max_iter": 200,
        },
        accel=4.0,
        conventions={
            **_COMMON,
            "lambda": "x⁺ = x − (0.1/λ)[λ(AᴴA x − Aᴴb) + F_θ(x)] = x − 0.1[AᴴA x − Aᴴb + F_θ(x)/λ]: "
                      "λ divides F_θ, γ = 0.1 (robustkit MnMMOL with gamma = 0.1)",
            "alpha": "the notebook sets optBlock.alpha = 0.055 but deGrad.forward never reads it; not imported",
            "solver": "plain iteration of the damped step from SENSE to ‖x_{n+1} − x_n‖/‖x_n‖ < 2e-4, cap 200 "
                      "(err_tol, nFETarget): robustkit solver 'damped' (γ_solver = 1) on the γ = 0.1 map, "
                      "tol 2e-4, cap 200, for training and evaluation",
            "constraint": "lip_threshold 0.98 on L[H_θ](x*; eps = 0.3): m = 0.02, δ = 0.3",
            "scaling": "reference data: k-space divided per subject by the largest coil-image magnitude; "
                       "robustkit: max|target| = 1 per slice",
        },
    ),
    "mol-ref": ReferenceLayout(
        model="mol",
        source="https://github.com/anikpram/Monotone-Operator-Learning (solver_blocks.py fwdbwdBlock in "
               "solvers.py DEQ, trn_mol.py)",
        config={
            "alpha": 0.01, "cg_iters": 5, "mu": 1.001, "m": 0.02, "solver": "damped",
            "tol": 1e-4, "max_iter": 500, "eval_tol": 1e-4, "eval_max_iter": 500,
            "backward": "implicit", "backward_method": "damped", "backward_tol": 1e-4, "backward_max_iter": 500,
        },
        accel=6.0,
        conventions={
            **_COMMON,
            "lambda": "x⁺ = (1.001 I + αλ AᴴA)⁻¹[(1 − α)x + α F_θ(x) + αλ Aᴴb] (CG 5, warm start): "
                      "λ weights data consistency, F_θ is the network output itself (robustkit MOL)",
            "alpha": "α = 0.01 is set in trn_mol.py / tst_mol.py, not stored in the checkpoint",
            "solver": "plain iteration from SENSE to ‖x_{n+1} − x_n‖/‖x_n‖ < 1e-4, cap 500 (err_tol, nFETarget): "
                      "robustkit solver 'damped' (γ_solver = 1), tol 1e-4, cap 500",
            "constraint": "log barrier on L[F_θ] with T = 0.98: m = 0.02",
            "scaling": "reference data: each slice divided by its largest coil-image magnitude; "
                       "robustkit: max|target| = 1 per slice",
        },
    ),
    "modl-ref": ReferenceLayout(
        model="modl",
        source="https://github.com/maneeshrj/MnM-MOL (solvers.py modlBlock in Unroll, train_modl.ipynb)",
        config={"K": 10, "cg_iters": 5, "mu": 1.001},
        accel=4.0,
        conventions={
            **_COMMON,
            "lambda": "z = x − F_θ(x); x ← CG₅[(λ AᴴA + 1.001 I) x = z + λ Aᴴb], warm start: "
                      "λ weights data consistency (robustkit MoDL)",
            "K": "K = 10 unrolled iterations (modl_settings.json), not stored in the checkpoint",
            "scaling": "reference data: k-space divided per subject by the largest coil-image magnitude; "
                       "robustkit: max|target| = 1 per slice",
        },
    ),
}


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_reference_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(state_dict, extras)`` of a reference checkpoint, read without executing code.

    Accepts ``{"state_dict": …}`` with an optional ``"epoch"`` (``extras``), or a bare state dict.
    Raises :class:`RobustkitError` for a missing file, a file that is not a torch checkpoint, and a
    pickle that needs code execution (refused, never run).
    """
    import pickle
    import warnings

    path = Path(path)
    if not path.is_file():
        raise RobustkitError(f"checkpoint {path} does not exist; give the path of the reference .pth.tar file")
    not_checkpoint = f"{path} is not a PyTorch checkpoint ({{}}); give the .pth.tar file that the reference code saved"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pickle-protocol notices of the weights-only unpickler
            obj = torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as exc:
        needs = _GLOBAL.search(str(exc))
        if needs:
            raise RobustkitError(
                f"{path} needs code execution to unpickle (it calls {needs[1]}), and robustkit never runs a "
                "checkpoint's code; load it only if you trust it and re-save torch.save({'state_dict': "
                "model.state_dict()}, FILE)"
            ) from None
        raise RobustkitError(not_checkpoint.format("the weights-only unpickler refused it: not a pickle of tensors, or one "
                                                    "that needs code execution")) from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, UnicodeDecodeError) as exc:
        raise RobustkitError(not_checkpoint.format(exception_line(exc, 160))) from None
    if isinstance(obj, dict) and "state_dict" in obj:
        extra = sorted(str(k) for k in set(obj) - _ALLOWED_TOP)
        if extra:
            raise RobustkitError(f"{path} has unexpected top-level keys {extra}; a reference checkpoint holds "
                                 "only 'state_dict' and 'epoch': re-save the weights alone, "
                                 "torch.save({'state_dict': ckpt['state_dict']}, FILE)")
        state, extras = obj["state_dict"], {k: obj[k] for k in obj if k != "state_dict"}
    else:
        state, extras = obj, {}
    if not isinstance(state, dict):
        raise RobustkitError(f"{path} holds no state dict of tensors; give the .pth.tar file that the reference "
                             "code saved ({'state_dict': …})")
    odd = next((k for k, v in state.items() if not isinstance(v, torch.Tensor)), None)
    if odd is not None:
        raise RobustkitError(f"{path}: the state dict's entry {odd!r} is of type {type(state[odd]).__name__}, not a tensor; "
                             "give the .pth.tar file that the reference code saved ({'state_dict': …})")
    if state and all(str(k).startswith("module.") for k in state):  # saved from nn.DataParallel: the same weights
        state = {str(k).removeprefix("module."): v for k, v in state.items()}
    return dict(state), extras



def map_keys(state: dict[str, torch.Tensor]) -> tuple[dict[str, str], int, int]:
    """The key mapping reference → robustkit, and the CNN's ``(width, depth)`` read from the shapes.

    Raises :class:`RobustkitError` listing every unknown and every missing key, and naming a shape
    the reference architecture (3×3 convs, 2 → width → … → width → 2) cannot have.
    """
    layers: dict[int, set[str]] = {}
    unknown = []
    for key in state:
        match = _CONV_KEY.match(key)
        if match:
            layers.setdefault(int(match[1]), set()).add(match[2])
        elif key != "f.lam":
            unknown.append(key)
    depth = max(layers) + 1 if layers else 0
    missing = [] if "f.lam" in state else ["f.lam"]
    missing += [f"f.dw.net.{i}.conv.{p}" for i in range(max(depth, 2)) for p in ("weight", "bias")
                if p not in layers.get(i, set())]
    if unknown or missing:
        raise RobustkitError(
            f"the checkpoint does not have the reference layout (f.lam, f.dw.net.{{0..N}}.conv.{{weight,bias}}): "
            f"unknown keys {sorted(unknown) or 'none'}; missing keys {missing or 'none'}"
        )
    weights = [state[f"f.dw.net.{i}.conv.weight"] for i in range(depth)]
    width = weights[0].shape[0]
    expected = [(width if i < depth - 1 else 2, 2 if i == 0 else width, 3, 3) for i in range(depth)]
    for i, (w, shape) in enumerate(zip(weights, expected)):
        bias = state[f"f.dw.net.{i}.conv.bias"]
        if tuple(w.shape) != shape or tuple(bias.shape) != (shape[0],):
            raise RobustkitError(
                f"f.dw.net.{i}.conv has weight {tuple(w.shape)} and bias {tuple(bias.shape)}, expected {shape} and "
                f"({shape[0]},) for a 3×3 CNN 2 → {width} → … → 2 (single-image input_channels = output_channels = 1)"
            )
    if state["f.lam"].numel() != 1:
        raise RobustkitError(f"f.lam has shape {tuple(state['f.lam'].shape)}; the reference λ is a scalar")
    for key, value in state.items():
        if not value.is_floating_point():  # complex and integer tensors are not the reference's weights
            raise RobustkitError(f"{key} is {str(value.dtype).removeprefix('torch.')}; the reference weights and λ are "
                                 "real floating-point numbers: is it the right checkpoint?")
        if not bool(torch.isfinite(value).all()):
            raise RobustkitError(f"{key} holds NaN or Inf values; the checkpoint is damaged (or was saved from a "
                                 "diverged training): use another one")
    mapping = {"f.lam": "lam"}
    for i in range(depth):
        for p in ("weight", "bias"):
            mapping[f"f.dw.net.{i}.conv.{p}"] = f"cnn.net.{2 * i}.{p}"
    return mapping, width, depth


def convert(state: dict[str, torch.Tensor], layout: str, scale: float = 1.0,
            overrides: dict[str, Any] | None = None):
    """Build the robustkit model of ``layout`` holding the reference weights ``state``.

    ``scale`` s folds an image-scale convention into F_θ: the imported network is
    ``F'(x) = F_θ(s·x)/s``, exact for a ReLU CNN (first conv weight × s, last conv weight and bias
    ÷ s), so the model reconstructs ``x/s`` where the reference reconstructs ``x`` from ``s·b``.
    ``overrides`` replace reference settings (e.g. ``alpha``, ``K``). Returns ``(model, mapping)``.
    """
    from robustkit.models.registry import build_model

    if layout not in LAYOUTS:
        raise RobustkitError(f"unknown reference layout {layout!r}; choose one of {', '.join(sorted(LAYOUTS))}")
    if not (scale > 0 and scale < float("inf")):
        raise RobustkitError(f"--scale must be a positive number, got {scale}")
    ref = LAYOUTS[layout]
    mapping, width, depth = map_keys(state)
    lam = float(state["f.lam"].reshape(()))
    if not lam > 0:
        raise RobustkitError(f"the checkpoint's λ (f.lam) is {lam:g}; robustkit needs λ > 0")
    config = {**ref.config, **(overrides or {}), "width": width, "depth": depth, "lam": lam}
    model = build_model(ref.model, config)
    new = {mapping[k]: v.detach().to(torch.float32).clone() for k, v in state.items()}
    new["lam"] = new["lam"].reshape(())
    if scale != 1.0:
        new["cnn.net.0.weight"] = new["cnn.net.0.weight"] * scale
        last = 2 * (depth - 1)
        new[f"cnn.net.{last}.weight"] = new[f"cnn.net.{last}.weight"] / scale
        new[f"cnn.net.{last}.bias"] = new[f"cnn.net.{last}.bias"] / scale
    model.load_state_dict(new, strict=True)
    return model.eval(), mapping


def default_folder(name: str) -> Path:
    """``NAME`` in the user's zoo (``--zoo``, else ``$ROBUSTKIT_ZOO``, else ``./models``)."""
    from robustkit.locations import user_zoo

    return user_zoo() / name


def import_checkpoint(path: str | os.PathLike, layout: str, name: str, out: str | os.PathLike | None = None,
                      accel: float | None = None, scale: float = 1.0,
                      overrides: dict[str, Any] | None = None, command: str | None = None) -> tuple[Path, dict[str, Any]]:
    """Import a reference checkpoint as the zoo entry ``out`` (default :func:`default_folder`).

    Writes ``weights.safetensors`` and ``card.json`` (source layout, file name, sha256, epoch, key
    mapping, conventions, solver carried over). Refuses an existing entry; on any error nothing is
    written. Returns ``(folder, card)``.
    """
    from robustkit.models.zoo import CARD, WEIGHTS, read_card, save_model

    if not _NAME.match(name or ""):
        raise RobustkitError(f"--name {name!r} is not a valid zoo name; use letters, digits, '.', '_' and '-'")
    if name.split(":", 1)[0] in BASELINE_NAMES:
        raise RobustkitError(f"--name {name!r} is the name of a built-in baseline, which a study would read instead; "
                             "choose another --name")
    folder = Path(out) if out is not None else default_folder(name)
    if (folder / CARD).exists() or (folder / WEIGHTS).exists():
        raise RobustkitError(f"{folder} already holds a zoo entry; choose another --name or --out (nothing was written)")
    if accel is not None and not accel >= 1:
        raise RobustkitError(f"--accel must be ≥ 1, got {accel:g}")
    state, extras = load_reference_checkpoint(path)
    model, mapping = convert(state, layout, scale=scale, overrides=overrides)
    ref = LAYOUTS[layout]
    conventions = dict(ref.conventions)
    if scale != 1.0:
        conventions["scaling"] += "; " + _SCALE_NOTE.format(scale=scale)
    epoch = extras.get("epoch")
    card = {
        "notes": f"imported from a {layout} checkpoint trained with the authors' code; weights unchanged"
                 + ("" if scale == 1.0 else f" except the image scale s = {scale:g}"),
        "source": {
            "layout": layout,
            "reference": ref.source,
            "file": Path(path).name,
            "sha256": sha256_of(Path(path)),
            "epoch": int(epoch) if isinstance(epoch, (int, float)) or torch.is_tensor(epoch) else None,
            "scale": scale,
            "overrides": dict(overrides or {}),
        },
        "key_mapping": mapping,
        "conventions": conventions,
        "data": {"name": "reference training data (not available to robustkit)",
                 "accel": float(accel if accel is not None else ref.accel)},
        "command": command or f"robustkit models import {Path(path).name} --from {layout} --name {name}",
    }
    save_model(folder, model, card)
    return folder, read_card(folder)
