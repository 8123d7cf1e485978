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

With ``adversarial = ε > 0`` every step first finds a k-space perturbation ``γ`` by a few PGD steps
in the attack's threat model ``‖γ‖ ≤ ε‖b‖`` (:func:`adversarial_kspace`) and trains on ``b + γ``
instead of ``b`` (adversarial training, Madry et al. 2018); the PGD start of each step is seeded by
its place (seed, epoch, step, rank), so a resumed run repeats an uninterrupted one.

Under ``torchrun`` (docs/distributed.md) the model is wrapped in DistributedDataParallel: a
DistributedSampler gives each of the W ranks ``batch_size`` slices of every global batch of
``W · batch_size``, gradients are averaged across ranks, validation is sharded and reduced, and
rank 0 alone writes the checkpoint, ``log.csv``, the card and the progress bar.
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from robustkit import rng
from robustkit.batch import operator_of, to_device
from robustkit.choices import LIPSCHITZ_ESTIMATES, LR_SCHEDULES, PENALTY_KINDS
from robustkit.errors import RobustkitError, check_finite_fields
from robustkit.io import make_folder


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
    adversarial: float = 0.0  # ε of adversarial training: each step trains on b + γ from PGD in ‖γ‖ ≤ ε‖b‖ (0: off)
    adversarial_steps: int = 3  # PGD steps of that inner attack
    augment: bool = False  # a new smooth phase and a random left-right flip per training sample and epoch
    init_from: str | None = None  # zoo model whose F_θ and λ warm-start this one
    model_config: dict[str, Any] = field(default_factory=dict)
    penalty_weight: float | None = None  # None: PENALTY_DEFAULTS of the model
    penalty_threshold: float | None = None  # None: PENALTY_DEFAULTS of the model
    penalty_kind: str | None = None  # None: PENALTY_DEFAULTS of the model; else one of PENALTY_KINDS
    slow_threshold: float | None = None  # MnM-MOL, estimate "both" or "all": the slow-mode estimate's own T
    lipschitz_steps: int = 5
    lipschitz_estimate: str = "all"  # MnM-MOL: which estimate(s) of L[H_θ] the penalty acts on (LIPSCHITZ_ESTIMATES)
    max_minutes: float | None = None  # wall-clock budget of this call, checked after every step (stops mid-epoch, resumable)
    val_samples: int | None = None
    grad_clip: float = 1.0
    gate: bool = True  # DEQ models: end with the convergence gate (robustkit.analysis.gate); a failure raises GateFailed
    gate_threshold: float | None = None  # the gate's bound on L; None: the model's 1 − m

    def __post_init__(self) -> None:
        # names are checked once, here, so that training never starts with one it cannot use
        check_finite_fields(self, option_names=True)
        if self.lr_schedule not in LR_SCHEDULES:
            raise RobustkitError(f"unknown lr schedule {self.lr_schedule!r}; choose one of {LR_SCHEDULES}")
        if self.lipschitz_estimate not in LIPSCHITZ_ESTIMATES:
            raise RobustkitError(f"unknown Lipschitz estimate {self.lipschitz_estimate!r}; choose one of {LIPSCHITZ_ESTIMATES}")
        if self.penalty_kind is not None and self.penalty_kind not in PENALTY_KINDS:
            raise RobustkitError(f"unknown penalty kind {self.penalty_kind!r}; choose one of {PENALTY_KINDS}")
        if not self.adversarial >= 0 or self.adversarial_steps < 1:
            raise RobustkitError(f"adversarial training needs ε ≥ 0 and ≥ 1 PGD step, got ε = {self.adversarial}, "
                                 f"{self.adversarial_steps} steps; see 'robustkit train --help'")
        if self.adversarial > 1:
            from robustkit.errors import warn

            warn(f"--adversarial {self.adversarial:g} trains against perturbations of {100 * self.adversarial:g} % of ‖b‖ "
                 "(ε is relative, as in 'robustkit attack --eps': 0.02 is 2 %)")
        if self.slow_threshold is not None and (self.model != "mnmmol" or self.lipschitz_estimate not in ("both", "all")):
            raise RobustkitError("a slow-mode threshold needs --model mnmmol and --lipschitz-estimate both or all")


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
    from robustkit.data.evaluation import data_path
    from robustkit.data.prepared import PreparedDataset, describe_splits, split_counts
    from robustkit.physics.masks import MaskSpec

    path = data_path(config.data)
    counts = split_counts(path)
    if counts.get(split, 0) == 0:
        raise RobustkitError(f"{describe_splits(path, counts)}; training needs a 'train' and a 'val' "
                             f"split, and this file has no {split!r} slices: prepare the file with them (robustkit data prepare train/a.h5 val/b.h5 --out FILE; "
                             "docs/data.md)")
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
                    generator: torch.Generator | None = None,
                    state: dict[str, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The model's constraint penalty (scalar, differentiable in θ, λ) and the L estimate ``(B,)``;
    ``generator`` draws the random pairs of the ascent (default: a fixed seed).

    ``state``: kept by the caller between steps. The ``top`` estimate stores its singular vector
    there under ``"top"`` and starts the next step's Lanczos process from it (the top direction of
    ``J_H`` moves little from one step to the next, so a few steps per training step track it, as
    the power iteration of spectral normalisation does)."""
    from robustkit.analysis.lipschitz import jacobian_spectral_norm, local_lipschitz, pair_ratio, penalty, slow_direction

    if model.name not in PENALTY_DEFAULTS:
        return x_star.real.new_zeros(()), None
    w, T, kind = penalty_settings(model, config)
    if model.name == "mol":
        res = local_lipschitz(model.cnn, x_star.detach(), 0.3, steps=config.lipschitz_steps, restarts=1, differentiable=True)
        return w * penalty(res.estimate, T, kind=kind).mean(), res.estimate.detach()
    x, delta, which = x_star.detach(), model.config.delta, config.lipschitz_estimate
    H = model.H_map(op)
    found: dict[str, Any] = {}
    with torch.no_grad():
        # Lower bounds of L[H_θ](x*; δ) (docs/maths.md §6): pairs along the iteration's slowest mode
        # (close pairs), pairs along the top right singular vector of J_H(x*) (close pairs), and a
        # random pair anywhere in the ball B(x*, δ‖x*‖), which is what makes the constraint depend
        # on δ. "both" penalises the larger of ball and slow, "all" the largest of the three.
        if which in ("both", "all", "slow"):
            direction = slow_direction(model.fixed_point_map(kspace, op), x)
            found["slow"] = local_lipschitz(H, x, delta, steps=config.lipschitz_steps, restarts=1, init=direction)
        if which in ("all", "top"):
            start = None if state is None else state.get("top")
            start = start if start is not None and start.shape == x.shape else None
            top = jacobian_spectral_norm(H, x, iters=max(config.lipschitz_steps, 2), init=start, generator=generator)
            if state is not None:
                state["top"] = top.vector
            found["top"] = local_lipschitz(H, x, delta, steps=config.lipschitz_steps, restarts=1, init=top.vector,
                                           pair_distance=0.01)
        if which in ("both", "all", "ball"):
            found["ball"] = local_lipschitz(H, x, delta, steps=config.lipschitz_steps, restarts=1, generator=generator)
    # The penalised pairs (u, v, T): each is recomputed with a graph, two evaluations of H_θ per
    # pair, whatever the ascent's length.
    results = list(found.values())
    if len(results) > 1 and config.slow_threshold is None:
        # the larger estimate per sample, against T: only it carries a gradient (that of max)
        pick = torch.stack([r.estimate for r in results]).argmax(0)
        rows = torch.arange(x.shape[0], device=x.device)
        pairs = [(torch.stack([r.u for r in results])[pick, rows], torch.stack([r.v for r in results])[pick, rows], T)]
    else:
        T_slow = T if config.slow_threshold is None else config.slow_threshold
        pairs = [(r.u, r.v, T_slow if name == "slow" else T) for name, r in found.items()]
    ratios = [pair_ratio(H, x, delta, u, v) for u, v, _ in pairs]
    term = sum(penalty(L, t, kind=kind) for L, (_, _, t) in zip(ratios, pairs))
    return w * term.mean(), torch.stack(ratios).amax(0).detach()


def _check_finite(loss: torch.Tensor, config: TrainConfig, epoch: int, out: Path) -> None:
    if not torch.isfinite(loss):
        raise NonFiniteLoss(
            f"training {config.model} diverged at epoch {epoch + 1} (loss {loss.item()}); the last good "
            f"checkpoint in {out} is kept — lower --lr or resume from it"
        )


def _shown(v: float) -> float:
    """An epoch row's number on the terminal: 4 decimals, or 3 significant digits below 1e-3 (a
    learning rate of 1e-5 is not 0.0)."""
    return round(v, 4) if v == 0 or abs(v) >= 1e-3 else float(f"{v:.3g}")


def warm_start(model, ref: str) -> None:
    """Copy F_θ and λ of the zoo model ``ref`` (e.g. a trained MoDL) into ``model``.

    A model with an anchor network (MnM-MOL with ``leak_to = "modl"``) also takes its anchor from
    ``ref``: the whole of ``ref`` when it is a MoDL (whose ``K``, CG steps and μ must be the
    anchor's), else ``ref``'s own anchor."""
    from robustkit.errors import warn
    from robustkit.models.mismatch import has_modl_anchor
    from robustkit.models.zoo import load_model

    source, card = load_model(ref)
    try:
        model.cnn.load_state_dict(source.cnn.state_dict())
    except RuntimeError:
        have = {k: getattr(source.config, k, None) for k in ("width", "depth")}
        raise RobustkitError(f"--init-from {ref} has F_θ of width {have['width']}, depth {have['depth']}, unlike this "
                             f"model's; pass --set width={have['width']} --set depth={have['depth']}") from None
    with torch.no_grad():
        model.lam.copy_(source.lam)
    if isinstance(card.get("stopped"), dict):
        where = card["stopped"]
        warn(f"--init-from {ref} was stopped by --max-minutes (epoch {where.get('epoch')}, step {where.get('step')} of "
             f"{where.get('steps')}) before it finished its epochs: its weights are taken as they are")
    anchor = getattr(model, "anchor", None)
    if anchor is None:
        if has_modl_anchor(card):
            warn(f"--init-from {ref} leaks towards a frozen MoDL, and this model has no anchor: the MoDL is left behind "
                 "(pass --set leak_to=modl --set leak=0.04 to keep it)")
        return
    if getattr(source, "anchor", None) is not None:
        anchor.load_state_dict(source.anchor.state_dict())
    elif source.name == "modl":
        want = {"K": anchor.config.K, "cg_iters": anchor.config.cg_iters, "mu": anchor.config.mu}
        have = {k: getattr(source.config, k) for k in want}
        if have != want:
            raise RobustkitError(f"{ref} is a MoDL with {have}, the anchor of leak_to=modl expects {want}; "
                                 "pass --set anchor_K=…, anchor_cg_iters=…, anchor_mu=… to match it")
        anchor.load_state_dict(source.state_dict())
    else:
        raise RobustkitError(f"leak_to=modl takes its anchor from --init-from, but {ref} is a {source.name} without one; "
                             "warm-start from a trained MoDL")


def _validate(model, dataset, device, limit: int | None) -> dict[str, float]:
    """Mean validation metrics over the first ``limit`` slices; under torchrun each rank scores
    every W-th slice and the rows are gathered, so every rank returns the single-process means."""
    from robustkit.distributed import all_gather_object, dist_context
    from robustkit.evaluate import evaluate

    ctx = dist_context()
    n = len(dataset) if limit is None else min(limit, len(dataset))
    mine = evaluate(model, torch.utils.data.Subset(dataset, range(ctx.rank, n, ctx.world_size)), device) \
        if ctx.rank < n else []
    rows = sorted((r for part in all_gather_object(mine) for r in part), key=lambda r: r["index"])
    out = {f"val_{k}": sum(r[k] for r in rows) / len(rows) for k in ("psnr", "ssim", "nmse")}
    if model.is_deq:
        out["val_iterations"] = sum(r["iterations"] for r in rows) / len(rows)
        out["val_converged"] = sum(r["converged"] for r in rows) / len(rows)
    return out


#: seed offset of rank r's ascent generator (``seed · 1000 + epoch + r · stride``): each rank draws
#: its own random pairs for the ball estimate, rank 0 those of a single process.
ASCENT_RANK_STRIDE = 1_000_003


def check_world_size(n: int, world_size: int, data: str) -> None:
    """Refuse more ranks than training slices (a rank would only see padding)."""
    if world_size > n:
        raise RobustkitError(f"{world_size} ranks but the training set of {data} has {n} slice(s), fewer than the ranks; "
                             f"start at most {n} processes (torchrun --nproc_per_node) or use a larger --data")


def _check_same_world(card: dict[str, Any], world_size: int, out: Path) -> None:
    """A resume keeps the global batch: the same number of processes as the run it continues."""
    stored = int((card.get("distributed") or {}).get("world_size", 1))
    if stored != world_size:
        raise RobustkitError(f"{out} was trained by {stored} process(es), this resume runs {world_size}; resume it with "
                             f"{stored} in all (torchrun --nnodes × --nproc_per_node) so that the global batch stays the same")


class _Step(torch.nn.Module):
    """The two passes of a training step as one module's ``forward(what, *args)``, ``what`` =
    ``"reconstruct"`` (``model(kspace, op)``) or ``"constraint"`` (:func:`constraint_term`), so that
    DistributedDataParallel sees the constraint's evaluations of F_θ as well."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.state: dict[str, torch.Tensor] = {}  # constraint_term's memory between steps (the top vector)

    def forward(self, what: str, *args):
        return self.model(*args) if what == "reconstruct" else constraint_term(self.model, *args, state=self.state)


def _step_core(step_model: torch.nn.Module) -> _Step:
    """The :class:`_Step` inside ``step_model`` (itself, or the module DistributedDataParallel wraps)."""
    return getattr(step_model, "module", step_model)


def _wrap(model, ctx) -> torch.nn.Module:
    """:class:`_Step` of ``model``, in DistributedDataParallel when there are several ranks.
    ``find_unused_parameters``: MOL's penalty acts on F_θ alone (λ unused in that pass)."""
    step = _Step(model)
    if not ctx.distributed:
        return step
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(step, find_unused_parameters=model.name == "mol")


def _step(model, step_model: torch.nn.Module, batch: dict[str, Any], config: TrainConfig, opt: torch.optim.Optimizer,
          ascent_rng: torch.Generator, check, pgd_seed: int = 0) -> dict[str, float]:
    """One optimisation step on this rank's ``batch``; returns the step's ``loss``, ``mse``,
    ``penalty`` (means over the ranks), ``L`` (their max) and ``iterations`` (mean), which
    ``check`` sees before anything is updated. With ``config.adversarial > 0`` the step trains on
    :func:`adversarial_kspace` of the batch, its PGD start drawn from ``pgd_seed``.

    Two backward passes, gradients summed: the fixed point's graph is freed before the constraint
    builds its own, so peak memory is the larger of the two, not their sum. Under DDP the first
    pass accumulates locally (``no_sync``) and the second's backward all-reduces the sum, once.
    """
    import contextlib

    from torch.nn.parallel import DistributedDataParallel

    from robustkit.distributed import all_reduce

    op = operator_of(batch)
    constrained = model.name in PENALTY_DEFAULTS
    kspace = batch["kspace"]
    if config.adversarial > 0:
        kspace = adversarial_kspace(model, kspace, batch["target"], op, config.adversarial, config.adversarial_steps,
                                    seed=pgd_seed)
    local = step_model.no_sync() if constrained and isinstance(step_model, DistributedDataParallel) else contextlib.nullcontext()
    opt.zero_grad(set_to_none=True)
    with local:
        x = step_model("reconstruct", kspace, op)
        mse = (x - batch["target"]).abs().pow(2).mean()
        mse_mean = all_reduce(mse.detach().clone())  # every rank refuses a non-finite loss alike
        check(mse_mean)
        mse.backward()
    if constrained:
        term, lips = step_model("constraint", x.detach(), kspace, op, config, ascent_rng)
    else:
        term, lips = mse.new_zeros(()), None
    iterations = model.last_stats.iterations.float().mean() if model.is_deq and model.last_stats is not None else None
    means = all_reduce(torch.stack([term.detach(), mse.new_zeros(()) if iterations is None else iterations.to(mse)]))
    loss = mse_mean + means[0]
    check(loss)
    if term.requires_grad:
        term.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
    opt.step()
    step = {"loss": loss.item(), "mse": mse_mean.item(), "penalty": float(means[0])}
    if lips is not None:
        step["L"] = float(all_reduce(lips.max().detach().clone(), op="max"))
    if iterations is not None:
        step["iterations"] = float(means[1])
    return step


def adversarial_kspace(model, kspace: torch.Tensor, target: torch.Tensor, op, eps: float, steps: int, seed: int) -> torch.Tensor:
    """The measured k-space of an adversarial training step (Madry et al. 2018), ``(B, C, H, W)``.

    ``b + γ`` with ``γ`` from ``steps`` PGD-ℓ2 steps (:class:`~robustkit.attacks.pgd.KSpacePGD`, random
    start, step ``2.5/steps`` of the radius) that maximise the relative training error
    ``‖f(b + γ) − x_gt‖² / ‖x_gt‖²`` over the k-space ball ``{γ = M ⊙ γ, ‖γ_i‖ ≤ ε‖b_i‖}``
    of docs/maths.md §7. The model stays in training mode (a DEQ solves at its training tolerance)
    and no parameter gradient is kept: only ``∂ℓ/∂γ`` is taken. Detached: the step then trains on it as
    on any measured k-space.
    """
    from robustkit.attacks.pgd import KSpacePGD
    from robustkit.attacks.target import BoundReconstructor

    attack = KSpacePGD(BoundReconstructor(model, op), op.mask, eps, steps=steps, seed=seed)
    attack.set_model_training_mode(model_training=True)
    return attack(kspace, target).detach()


def adversarial_seed(seed: int, epoch: int, step: int, rank: int) -> int:
    """Seed of the PGD start of step ``step`` of epoch ``epoch`` on rank ``rank``: a function of
    where the step is, not of a generator's state, so a run resumed mid-epoch draws what an
    uninterrupted one draws, and each rank starts from its own points."""
    return (seed * 1000 + epoch) * 100_003 + step + ASCENT_RANK_STRIDE * rank


#: training settings a ``--resume`` may change; any other difference is refused (a different run).
RESUMABLE = ("epochs", "max_minutes", "val_samples")

#: the clock of the ``max_minutes`` budget (a module attribute so tests can drive it).
_now = time.perf_counter


def _holds(out: Path) -> str:
    """What a non-empty ``--out`` folder holds, for the refusal: a model, a run, or other files."""
    if (out / "card.json").exists():
        return "it holds a model"
    if (out / "train_state.pt").exists() or (out / "recipe.json").exists():
        return "it holds a training run"
    names = sorted(p.name for p in out.iterdir())
    return "it holds " + ", ".join(names[:3]) + (", …" if len(names) > 3 else "")


def refuse_not_empty(out: Path) -> None:
    """A one-line refusal of a non-empty ``--out`` (without ``--resume``), saying what it holds."""
    if out.exists() and any(out.iterdir()):
        raise RobustkitError(f"{out} is not empty ({_holds(out)}); pass --resume to continue a run there or choose another --out")


def _check_out(out: Path, resume: bool) -> None:
    if out.exists() and not out.is_dir():
        raise RobustkitError(f"--out {out} is a file, not a folder; choose a folder name for the model")
    if not resume:
        refuse_not_empty(out)
    if resume and not (out / "train_state.pt").exists():
        raise RobustkitError(f"nothing to resume in {out} (no train_state.pt); drop --resume to start afresh")


def check_same_run(card: dict[str, Any], config: TrainConfig, out: Path) -> None:
    """Refuse to resume the run in ``out`` (its ``card``) with a different model or training setting."""
    if card.get("model") != config.model:
        raise RobustkitError(f"{out} holds a {card.get('model')} run, not {config.model}; resume it with --model "
                             f"{card.get('model')} or train {config.model} into another --out")
    stored = card.get("training")
    if not isinstance(stored, dict):
        raise RobustkitError(f"{out}/card.json records no training settings; it cannot be resumed — train into another --out")
    defaults = asdict(TrainConfig(model=config.model))
    for key, value in asdict(config).items():
        if key not in RESUMABLE and stored.get(key, defaults[key]) != value:
            raise RobustkitError(f"--resume would change {key} from {stored.get(key, defaults[key])!r} to {value!r}; a resumed "
                                 f"run keeps its model and training settings — drop that option or train into another --out")


def _memories_ok(memories: Any) -> bool:
    """``constraint_states`` of a checkpoint: absent (older runs), or one dict of tensors per rank."""
    return memories is None or (isinstance(memories, list) and all(
        isinstance(m, dict) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in m.items())
        for m in memories))


def _load_state(out: Path) -> dict[str, Any]:
    """``train_state.pt`` read with ``weights_only=True`` (no code runs) and checked field by field."""
    path = out / "train_state.pt"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pickle-protocol notices of the weights-only unpickler
            state = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # any unreadable or malicious file: one line, nothing changed
        raise RobustkitError(f"{path} is not a readable training checkpoint ({type(exc).__name__}); "
                             "restore it or train into another --out") from None
    fields_ok = isinstance(state, dict) and isinstance(state.get("optimizer"), dict) and isinstance(state.get("epoch"), int) \
        and isinstance(state.get("elapsed"), (int, float)) and isinstance(state.get("rng"), torch.Tensor) \
        and _memories_ok(state.get("constraint_states"))
    if not fields_ok:
        raise RobustkitError(f"{path} lacks the fields of a robustkit training checkpoint; restore it or train into another --out")
    return state


def _load_weights(model, out: Path) -> None:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        model.load_state_dict(load_file(out / "weights.safetensors"))
    except (OSError, SafetensorError, RuntimeError) as exc:
        raise RobustkitError(f"{out}/weights.safetensors cannot be resumed ({str(exc).splitlines()[0]}); "
                             "restore it or train into another --out") from None


def train(config: TrainConfig, out: str | os.PathLike, device: torch.device, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train ``config.model`` into the zoo folder ``out``; returns the final card.

    Every epoch writes ``weights.safetensors`` + ``card.json`` (zoo format), ``train_state.pt``
    (optimizer, epoch, step, RNG; read with ``weights_only=True``) and appends a row to ``log.csv``.
    ``config.max_minutes`` (the budget of this call) is checked after every step: past it, the run
    saves a checkpoint in the middle of the epoch (card ``stopped``) that ``resume=True`` continues exactly. A DEQ model then
    meets its convergence gate (:mod:`robustkit.analysis.gate`, docs/training.md) on the
    validation slices; the card records it and a failure raises :class:`GateFailed` (exit 3).

    Under ``torchrun`` (:func:`robustkit.distributed.dist_context`) each rank trains on its share of
    every global batch of ``W · config.batch_size`` slices on its own device (``device`` is then the
    rank's), DDP averages the gradients, and rank 0 alone writes; the card's ``distributed`` records
    ``world_size`` and ``global_batch``, and a resume must use the same world size.
    """
    from tqdm.auto import tqdm

    from robustkit.distributed import all_gather_object, barrier, command_line, dist_context
    from robustkit.locations import refuse_package_write
    from robustkit.models.registry import build_model
    from robustkit.models.zoo import read_card, save_model

    device = torch.device(device)
    ctx = dist_context(device.type)
    if ctx.distributed:
        device = ctx.device
    out = refuse_package_write(out)
    state_path = out / "train_state.pt"
    _check_out(out, resume)
    card: dict[str, Any] = {}
    if resume:
        card = read_card(out)
        check_same_run(card, config, out)
        _check_same_world(card, ctx.world_size, out)
        state = _load_state(out)

    torch.manual_seed(config.seed)
    model = build_model(config.model, config.model_config).to(device)
    if config.init_from and not resume:
        warm_start(model, config.init_from)
        model.to(device)
    elif getattr(model, "anchor", None) is not None and not resume:
        raise RobustkitError("leak_to=modl pulls towards a trained MoDL's image: pass that MoDL as --init-from")
    # group 0: F_θ at lr; group 1: λ at lam_lr (see LAM_LR_RELATIVE); frozen parts (an anchor) in neither
    network = [p for n, p in model.named_parameters() if n != "lam" and p.requires_grad]
    lam_lr = lam_lr_of(model, config)
    opt = torch.optim.Adam([{"params": network, "lr": config.lr}, {"params": [model.lam], "lr": lam_lr}])
    train_set, val_set = _dataset(config, "train", vary=True), _dataset(config, "val", vary=False)
    check_world_size(len(train_set), ctx.world_size, config.data)
    step_model = _wrap(model, ctx)
    barrier()  # every rank has checked --out before rank 0 writes into it

    start_epoch, start_step, elapsed, sums = 0, 0, 0.0, {}
    ascent_rng = rng.generator(config.seed)
    if resume:
        _load_weights(model, out)
        if len(state["optimizer"].get("param_groups", [])) != len(opt.param_groups):
            raise RobustkitError(f"{state_path} was written by an older robustkit (λ shared the CNN's learning rate); "
                                 "start a new run with --init-from instead of --resume")
        opt.load_state_dict(state["optimizer"])
        start_epoch, elapsed = state["epoch"], float(state["elapsed"])
        start_step, sums = int(state.get("step", 0)), dict(state.get("sums", {}))
        torch.set_rng_state(state["rng"])
        ascent_states = state.get("ascent_rngs") or [state.get("ascent_rng")]
        if ascent_states[min(ctx.rank, len(ascent_states) - 1)] is not None:
            ascent_rng.set_state(ascent_states[min(ctx.rank, len(ascent_states) - 1)])
        memories = state.get("constraint_states") or [{}]
        _step_core(step_model).state.update(
            {k: v.to(device) for k, v in memories[min(ctx.rank, len(memories) - 1)].items()})
    elif ctx.is_main:
        make_folder(out)
    command = command_line()
    card.setdefault("command", command)
    card.setdefault("history", [])
    if ctx.distributed:
        card["distributed"] = {"world_size": ctx.world_size, "backend": ctx.backend, "global_batch": ctx.world_size * config.batch_size}

    def checkpoint(epoch: int, step: int) -> None:
        # every rank's ascent generator, so that a resume in the middle of an epoch continues each rank exactly
        ascent_states = all_gather_object(ascent_rng.get_state().cpu())
        # and every rank's constraint memory (the top singular vector the next step starts from)
        memories = all_gather_object({k: v.detach().cpu() for k, v in _step_core(step_model).state.items()})
        if ctx.is_main:
            torch.save({"optimizer": opt.state_dict(), "epoch": epoch, "step": step, "sums": sums, "elapsed": elapsed,
                        "rng": torch.get_rng_state(), "ascent_rng": ascent_states[0], "ascent_rngs": ascent_states,
                        "constraint_states": memories}, state_path)

    def save(card: dict[str, Any]) -> None:
        if ctx.is_main:
            save_model(out, model, card)

    stopped, elapsed0 = False, elapsed  # the budget counts this call's time only
    for epoch in range(start_epoch, config.epochs):
        if start_step == 0:
            # rank r > 0 draws its own ascent pairs (rank 0 draws what a single process does)
            ascent_rng.manual_seed(config.seed * 1000 + epoch + ASCENT_RANK_STRIDE * ctx.rank)
            sums = {}
        lr = lr_at(config, epoch)
        opt.param_groups[0]["lr"], opt.param_groups[1]["lr"] = lr, lam_lr * lr / config.lr
        t0 = _now()
        train_set.set_epoch(epoch)
        # the epoch's order is randperm(n) seeded seed·1000 + epoch (a single process's too); rank r
        # takes positions r, r + W, …, so its k-th batch is its share of the k-th global batch
        sampler = torch.utils.data.DistributedSampler(train_set, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True,
                                                      seed=config.seed * 1000, drop_last=False)
        sampler.set_epoch(epoch)
        order = list(sampler)
        batches = [order[i:i + config.batch_size] for i in range(0, len(order), config.batch_size)]
        loader = torch.utils.data.DataLoader(train_set, batch_sampler=batches[start_step:])  # a resumed epoch skips what was done
        model.train()
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{config.epochs}", disable=not (progress and ctx.is_main), leave=False)
        for i, batch in enumerate(bar, start=start_step):
            batch = to_device(batch, device)
            step = _step(model, step_model, batch, config, opt, ascent_rng, lambda loss: _check_finite(loss, config, epoch, out),
                         adversarial_seed(config.seed, epoch, i, ctx.rank))
            for k, v in step.items():
                sums[k] = sums.get(k, 0.0) + v
            bar.set_postfix({k: f"{v:.3g}" for k, v in step.items()})
            over = config.max_minutes is not None and elapsed + _now() - t0 - elapsed0 > 60 * config.max_minutes
            if config.max_minutes is not None and ctx.distributed:  # rank 0's clock decides for all ranks
                over = bool(all_gather_object(over)[0])
            if over and i + 1 < len(batches):
                # the budget is spent in the middle of the epoch: keep this step and stop
                elapsed += _now() - t0
                card.pop("gate", None)  # the weights change: an earlier gate no longer applies
                card.update(training=asdict(config), train_seconds=round(elapsed, 1),
                            stopped={"reason": "max_minutes", "epoch": epoch + 1, "step": i + 1, "steps": len(batches)})
                save(card)
                checkpoint(epoch, i + 1)
                stopped = True
                break
        if stopped:
            break
        start_step = 0
        n = max(1, len(batches))
        row = {"epoch": epoch + 1, "lr": lr, "lam": float(model.lam.detach()), **{f"train_{k}": v / n for k, v in sums.items()}}
        row.update(_validate(model, val_set, device, config.val_samples))
        elapsed += _now() - t0
        row["elapsed_s"] = round(elapsed, 1)
        card["history"].append(row)
        card.pop("stopped", None)
        card.update(
            training=asdict(config), epochs_done=epoch + 1, train_seconds=round(elapsed, 1),
            validation={k: v for k, v in row.items() if k.startswith("val_")},
            data={"name": config.data, "accel": config.accel, "mask": "random 1-D Cartesian, fastMRI centre fraction",
                  "noise": config.noise, "adversarial": config.adversarial, "shape": list(train_set[0]["target"].shape[-2:])},
        )
        save(card)
        checkpoint(epoch + 1, 0)
        if ctx.is_main:
            _append_log(out / "log.csv", row)
        if progress and ctx.is_main:
            print(json.dumps({k: (_shown(v) if isinstance(v, float) else v) for k, v in row.items()}), flush=True)
        if config.max_minutes is not None and elapsed - elapsed0 > 60 * config.max_minutes and epoch + 1 < config.epochs:
            card.pop("gate", None)
            card.update(stopped={"reason": "max_minutes", "epoch": epoch + 2, "step": 0, "steps": len(batches)})
            save(card)
            break
    if model.is_deq and config.gate and not stopped:  # a stopped run is gated when it finishes, not past its budget
        gate(model, card, out, val_set, device, config)
    barrier()  # the other ranks read what rank 0 wrote
    return read_card(out)


def gate(model, card: dict[str, Any], out: Path, val_set, device, config: TrainConfig, where: str | None = None) -> dict[str, Any]:
    """Evaluate the convergence gate on ``val_set``, record it on the card in ``out`` and raise
    :class:`~robustkit.errors.GateFailed` naming the failed check when it does not pass."""
    from robustkit.analysis.gate import GateConfig, convergence_gate
    from robustkit.errors import GateFailed
    from robustkit.models.zoo import save_model

    from robustkit.distributed import barrier, is_main

    # every rank evaluates the gate and takes rank 0's verdict (convergence_gate), so all of them
    # agree on the exit; rank 0 writes
    result = convergence_gate(model, val_set, device, GateConfig(limit=config.val_samples, seed=config.seed,
                                                                  threshold=config.gate_threshold))
    card["gate"] = result.to_dict()
    if is_main():
        save_model(out, model, card)
    barrier()
    if not result.passed:
        raise GateFailed(result.failure(where or f"after training {config.model} into {out}") + "; the model is kept there, marked failed",
                         check=result.failed_check)
    return card["gate"]


def _append_log(path: Path, row: dict[str, Any]) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(row))
        if new:
            w.writeheader()
        w.writerow(row)
