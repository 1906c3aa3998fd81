"""The diffusers UNets the kit trains, and how they are sampled.

- `small_unet`: a small `UNet2DModel` for unconditional DDPM on digits (notebooks 05, 10), sampled with diffusers'
  `DDIMPipeline` (`sample_ddim`).
- `small_cond_unet` and `TextToImage`: a small `UNet2DConditionModel` (cross-attention to the text) paired with a
  frozen small CLIP text encoder (`models.text`), packaged by `as_pipeline` as a real diffusers
  `StableDiffusionPipeline` (notebooks 06, 07). There is no VAE: the model works in pixel space, and the pipeline is
  assembled with `vae=None`. `StableDiffusionPipeline` then treats the pixels as its latents (call it with
  `output_type="latent"`; its default height/width are `sample_size * 8`, which map back to `sample_size` pixels).
  Because it *is* a `StableDiffusionPipeline`, every function that takes a pipeline (generation, detection,
  steering) runs unchanged on Stable Diffusion v1.4.

As in Stable Diffusion the text encoder is **frozen**; here it is a small randomly initialised CLIP text transformer
rather than a pretrained one. Fixed random features still tell every caption apart token by token, and freezing lets
training encode each distinct caption once: measured on this CPU, training the text encoder jointly made each step
~1.4x slower (its 49,408-token embedding table alone is 3.2M parameters for Adam to update). The training recipes
are in `training.diffusion`.
"""
from __future__ import annotations

import torch
from torch import nn

from ..params import check_int


def small_unet(sample_size: int = 16, channels: tuple[int, ...] = (16, 32), layers_per_block: int = 1,
               in_channels: int = 1, norm_groups: int = 8):
    """A small diffusers `UNet2DModel` (no attention): (16, 32) channels at 16x16 has 164k parameters and trains at
    ~15 steps/s (batch 32) on one CPU thread."""
    from diffusers import UNet2DModel

    return UNet2DModel(sample_size=sample_size, in_channels=in_channels, out_channels=in_channels,
                       block_out_channels=tuple(channels), layers_per_block=layers_per_block,
                       down_block_types=("DownBlock2D",) * len(channels), up_block_types=("UpBlock2D",) * len(channels),
                       norm_num_groups=norm_groups)


@torch.no_grad()
def sample_ddim(unet, n: int, steps: int = 50, seed: int = 0, num_train_timesteps: int = 1000, eta: float = 0.0
                ) -> torch.Tensor:
    """n samples (N, C, H, W) in [-1, 1] from diffusers' `DDIMPipeline`, deterministic given the seed. eta = 0 is the
    deterministic DDIM sampler; eta = 1 adds DDPM's fresh noise at every step."""
    from diffusers import DDIMPipeline, DDIMScheduler

    pipe = DDIMPipeline(unet=unet, scheduler=DDIMScheduler(num_train_timesteps=num_train_timesteps))
    pipe.set_progress_bar_config(disable=True)
    out = pipe(batch_size=n, generator=torch.Generator().manual_seed(seed), num_inference_steps=steps,
               eta=eta, output_type="np").images
    return torch.from_numpy(out).permute(0, 3, 1, 2) * 2 - 1


PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


def small_cond_unet(sample_size: int = 16, channels: tuple[int, ...] = (16, 32, 32), cross_attention_dim: int = 64,
                    attention_levels: int = 1, layers_per_block: int = 1, attention_head_dim: int = 8,
                    in_channels: int = 3, norm_groups: int = 8, text_time_embedding: bool = False):
    """A small diffusers `UNet2DConditionModel`: plain ResNet blocks at the high resolutions, cross-attention to the
    text (`CrossAttnDownBlock2D` / `CrossAttnUpBlock2D` and the mid block) at the lowest `attention_levels` levels.
    Measured on one CPU thread, batch 64 at 16x16: attention at 8x8 and 4x4 (two levels) ran at 3.4 steps/s, at 4x4
    only (channels 16, 32, 32) at 6.2 steps/s, without any attention at 11.7.

    `text_time_embedding=True` also pools the text (diffusers' `addition_embed_type="text"`, attention pooling) into
    the timestep embedding that every ResNet block receives: a global conditioning path beside cross-attention. It
    needs nothing but `encoder_hidden_states`, so `StableDiffusionPipeline` still drives the model."""
    from diffusers import UNet2DConditionModel

    levels = len(channels)
    check_int("attention_levels", attention_levels, 0, levels)
    down = ("DownBlock2D",) * (levels - attention_levels) + ("CrossAttnDownBlock2D",) * attention_levels
    up = ("CrossAttnUpBlock2D",) * attention_levels + ("UpBlock2D",) * (levels - attention_levels)
    return UNet2DConditionModel(sample_size=sample_size, in_channels=in_channels, out_channels=in_channels,
                                block_out_channels=tuple(channels), layers_per_block=layers_per_block,
                                down_block_types=down, up_block_types=up, cross_attention_dim=cross_attention_dim,
                                attention_head_dim=attention_head_dim, norm_num_groups=norm_groups,
                                addition_embed_type="text" if text_time_embedding else None,
                                addition_embed_type_num_heads=4)


class TextToImage(nn.Module):
    """The pair that makes the model: the UNet (trained) and the frozen text encoder (saved with it, so a checkpoint
    is the whole model)."""

    def __init__(self, unet: nn.Module, text_encoder: nn.Module, prediction_type: str = "epsilon"):
        super().__init__()
        self.unet = unet
        self.text_encoder = text_encoder
        self.prediction_type = prediction_type  # what the UNet was trained to output; the sampler must agree


def as_pipeline(model: TextToImage, tokenizer, num_train_timesteps: int = 1000):
    """A diffusers `StableDiffusionPipeline` (no VAE, no safety checker, DDIM) around the trained pair."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    # No clipping of DDIM's x0 estimate (the pipeline's constructor would switch it off anyway). Measured on the
    # 8-glyph check: a v-prediction model followed its caption 16/16 at guidance 1 and 3 unclipped, but clipped
    # it fell to 0/16 at guidance 2 (guidance pushes the x0 estimate outside [-1, 1] and clipping mangles it).
    scheduler = DDIMScheduler(num_train_timesteps=num_train_timesteps, steps_offset=1, clip_sample=False,
                              prediction_type=model.prediction_type)
    pipe = StableDiffusionPipeline(vae=None, text_encoder=model.text_encoder, tokenizer=tokenizer, unet=model.unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe
