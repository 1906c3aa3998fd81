"""Prompt-free memorization detection from a diffusion UNet's intermediate representation (the paper's detector).

Recipe (the paper, Stable Diffusion v1.4): take a generated image x0 (its latent when the model has a VAE), add noise
at a small timestep t (10 of 1000), run the UNet once, capture one block's activation, pool its spatial maximum over
H x W into a vector with one entry per channel, and score = the standard deviation of that vector. A memorized
generation lights up a few channels strongly (spiky, high std); a novel one spreads its activation (balanced, low
std). The same function accepts any diffusers UNet: extra inputs (e.g. `encoder_hidden_states` of the empty prompt
for a text-conditioned UNet) go through `unet_kwargs`.
"""
from __future__ import annotations

import numpy as np
import torch

from .metrics import representation_std
from .params import check_int
from .representations import capture_features


@torch.no_grad()
def noised_representations(unet: torch.nn.Module, x0: torch.Tensor, layers: list[str] | str, timestep: int = 10,
                           pool: str = "max", seed: int = 0, num_train_timesteps: int = 1000,
                           unet_kwargs: dict | None = None, batch_size: int = 128) -> dict[str, torch.Tensor]:
    """Pooled activations (n, channels) of `layers` for one UNet pass on x0 noised to `timestep` (DDPM forward
    process, `DDPMScheduler.add_noise`, noise seeded by `seed` so the same image always gets the same score)."""
    from diffusers import DDPMScheduler

    check_int("timestep", timestep, 0, num_train_timesteps - 1)
    layers = [layers] if isinstance(layers, str) else list(layers)
    scheduler = DDPMScheduler(num_train_timesteps=num_train_timesteps)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    param = next(unet.parameters())
    out: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    for start in range(0, len(x0), batch_size):
        x = x0[start:start + batch_size].float()
        t = torch.full((len(x),), timestep, dtype=torch.long)
        xt = scheduler.add_noise(x, noise[start:start + batch_size], t)
        with capture_features(unet, layers, pool=pool) as feats:
            unet(xt.to(param.device, param.dtype), t.to(param.device), **(unet_kwargs or {}))
        for name in layers:
            out[name].append(feats[name].float().cpu())
    return {name: torch.cat(v) for name, v in out.items()}


def representation_std_scores(unet: torch.nn.Module, x0: torch.Tensor, layers: list[str] | str, timestep: int = 10,
                              pool: str = "max", seed: int = 0, **kwargs) -> dict[str, np.ndarray]:
    """The paper's memorization score of every image in x0 at every layer: std of the pooled activation vector.
    Higher = more likely memorized."""
    reps = noised_representations(unet, x0, layers, timestep, pool, seed, **kwargs)
    return {name: representation_std(v).numpy() for name, v in reps.items()}


def resnet_activation_layers(unet: torch.nn.Module) -> list[str]:
    """Every ResNet block's `nonlinearity` module in a diffusers UNet, in the order data flows (down, mid, up): the
    candidates for the detector's layer. The paper's SD1.4 choice, `up_blocks.0.resnets.2.nonlinearity`, is one."""
    names = [n for n, _ in unet.named_modules() if ".resnets." in n and n.endswith(".nonlinearity")]
    rank = {"down_blocks": 0, "mid_block": 1, "up_blocks": 2}
    return sorted(names, key=lambda n: (rank.get(n.split(".")[0], 3), [int(p) if p.isdigit() else 0 for p in n.split(".")]))
