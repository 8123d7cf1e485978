"""Does a Frobenius (Hutchinson) penalty on ``J_H(x*)`` remove the neutral directions? A dev experiment.

Fine-tunes ``F_θ`` of an MnM-MOL zoo model on the built-in training slices (augmented, batch 1,
Adam, gradients clipped at 1) for ``--minutes`` with the loss

    ‖x* − x_true‖² / mse₀  +  w · ‖(J_Hᵀ(x*))ᵏ e‖² / ‖e‖²,    e = (I − AᴴA) n,  n ~ N(0, I),

(``mse₀`` the first step's MSE; ``k`` = ``--power``). For ``k = 1`` the second term is a one-probe
Hutchinson estimate of the mean squared gain ``‖J_H‖_F²/n`` on directions weighted towards the
null space of ``A``; for larger ``k`` it weighs each singular value as ``σ²ᵏ`` (for a normal
``J_H``), so it counts the directions with ``σ ≈ 1`` and hardly any other: a smooth stand-in for
"how much of the space is neutral". Differentiated with ``create_graph``.

Before and after, it prints for the test slices of the built-in data and the slices of ``--knees``
(a file from ``scripts/knees_dev.py``) PSNR / iterations of the solve from SENSE (``!``: not
converged) and, for the first two slices, the Lanczos lower bound of ``‖J_H(x*)‖₂``.

    python scripts/frobenius_finetune.py --weight 10 --lr 1e-4 --minutes 8 --knees knees120.h5
    python scripts/frobenius_finetune.py --power 8 --weight 100 --lr 1e-4 --minutes 8 --knees knees120.h5

Nothing is written but the fine-tuned weights (``--out``, a ``.pt`` state dict of ``F_θ``) and the
per-step log next to them; docs/convergence.md reports a run. Not a test, not a training option.
"""

from __future__ import annotations

import argparse
import time

import torch


def finetune(model, minutes: float, weight: float, lr: float, power: int, log) -> int:
    from robustkit.batch import operator_of
    from robustkit.training import TrainConfig, _dataset

    torch.manual_seed(0)
    model.train()
    dataset = _dataset(TrainConfig(model="mnmmol", accel=4, augment=True), "train", vary=True)
    opt = torch.optim.Adam(model.cnn.parameters(), lr=lr)
    start, step, mse0 = time.time(), 0, None
    while time.time() - start < minutes * 60:
        for i in torch.randperm(len(dataset)).tolist():
            if time.time() - start > minutes * 60:
                break
            batch = {k: v[None] for k, v in dataset[i].items()}
            op = operator_of(batch)
            x = model(batch["kspace"], op)
            stats = model.last_stats
            mse = (x - batch["target"]).abs().pow(2).mean()
            mse0 = mse.item() if mse0 is None else mse0
            xr = x.detach().requires_grad_(True)
            e = torch.randn_like(xr)
            e = e - op.normal(e)
            y, g = model.H(xr, op), e
            for _ in range(power):
                (g,) = torch.autograd.grad(y, xr, g, create_graph=True)
            gain = g.abs().pow(2).sum() / e.abs().pow(2).sum()
            loss = mse / mse0 + weight * gain
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.cnn.parameters(), 1.0)
            opt.step()
            step += 1
            print(f"step {step} t={time.time() - start:.0f}s mse/mse0={mse.item() / mse0:.3f} gain={gain.item():.4f} "
                  f"its={int(stats.iterations[0])} converged={bool(stats.converged[0])}", file=log, flush=True)
    return step


def measure(model, knees: str | None, samples: int) -> None:
    from robustkit.analysis.lipschitz import jacobian_spectral_norm
    from robustkit.batch import operator_of
    from robustkit.data.prepared import PreparedDataset
    from robustkit.metrics import psnr
    from robustkit.physics.masks import MaskSpec
    from robustkit.training import TrainConfig, _dataset

    model.eval()
    sets = [("built-in test, 4x", _dataset(TrainConfig(model="mnmmol", accel=4), "test", vary=False))]
    if knees:
        sets.append((f"{knees}, 4x", PreparedDataset(knees, split="all", mask=MaskSpec(accel=4))))
    for name, dataset in sets:
        cells = []
        for i in range(min(samples, len(dataset))):
            batch = {k: t[None] for k, t in dataset[i].items()}
            op = operator_of(batch)
            with torch.no_grad():
                x = model(batch["kspace"], op)
            stats = model.last_stats
            cell = f"{float(psnr(x, batch['target'])):.2f} dB/{int(stats.iterations[0])}{'' if bool(stats.converged[0]) else '!'}"
            if i < 2:
                norm = jacobian_spectral_norm(model.H_map(op), x, iters=25)
                cell += f" ‖J_H‖₂≥{float(norm.estimate[0]):.4f}"
            cells.append(cell)
        print(f"{name}: " + "  ".join(cells), flush=True)


def main() -> None:
    from robustkit.models.zoo import load_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mnmmol-4x")
    parser.add_argument("--weight", type=float, default=10.0)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--power", type=int, default=1, help="k: penalise ‖(J_Hᵀ)ᵏ e‖²/‖e‖² (1: Frobenius)")
    parser.add_argument("--minutes", type=float, default=8.0)
    parser.add_argument("--knees", default=None, help="a prepared file of knee slices (scripts/knees_dev.py)")
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--out", default="frobenius_finetune.pt")
    args = parser.parse_args()
    model, _ = load_model(args.model)
    print("before:")
    measure(model, args.knees, args.samples)
    with open(args.out + ".log", "w", encoding="utf-8") as log:
        steps = finetune(model, args.minutes, args.weight, args.lr, args.power, log)
    torch.save(model.cnn.state_dict(), args.out)
    print(f"after {steps} steps ({args.minutes:g} min, k = {args.power}, w = {args.weight:g}, lr = {args.lr:g}):")
    measure(model, args.knees, args.samples)


if __name__ == "__main__":
    main()
