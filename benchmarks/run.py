"""The kit's benchmarks: how much the training loop costs over a bare PyTorch loop, how much a batched DAE bank saves
over a Python loop, and how fast the glyph renderer draws a training set. Prints one table; the README reports it.

    .venv/bin/python benchmarks/run.py            # about a minute on one CPU thread
    .venv/bin/python benchmarks/run.py --quick    # fewer steps (a check that it runs, not a measurement)

Run it on a machine that is otherwise idle: the numbers are wall times (best of a few repeats). Goal for the loop:
at most 5% over the bare loop on every model.
"""
from __future__ import annotations

import argparse

import pandas as pd
import torch

from replib import speed
from replib.data import digits, glyphs
from replib.models.toy import ToyDiffusionDAE
from replib.models.unets import small_unet
from replib.training.dae import DAETraining
from replib.training.diffusion import ToyTraining, UNetTraining, ddpm_step, toy_loss

LOOP_GOAL = 1.05


def loop_rows(steps: int, repeats: int) -> list[dict]:
    """`training.fit` against `speed.bare_loop` on the smallest model the kit trains (notebook 04's toy diffusion
    DAE, where a fixed per-step cost shows most) and on notebook 05's UNet."""
    images, _ = digits.load_images("mnist")
    flat = digits.center(images[:512])[0]
    toy_cfg = ToyTraining(batch_size=256)

    def make_toy():
        model = ToyDiffusionDAE(flat.shape[1], 100, seed=0)
        return model, torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)

    pixels = digits.as_image_batch(images[:512], digits.IMAGE_SHAPES["mnist"], 16)  # as notebook 05 feeds its UNet

    def make_unet():
        torch.manual_seed(0)
        unet = small_unet(16)
        return unet, torch.optim.Adam(unet.parameters(), lr=1e-3)

    rows = []
    for name, make, step, n in [("toy diffusion DAE (04), batch 256", make_toy,
                                 lambda m, g: toy_loss(m, flat, toy_cfg, g), steps * 10),
                                ("DDPM UNet 16x16 (05), batch 32", make_unet, ddpm_step(pixels, UNetTraining()), steps)]:
        rows.append({"benchmark": f"fit vs bare loop: {name}", **speed.loop_overhead(make, step, n, repeats)})
    return rows


def bank_row(steps: int) -> dict:
    """Notebook 02's case: 8 DAEs of width 100 on 8x8 digits, as one bank and as a loop."""
    images, _ = digits.load_images("digits")
    sets = [digits.center(images[digits.subsample_indices(len(images), n, seed=s)])[0]
            for n in (10, 40, 160, 640) for s in (0, 1)]
    cfg = DAETraining(sigma=0.2, steps=steps, optimizer="adam", lr=1e-3, batch_size=64)
    out = speed.bank_vs_loop(sets, cfg, width=100)
    return {"benchmark": "DAE bank vs Python loop: 8 models, 8x8 digits", "ratio": out["speed-up"],
            "bank s": out["bank s"], "loop s": out["loop s"]}


def glyph_row(n: int) -> dict:
    glyphs.clear_cache()  # a cold start: every glyph mask drawn anew
    seconds = speed.best_of(lambda: glyphs.make_glyph_set(n, size=16, seed=0), 1)
    return {"benchmark": f"glyph renderer: {n:,} captioned 16x16 images, cold", "seconds": seconds}


def main(argv=None) -> pd.DataFrame:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a few steps only: checks that the benchmarks run")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1, as the notebooks' CI runs)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    steps, repeats = (5, 1) if args.quick else (200, 3)
    rows = loop_rows(steps, repeats) + [bank_row(steps * 2), glyph_row(500 if args.quick else 5000)]
    table = pd.DataFrame(rows).set_index("benchmark")
    with pd.option_context("display.width", 160, "display.max_columns", 10):
        print(table.round(4).to_string(na_rep=""))
    worst = table["ratio"].iloc[:2].max()
    print(f"\ntraining loop overhead: worst {worst - 1:+.1%} (goal: at most {LOOP_GOAL - 1:.0%})")
    return table


if __name__ == "__main__":
    main()
