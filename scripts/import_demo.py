"""Write a checkpoint in each reference layout, import it and score it on built-in test slices.

The checkpoints hold PyTorch's default initialisation (a fresh, untrained reference model), so the
scores only show that the imported models run end to end with the reference solvers; they are not
the reference methods' quality. Usage (numbers in docs/import.md):

    python scripts/import_demo.py --out /tmp/import-demo --slices 3
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch import nn

LAYOUTS = {  # layout: (file name the reference code writes, λ init of its settings, epoch key)
    "mnmmol-ref": ("model-30.pth.tar", 10.0, 30),
    "mol-ref": ("model_best_trn.pth.tar", 100.0, None),
    "modl-ref": ("model.pth.tar", 10.0, 20),
}


def reference_state(lam: float, seed: int, width: int = 64, depth: int = 5) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    chans = [2] + [width] * (depth - 1) + [2]
    state = {"f.lam": torch.tensor(lam)}
    for i in range(depth):
        conv = nn.Conv2d(chans[i], chans[i + 1], 3, padding=1)
        state[f"f.dw.net.{i}.conv.weight"], state[f"f.dw.net.{i}.conv.bias"] = conv.weight.detach(), conv.bias.detach()
    return state


def main() -> None:
    from robustkit.data.builtin import ensure_builtin
    from robustkit.data.prepared import PreparedDataset
    from robustkit.evaluate import evaluate
    from robustkit.models.importers import import_checkpoint
    from robustkit.models.zoo import load_model
    from robustkit.physics.masks import MaskSpec

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="working folder (checkpoints and zoo entries)")
    parser.add_argument("--slices", type=int, default=3, help="test slices to score")
    parser.add_argument("--accel", type=float, default=4.0)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    ds = PreparedDataset(ensure_builtin(), split="test", mask=MaskSpec(accel=args.accel), seed=0)
    subset = torch.utils.data.Subset(ds, range(min(args.slices, len(ds))))
    sense = evaluate(None, subset)
    print(f"SENSE: PSNR {sum(r['psnr'] for r in sense) / len(sense):.2f} dB on {len(sense)} test slices, {args.accel:g}×")
    for seed, (layout, (file, lam, epoch)) in enumerate(LAYOUTS.items()):
        src = args.out / layout / file
        src.parent.mkdir(exist_ok=True)
        payload = {"state_dict": reference_state(lam, seed)} | ({} if epoch is None else {"epoch": epoch})
        torch.save(payload, src)
        t0 = time.perf_counter()
        folder, _ = import_checkpoint(src, layout, f"ref-{layout}", out=args.out / "zoo" / layout, accel=args.accel)
        t_import = time.perf_counter() - t0
        model, card = load_model(str(folder))
        t0 = time.perf_counter()
        rows = evaluate(model, subset)
        t_eval = time.perf_counter() - t0
        line = (f"{layout} → {card['model']}: import {t_import:.2f} s, evaluate {t_eval:.1f} s "
                f"({t_eval / len(rows):.1f} s/slice); PSNR {sum(r['psnr'] for r in rows) / len(rows):.2f} dB, "
                f"SSIM {sum(r['ssim'] for r in rows) / len(rows):.3f}")
        if model.is_deq:
            c = model.config
            line += (f"; {c.solver} solver, tol {c.eval_tol:g}, cap {c.eval_max_iter}: iterations "
                     f"{[r['iterations'] for r in rows]}, converged {sum(r['converged'] for r in rows)}/{len(rows)}, "
                     f"residual max {max(r['residual'] for r in rows):.2e}")
        print(line, flush=True)


if __name__ == "__main__":
    main()
