"""Representation steering (the paper's second tool), for any diffusers `StableDiffusionPipeline`.

A concept vector for block l is the mean, over reference images of the concept, of the block's spatially mean-pooled
output (one UNet pass at a small timestep, with each image's prompt). Steering adds alpha * v_l to that block's
output, broadcast over space, on the **conditional half** of the classifier-free-guidance batch, during a window of
sampling steps. The paper (SD1.4): up_blocks.0 resnets 0-2 and up_blocks.1 resnets 0-1, steps 18-37 of 40,
alpha in {0, 0.2, ..., 0.5}. A generalizing prompt follows the push; a memorized one resists: its sample is pinned
to the stored training image.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch

from ..params import check_float, check_int
from .hooks import attached, resolve


@torch.no_grad()
def concept_vectors(pipe, latents: torch.Tensor, prompts: list[str], layers: list[str], timestep: int = 10,
                    seed: int = 0, batch_size: int = 32) -> dict[str, torch.Tensor]:
    """v_l = mean over the reference samples (model space) of block l's spatial-mean output, captured at `timestep`
    with each sample's prompt. Returns {layer: (channels,)}."""
    from diffusers import DDPMScheduler

    from ..models.pipelines import prompt_embeddings
    from .detection import noised_representations

    if len(latents) != len(prompts):
        raise ValueError(f"{len(latents)} reference samples but {len(prompts)} prompts")
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    sums: dict[str, torch.Tensor] = {}
    for start in range(0, len(latents), batch_size):
        chunk = slice(start, start + batch_size)
        emb = prompt_embeddings(pipe, prompts[chunk])
        reps = noised_representations(pipe.unet, latents[chunk], layers, timestep, "mean", seed + start,
                                      unet_kwargs={"encoder_hidden_states": emb}, scheduler=scheduler)
        for name, v in reps.items():
            sums[name] = sums.get(name, 0) + v.sum(0)
    return {name: v / len(latents) for name, v in sums.items()}


def concept_direction(concept: dict[str, torch.Tensor], baseline: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """v_l(concept) - v_l(baseline) per layer: the concept's mean representation with what every image shares taken
    out (e.g. baseline = `concept_vectors` of a random sample of training images). Measured on the glyph model of
    notebook 07: adding the raw mean of red glyphs left the red share of generated glyphs at 0.02-0.11 for alpha up to
    2, the direction red-minus-all raised it from 0.04 to 0.43 at alpha = 2 (most of a raw mean is the part all
    glyph images share)."""
    if set(concept) != set(baseline):
        raise KeyError(f"layers differ: {sorted(concept)} vs {sorted(baseline)}")
    return {name: concept[name] - baseline[name] for name in concept}


def push(out: torch.Tensor, vector: torch.Tensor, alpha: float, conditional_only: bool = True) -> torch.Tensor:
    """A block's output (batch, channels, ...) with alpha * vector added to every position of each channel; with
    classifier-free guidance (an even batch [unconditional; conditional]) and `conditional_only`, to the conditional
    half only. A new tensor: the output itself is left as it was."""
    v = vector.to(out.device, out.dtype).view(1, -1, *([1] * (out.dim() - 2)))
    shifted = out.clone()
    half = len(out) // 2 if conditional_only and len(out) % 2 == 0 else 0
    shifted[half:] = shifted[half:] + alpha * v
    return shifted


@contextmanager
def steer(pipe, vectors: dict[str, torch.Tensor], alpha: float, steps: tuple[int, int] | None = None,
          conditional_only: bool = True) -> Iterator[dict]:
    """While the block runs, every UNet call inside the sampling-step window [first, last] (0-based; None = all
    steps) adds alpha * v_l to the output of each block l. With classifier-free guidance only the conditional half of
    the batch ([unconditional, conditional]) is pushed. Hooks are removed on exit, also on error.

    The step comes from the pipeline itself: pass the yielded `state["callback"]` as the pipeline call's
    `callback_on_step_end` (`pipelines.generate` forwards it; `alpha_sweep` does this), so a scheduler that calls the
    UNet more than once per step is still steered by step. A windowed steer whose UNet ran while no step ended raises
    on exit. `state["calls"]` counts the UNet calls."""
    check_float("alpha", alpha, -1e6)
    if steps is not None:
        check_int("steps[0]", steps[0], 0)
        check_int("steps[1]", steps[1], steps[0])
    modules = resolve(pipe.unet, vectors)
    state: dict = {"calls": 0, "step": 0, "steps_ended": 0}

    def on_step_end(pipeline, index, _timestep, callback_kwargs):
        total = getattr(pipeline, "num_timesteps", None) or 0  # the next pipeline call starts again at step 0
        state["step"] = (index + 1) % total if total else index + 1
        state["steps_ended"] += 1
        return callback_kwargs

    def count(_module, _args):
        state["calls"] += 1

    def push_for(name):
        def hook(_module, _inputs, output):
            if alpha == 0 or (steps is not None and not steps[0] <= state["step"] <= steps[1]):
                return None
            out = output[0] if isinstance(output, tuple) else output
            shifted = push(out, vectors[name], alpha, conditional_only)
            return (shifted, *output[1:]) if isinstance(output, tuple) else shifted
        return hook

    state["callback"] = on_step_end
    with attached([(modules[n], push_for(n)) for n in vectors], pre=[(pipe.unet, count)]):
        yield state
    if steps is not None and alpha != 0 and state["calls"] and not state["steps_ended"]:
        raise RuntimeError("steer: the UNet ran but no sampling step ended, so the step window could not be applied: "
                           "pass callback_on_step_end=state['callback'] to the pipeline call (pipelines.generate "
                           "forwards it)")


def alpha_sweep(pipe, prompts: list[str], vectors: dict[str, torch.Tensor], alphas: list[float],
                window: tuple[int, int] | None, seeds: list[int] | int = 0, steps: int = 50,
                guidance_scale: float = 7.5, progress: bool = True) -> dict[float, "Generations"]:
    """Generate the same prompts with the same seeds at every alpha (alpha = 0: no push). Returns {alpha: Generations}."""
    from ..models.pipelines import generate

    out = {}
    for a in alphas:
        with steer(pipe, vectors, a, window) as state:
            out[a] = generate(pipe, prompts, seeds, steps, guidance_scale, progress=progress,
                              callback_on_step_end=state["callback"])
    return out


def steerability(values: dict[float, np.ndarray]) -> np.ndarray:
    """Per prompt, how far a measured attribute moved from alpha = 0 to the largest alpha (values: {alpha: (n,)})."""
    alphas = sorted(values)
    return np.asarray(values[alphas[-1]], dtype=float) - np.asarray(values[alphas[0]], dtype=float)


def pixel_change(images: torch.Tensor, base: torch.Tensor) -> np.ndarray:
    """Per image, the mean absolute pixel difference between `images` and `base` (same shape (n, ...))."""
    return (images - base).abs().mean(dim=tuple(range(1, base.dim()))).numpy()


def movement(sweep: dict[float, "Generations"]) -> dict[float, np.ndarray]:
    """Per prompt and alpha, how far the image moved from its alpha = 0 version (same seed): `pixel_change`.
    Direction-free: a memorized sample pinned to its training image moves little whatever the push."""
    base = sweep[min(sweep)].images
    return {a: pixel_change(g.images, base) for a, g in sweep.items()}


def rise_by_group(table: "pd.DataFrame", column: str, strength: str = "strength γ", group: str = "group") -> "pd.Series":
    """Per group, how much the group's mean of `column` rose from the smallest strength (γ = 0) to the largest:
    mean at the largest γ minus mean at γ = 0 (a table with one row per prompt and strength)."""
    low, high = table[strength].min(), table[strength].max()
    by = table.groupby([strength, group])[column].mean()
    return (by.loc[high] - by.loc[low]).rename(column)


def abruptness(sweep: dict[float, "Generations"]) -> np.ndarray:
    """Per prompt, the shape of its alpha-curve: the largest change of the image between two neighbouring alphas
    (mean absolute pixel change) divided by the sum of those changes. 1/(number of steps) for an image that moves
    by equal amounts at every step, 1 for one that stays put and then jumps once; NaN for one that never moves. The
    paper describes memorized samples as resisting the push and then giving way at once, generalized ones as moving
    smoothly."""
    alphas = sorted(sweep)
    steps = np.stack([(sweep[b].images - sweep[a].images).abs().flatten(1).mean(1).numpy()
                      for a, b in zip(alphas, alphas[1:])], axis=1)
    total = steps.sum(1)
    return np.where(total > 0, steps.max(1) / np.where(total > 0, total, 1), np.nan)
