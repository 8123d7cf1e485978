"""Reconstruct a dataset and score it per slice (PSNR, SSIM, NMSE; DEQ solver statistics)."""

from __future__ import annotations

import os
from typing import Any

import torch

from robustkit.batch import operator_of, to_device
from robustkit.metrics import nmse, psnr, ssim
from robustkit.physics.sense import sense_init


def score(x: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-slice metrics of ``x`` against ``target``, each ``(B,)``."""
    return {"psnr": psnr(x, target), "ssim": ssim(x, target), "nmse": nmse(x, target)}


def evaluate(model, dataset, device: torch.device | str = "cpu", batch_size: int = 4,
             rate: bool = False) -> list[dict[str, Any]]:
    """One row per slice: ``index``, ``psnr``, ``ssim``, ``nmse`` and, for DEQ models,
    ``iterations``, ``residual``, ``converged``. ``model=None`` scores the SENSE init.

    ``rate=True`` adds, for DEQ models, the observed contraction rate ``rate`` of the plain
    iteration ``x⁺ = H_θ(x) + Aᴴb`` near the fixed point
    (:func:`~robustkit.analysis.contraction.observed_contraction_rate`) and ``rate_gt_T``: whether it
    exceeds ``T = 1 − m``. Since ``rate ≤ ‖J_H‖₂ ≤ L[H_θ]``, a rate above ``T`` contradicts the
    certificate ``L[H_θ] ≤ 1 − m`` on that slice."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    rows: list[dict[str, Any]] = []
    if model is not None:
        model.eval()
    for batch in loader:
        batch = to_device(batch, device)
        op = operator_of(batch)
        with torch.no_grad():
            x = sense_init(op, batch["kspace"]) if model is None else model(batch["kspace"], op)
        metrics = score(x, batch["target"])
        stats = getattr(model, "last_stats", None) if model is not None and model.is_deq else None
        rates = None
        if stats is not None and rate and getattr(model, "has_H", hasattr(model, "H_map")):
            from robustkit.analysis.contraction import observed_contraction_rate, plain_map

            rates = observed_contraction_rate(plain_map(model, batch["kspace"], op), x).rate
            m = getattr(model, "m", None)  # a ModelAdapter's m, else the built-in config's
            threshold = 1 - float(m if m is not None else getattr(getattr(model, "config", None), "m", 0.02))
        for j in range(x.shape[0]):
            row = {"index": int(batch["index"][j]), **{k: float(v[j]) for k, v in metrics.items()}}
            if stats is not None:
                row.update(
                    iterations=int(stats.iterations[j]),
                    residual=float(stats.residual[j]),
                    converged=bool(stats.converged[j]),
                )
            if rates is not None:
                row.update(rate=float(rates[j]), rate_gt_T=bool(rates[j] > threshold))
            rows.append(row)
    return rows


def sense_report(
    path: str | os.PathLike,
    accels: tuple[float, ...] = (4.0, 6.0),
    noises: tuple[float, ...] = (0.0, 0.01),
    split: str = "test",
    seed: int = 0,
):
    """SENSE init (docs/maths.md §1: 50 CG its, λ₀ = 100) scored per slice on ``split``, for 1-D random
    masks (fastMRI centre fraction) at each acceleration and relative noise level.

    Returns a tidy ``pandas.DataFrame``: one row per slice × accel × noise, with ``psnr``,
    ``ssim``, ``nmse``.
    """
    import pandas as pd

    from robustkit.data.prepared import PreparedDataset
    from robustkit.physics.masks import MaskSpec

    rows = []
    for accel in accels:
        for noise in noises:
            dataset = PreparedDataset(path, split=split, mask=MaskSpec(accel=accel), seed=seed, noise=noise)
            for row in evaluate(None, dataset):
                meta = dataset.samples[row["index"]].meta
                rows.append({"accel": accel, "noise": noise, "slice": meta.get("slice"), **row})
    return pd.DataFrame(rows)


def format_sense_report(frame) -> str:
    """``mean ± std (n)`` of PSNR and SSIM per accel × noise, one line each."""
    lines = []
    for (accel, noise), g in frame.groupby(["accel", "noise"], sort=True):
        lines.append(
            f"  SENSE {accel:g}x noise {noise:g}: PSNR {g.psnr.mean():.2f} ± {g.psnr.std():.2f} dB, "
            f"SSIM {g.ssim.mean():.3f} ± {g.ssim.std():.3f} (n = {len(g)})"
        )
    return "\n".join(lines)
