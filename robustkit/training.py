"""Training loop for every model: checkpoint each epoch, resume, deterministic, CSV log.

Loss: mean squared error ``mean |x − x_gt|²`` of the complex reconstruction, plus the model's
constraint term:

- MnM-MOL: ``w · relu(L − T)²`` with ``L`` an estimate of ``L[H_θ](x*; δ)`` (two-point ascent in
  ``B(x*, δ‖x*‖)`` from random pairs, seeded on the iteration's slow mode, or the larger of the
  two, docs/maths.md §4, §6), ``T = penalty_threshold``; or, with ``slow_threshold`` set, each of the two
  estimates against its own threshold, ``w · (P(L_ball − T) + P(L_slow − T_slow))``;
- MOL: the log barrier ``w · (−log(T − L))`` on ``L[F_θ]`` (linear within 1e-3 of T), ``T = 1 − m``;
- ``penalty_kind`` swaps either model's penalty for the other's (quadratic or barrier);
- MOL-SN, MoDL: none (MOL-SN's constraint holds by construction).
"""

from __future__ import annotations

import csv
import json
import math
import os
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from robustkit.batch import operator_of, to_device
from robustkit.choices import LIPSCHITZ_ESTIMATES, LR_SCHEDULES, PENALTY_KINDS
from robustkit.errors import RobustkitError


#: penalty defaults per model: weight, threshold T (``None`` = the model's 1 − m) and kind.
PENALTY_DEFAULTS: dict[str, tuple[float, float | None, str]] = {
    "mnmmol": (0.5, 0.95, "quadratic"),
    "mol": (1e-6, None, "barrier"),
}


@dataclass
class TrainConfig:
    """Everything that determines a training run (stored on the card)."""

    model: str
    data: str = "builtin"
    accel: float = 4.0
    epochs: int = 10
    batch_size: int = 1
    lr: float = 1e-3
    lr_schedule: str = "constant"  # or "cosine": lr → lr/100 over `epochs` (see lr_at)
    lam_lr: float | None = None  # Adam lr of λ, its own group; None: LAM_LR_RELATIVE × the model's initial λ (see lam_lr_of)
    seed: int = 0
    noise: float = 0.0
    augment: bool = False  # a new smooth phase and a random left-right flip per training sample and epoch
    init_from: str | None = None  # zoo model whose F_θ and λ warm-start this one
    model_config: dict[str, Any] = field(default_factory=dict)
    penalty_weight: float | None = None  # None: PENALTY_DEFAULTS of the model
    penalty_threshold: float | None = None  # None: PENALTY_DEFAULTS of the model
    penalty_kind: str | None = None  # None: PENALTY_DEFAULTS of the model; else one of PENALTY_KINDS
    slow_threshold: float | None = None  # MnM-MOL, estimate "both": the slow-mode estimate's own T
    lipschitz_steps: int = 5
    lipschitz_estimate: str = "both"  # MnM-MOL: which estimate(s) of L[H_θ] the penalty acts on (LIPSCHITZ_ESTIMATES)
    max_minutes: float | None = None  # stop after the epoch that passes this wall-clock budget
    val_samples: int | None = None
    grad_clip: float = 1.0

    def __post_init__(self) -> None:
        # names are checked once, here, so that training never starts with one it cannot use
        if self.lr_schedule not in LR_SCHEDULES:
            raise RobustkitError(f"unknown lr schedule {self.lr_schedule!r}; choose one of {LR_SCHEDULES}")
        if self.lipschitz_estimate not in LIPSCHITZ_ESTIMATES:
            raise RobustkitError(f"unknown Lipschitz estimate {self.lipschitz_estimate!r}; choose one of {LIPSCHITZ_ESTIMATES}")
        if self.penalty_kind is not None and self.penalty_kind not in PENALTY_KINDS:
            raise RobustkitError(f"unknown penalty kind {self.penalty_kind!r}; choose one of {PENALTY_KINDS}")
        if self.slow_threshold is not None and (self.model != "mnmmol" or self.lipschitz_estimate != "both"):
            raise RobustkitError("a slow-mode threshold needs --model mnmmol and --lipschitz-estimate both")


#: default learning rate of λ relative to the model's initial λ (``config.lam``): Adam moves a
#: parameter by about its lr per step whatever the parameter's scale, so λ ≈ 10 sharing the CNN's
#: lr (1e-3 … 1e-5) stays where it started; 1e-2 lets λ ≈ 10 move by up to 0.1 per step.
LAM_LR_RELATIVE = 1e-2


def lam_lr_of(model, config: "TrainConfig") -> float:
    """Learning rate of λ at the base lr: ``config.lam_lr``, else ``LAM_LR_RELATIVE · λ_init``."""
    return config.lam_lr if config.lam_lr is not None else LAM_LR_RELATIVE * float(model.config.lam)


class NonFiniteLoss(RobustkitError):
    pass


def lr_at(config: TrainConfig, epoch: int) -> float:
    """Learning rate of epoch ``epoch`` (0-based): constant, or cosine annealing
    ``lr_e = lr_min + (lr − lr_min)(1 + cos(π e / (E − 1))) / 2`` with ``lr_min = lr / 100`` and
    ``E = config.epochs``, so the last epoch trains at ``lr_min``. A function of the epoch only,
    so a resumed run continues the same schedule."""
    if config.lr_schedule == "constant" or config.epochs <= 1:
        return config.lr
    lr_min = config.lr / 100
    return lr_min + (config.lr - lr_min) * (1 + math.cos(math.pi * min(epoch, config.epochs - 1) / (config.epochs - 1))) / 2


def _dataset(config: TrainConfig, split: str, vary: bool):
    from robustkit.data.builtin import ensure_builtin
    from robustkit.data.prepared import PreparedDataset
    from robustkit.physics.masks import MaskSpec

    path = ensure_builtin() if config.data == "builtin" else Path(config.data)
    return PreparedDataset(path, split=split, mask=MaskSpec(accel=config.accel), seed=config.seed, vary=vary, noise=config.noise,
                            augment=config.augment)


def penalty_settings(model, config: TrainConfig) -> tuple[float, float, str]:
    """Weight ``w``, threshold ``T`` and kind of ``model``'s constraint penalty: the config's where
    set, else :data:`PENALTY_DEFAULTS` (a ``None`` threshold there is the model's ``1 − m``)."""
    w0, T0, kind0 = PENALTY_DEFAULTS[model.name]
    w = config.penalty_weight if config.penalty_weight is not None else w0
    T = config.penalty_threshold if config.penalty_threshold is not None else (1 - model.config.m if T0 is None else T0)
    return w, T, config.penalty_kind or kind0


def constraint_term(model, x_star: torch.Tensor, kspace: torch.Tensor, op, config: TrainConfig,
                    generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The model's constraint penalty (scalar, differentiable in θ, λ) and the L estimate ``(B,)``;
    ``generator`` draws the random pairs of the ascent (default: a fixed seed)."""
    from robustkit.analysis.lipschitz import local_lipschitz, pair_ratio, penalty, slow_direction

    if model.name not in PENALTY_DEFAULTS:
        return x_star.real.new_zeros(()), None
    w, T, kind = penalty_settings(model, config)
    if model.name == "mol":
        res = local_lipschitz(model.cnn, x_star.detach(), 0.3, steps=config.lipschitz_steps, restarts=1, differentiable=True)
        return w * penalty(res.estimate, T, kind=kind).mean(), res.estimate.detach()
    x, delta = x_star.detach(), model.config.delta
    H = model.H_map(op)
    with torch.no_grad():
        # Two lower bounds of L[H_θ](x*; δ): pairs along the iteration's slowest mode (close
        # pairs, docs/maths.md §6) and a random pair anywhere in the ball B(x*, δ‖x*‖), which is what makes
        # the constraint depend on δ. By default the penalty acts on the larger, per sample.
        slow = ball = None
        if config.lipschitz_estimate in ("both", "slow"):
            direction = slow_direction(model.fixed_point_map(kspace, op), x)
            slow = local_lipschitz(H, x, delta, steps=config.lipschitz_steps, restarts=1, init=direction)
        if config.lipschitz_estimate in ("both", "ball"):
            ball = local_lipschitz(H, x, delta, steps=config.lipschitz_steps, restarts=1, generator=generator)
    # The penalised pairs (u, v, T): each is recomputed with a graph, two evaluations of H_θ per
    # pair, whatever the ascent's length.
    if slow is not None and ball is not None and config.slow_threshold is None:
        # the larger estimate per sample, against T: only it carries a gradient (that of max)
        pick = (slow.estimate >= ball.estimate).reshape(-1, *([1] * (x.ndim - 1)))
        pairs = [(torch.where(pick, slow.u, ball.u), torch.where(pick, slow.v, ball.v), T)]
    else:
        T_slow = T if config.slow_threshold is None else config.slow_threshold
        pairs = [(r.u, r.v, t) for r, t in ((ball, T), (slow, T_slow)) if r is not None]
    ratios = [pair_ratio(H, x, delta, u, v) for u, v, _ in pairs]
    term = sum(penalty(L, t, kind=kind) for L, (_, _, t) in zip(ratios, pairs))
    return w * term.mean(), torch.stack(ratios).amax(0).detach()


def _check_finite(loss: torch.Tensor, config: TrainConfig, epoch: int, out: Path) -> None:
    if not torch.isfinite(loss):
        raise NonFiniteLoss(
            f"training {config.model} diverged at epoch {epoch + 1} (loss {loss.item()}); the last good "
            f"checkpoint in {out} is kept — lower --lr or resume from it"
        )


def _warm_start(model, ref: str) -> None:
    from robustkit.models.zoo import load_model

    source, _ = load_model(ref)
    model.cnn.load_state_dict(source.cnn.state_dict())
    with torch.no_grad():
        model.lam.copy_(source.lam)


def _validate(model, dataset, device, limit: int | None) -> dict[str, float]:
    from robustkit.evaluate import evaluate

    subset = dataset if limit is None else torch.utils.data.Subset(dataset, range(min(limit, len(dataset))))
    rows = evaluate(model, subset, device)
    out = {f"val_{k}": sum(r[k] for r in rows) / len(rows) for k in ("psnr", "ssim", "nmse")}
    if model.is_deq:
        out["val_iterations"] = sum(r["iterations"] for r in rows) / len(rows)
        out["val_converged"] = sum(r["converged"] for r in rows) / len(rows)
    return out


def train(config: TrainConfig, out: str | os.PathLike, device: torch.device, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train ``config.model`` into the zoo folder ``out``; returns the final card.

    Every epoch writes ``weights.safetensors`` + ``card.json`` (zoo format), ``train_state.pt``
    (optimizer, epoch, RNG; read with ``weights_only=True``) and appends a row to ``log.csv``.
    """
    from tqdm.auto import tqdm

    from robustkit.models.registry import build_model
    from robustkit.models.zoo import read_card, save_model

    out = Path(out)
    state_path = out / "train_state.pt"
    if out.exists() and any(out.iterdir()) and not resume:
        raise RobustkitError(f"{out} already holds a model; pass --resume to continue it or choose another --out")
    if resume and not state_path.exists():
        raise RobustkitError(f"nothing to resume in {out} (no train_state.pt); drop --resume to start afresh")

    torch.manual_seed(config.seed)
    model = build_model(config.model, config.model_config).to(device)
    if config.init_from and not resume:
        _warm_start(model, config.init_from)
        model.to(device)
    # group 0: F_θ at lr; group 1: λ at lam_lr (see LAM_LR_RELATIVE)
    network = [p for n, p in model.named_parameters() if n != "lam"]
    lam_lr = lam_lr_of(model, config)
    opt = torch.optim.Adam([{"params": network, "lr": config.lr}, {"params": [model.lam], "lr": lam_lr}])
    train_set, val_set = _dataset(config, "train", vary=True), _dataset(config, "val", vary=False)

    start_epoch, elapsed = 0, 0.0
    if resume:
        from safetensors.torch import load_file

        state = torch.load(state_path, weights_only=True)
        model.load_state_dict(load_file(out / "weights.safetensors"))
        if len(state["optimizer"]["param_groups"]) != len(opt.param_groups):
            raise RobustkitError(f"{state_path} was written by an older robustkit (λ shared the CNN's learning rate); "
                                 "start a new run with --init-from instead of --resume")
        opt.load_state_dict(state["optimizer"])
        start_epoch, elapsed = int(state["epoch"]), float(state["elapsed"])
        torch.set_rng_state(state["rng"])
    command = " ".join(shlex.quote(a) for a in [Path(sys.argv[0]).name, *sys.argv[1:]])
    card: dict[str, Any] = read_card(out) if resume else {}
    card.setdefault("command", command)
    card.setdefault("history", [])

    ascent_rng = torch.Generator(device=device).manual_seed(config.seed)
    for epoch in range(start_epoch, config.epochs):
        ascent_rng.manual_seed(config.seed * 1000 + epoch)
        lr = lr_at(config, epoch)
        opt.param_groups[0]["lr"], opt.param_groups[1]["lr"] = lr, lam_lr * lr / config.lr
        t0 = time.perf_counter()
        train_set.set_epoch(epoch)
        g = torch.Generator().manual_seed(config.seed * 1000 + epoch)
        loader = torch.utils.data.DataLoader(train_set, batch_size=config.batch_size, shuffle=True, generator=g)
        model.train()
        sums: dict[str, float] = {}
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{config.epochs}", disable=not progress, leave=False)
        for batch in bar:
            batch = to_device(batch, device)
            op = operator_of(batch)
            x = model(batch["kspace"], op)
            mse = (x - batch["target"]).abs().pow(2).mean()
            # Two backward passes, gradients summed: the fixed point's graph is freed before the
            # constraint builds its own, so peak memory is the larger of the two, not their sum.
            opt.zero_grad(set_to_none=True)
            _check_finite(mse, config, epoch, out)
            mse.backward()
            term, lips = constraint_term(model, x.detach(), batch["kspace"], op, config, ascent_rng)
            loss = mse.detach() + term.detach()
            _check_finite(loss, config, epoch, out)
            if term.requires_grad:
                term.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            opt.step()
            step = {"loss": loss.item(), "mse": mse.item(), "penalty": float(term.detach())}
            if lips is not None:
                step["L"] = float(lips.max())
            if model.is_deq and model.last_stats is not None:
                step["iterations"] = float(model.last_stats.iterations.float().mean())
            for k, v in step.items():
                sums[k] = sums.get(k, 0.0) + v
            bar.set_postfix({k: f"{v:.3g}" for k, v in step.items()})
        n = max(1, len(loader))
        row = {"epoch": epoch + 1, "lr": lr, "lam": float(model.lam.detach()), **{f"train_{k}": v / n for k, v in sums.items()}}
        row.update(_validate(model, val_set, device, config.val_samples))
        elapsed += time.perf_counter() - t0
        row["elapsed_s"] = round(elapsed, 1)
        card["history"].append(row)
        card.update(
            training=asdict(config), epochs_done=epoch + 1, train_seconds=round(elapsed, 1),
            validation={k: v for k, v in row.items() if k.startswith("val_")},
            data={"name": config.data, "accel": config.accel, "mask": "random 1-D Cartesian, fastMRI centre fraction",
                  "noise": config.noise, "shape": list(train_set[0]["target"].shape[-2:])},
        )
        save_model(out, model, card)
        torch.save({"optimizer": opt.state_dict(), "epoch": epoch + 1, "elapsed": elapsed, "rng": torch.get_rng_state()}, state_path)
        _append_log(out / "log.csv", row)
        if progress:
            print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}), flush=True)
        if config.max_minutes is not None and elapsed > 60 * config.max_minutes:
            break
    return read_card(out)


def _append_log(path: Path, row: dict[str, Any]) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(row))
        if new:
            w.writeheader()
        w.writerow(row)
