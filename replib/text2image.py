"""A small text-to-image diffusion model trained on a CPU, packaged as a real diffusers `StableDiffusionPipeline`.

Components: a small `UNet2DConditionModel` (cross-attention to the text), a small randomly initialised and frozen
`CLIPTextModel`, the real CLIP BPE tokenizer (`replib.text`), and a DDIM scheduler. There is no VAE: the model works
in pixel space, and the pipeline is assembled with `vae=None`. `StableDiffusionPipeline` then treats the pixels as
its latents (call it with `output_type="latent"`; its default height/width are `sample_size * 8`, which map back to
`sample_size` pixels). Because it *is* a `StableDiffusionPipeline`, every function that takes a pipeline (generation,
detection, steering) runs unchanged on Stable Diffusion v1.4.

Training is the usual recipe, DDPM noise and caption dropout (the caption replaced by the empty string with
probability `p_uncond`) so that one network gives both the conditional and the unconditional prediction that
classifier-free guidance mixes, with one change from SD1.4: the UNet predicts **v** (Salimans & Ho 2022, as Stable
Diffusion 2 does) rather than the noise. Why, measured on 8 glyphs with 8 captions after 1,500 steps: an
epsilon-prediction model's one-step x0 estimate picked the caption's image 100% of the time at t=500 but 25% at
t=999, because near pure noise the caption changes the target noise by only sqrt(alpha_bar) ~ 0.006 of the image,
so the loss hardly teaches it; its DDIM samples followed the caption in 59% (guidance 1) and 12% (guidance 3) of
cases. The v-prediction model's samples followed it in 100% at guidance 1 and 3.

As in Stable Diffusion the text encoder is **frozen**; here it is a small randomly initialised CLIP text transformer
rather than a pretrained one. Fixed random features still tell
every caption apart token by token, and freezing lets training encode each distinct caption once: measured on this
CPU, training the text encoder jointly made each step ~1.4x slower (its 49,408-token embedding table alone is 3.2M
parameters for Adam to update).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from .diffusion import UNetTraining
from .params import check_choice, check_float, check_int
from .training import SCHEDULES

T2I_VERSION = 4  # part of every checkpoint key: bump when the model or the loss changes
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


@dataclass
class T2ITraining(UNetTraining):
    """DDPM training of the text-conditioned UNet (the fields of `UNetTraining`, plus the text side and the UNet's
    shape)."""

    steps: int = 4_000
    p_uncond: float = 0.1        # caption dropout: probability of training on the empty caption
    text_hidden: int = 64       # width of the frozen random CLIP text encoder (and the UNet's cross-attention)
    text_layers: int = 2
    channels: tuple[int, ...] = (16, 32, 32)
    attention_levels: int = 1
    text_time_embedding: bool = False
    prediction_type: str = "v_prediction"
    lr_schedule: str = "cosine"  # `training.lr_factor`: "cosine" falls from lr to 0 over the run; "constant"

    def __post_init__(self):
        super().__post_init__()
        check_choice("prediction_type", self.prediction_type, PREDICTION_TYPES)
        check_choice("lr_schedule", self.lr_schedule, SCHEDULES)
        check_float("p_uncond", self.p_uncond, 0.0, 1.0)
        check_int("text_hidden", self.text_hidden, 8)
        check_int("text_layers", self.text_layers, 1)
        self.channels = tuple(self.channels)



def build_model(cfg: T2ITraining, sample_size: int = 16, in_channels: int = 3) -> TextToImage:
    """The untrained pair that `train_text2image` starts from (seeded by `cfg.seed`): also the control that a
    claim about the trained model must fail on."""
    from .text import small_text_encoder

    torch.manual_seed(cfg.seed)
    unet = small_cond_unet(sample_size, cfg.channels, cross_attention_dim=cfg.text_hidden,
                           attention_levels=cfg.attention_levels, in_channels=in_channels,
                           text_time_embedding=cfg.text_time_embedding)
    return TextToImage(unet, small_text_encoder(hidden=cfg.text_hidden, layers=cfg.text_layers, seed=cfg.seed),
                       cfg.prediction_type)


def tokenize(tokenizer, prompts: list[str]) -> torch.Tensor:
    """Token ids (B, model_max_length) padded and truncated the way `StableDiffusionPipeline.encode_prompt` does."""
    return tokenizer(list(prompts), padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                     return_tensors="pt").input_ids


def train_text2image(name: str, images: torch.Tensor, captions: list[str], cfg: T2ITraining, tokenizer,
                     progress: bool = True, device: str | torch.device = "cpu") -> TextToImage:
    """Train (or load; resumable) the pair on images (N, C, H, W) in [-1, 1] with their captions, through
    `training.fit`, on `device`."""
    from diffusers import DDPMScheduler

    from .data import data_fingerprint
    from .training import Loop, device_of, fit

    if len(images) != len(captions):
        raise ValueError(f"{len(images)} images but {len(captions)} captions")
    ids = tokenize(tokenizer, captions)
    distinct, caption_index = torch.unique(ids, dim=0, return_inverse=True)
    settings = {"kind": "text2image", "version": T2I_VERSION, "size": images.shape[-1], "in_channels": images.shape[1],
                "data": data_fingerprint([images.flatten(1), ids.float()]), "tokenizer": len(tokenizer),
                **{k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()}}
    scheduler = DDPMScheduler(num_train_timesteps=cfg.num_train_timesteps)

    text: dict[str, torch.Tensor] = {}

    def make():
        model = build_model(cfg, images.shape[-1], images.shape[1])
        model.text_encoder.requires_grad_(False).eval()
        with torch.no_grad():  # every distinct caption encoded once; the last row is the empty caption
            text["states"] = model.text_encoder(torch.cat([distinct, tokenize(tokenizer, [""])]))[0]
        return model, torch.optim.Adam(model.unet.parameters(), lr=cfg.lr)

    def step(model: TextToImage, g: torch.Generator) -> torch.Tensor:
        idx = torch.randint(0, len(images), (cfg.batch_size,), generator=g)
        rows = caption_index[idx].clone()
        rows[torch.rand(cfg.batch_size, generator=g) < cfg.p_uncond] = len(distinct)
        noise = torch.randn(images[idx].shape, generator=g)
        t = torch.randint(0, cfg.num_train_timesteps, (cfg.batch_size,), generator=g)
        x0, noise, t, states = (v.to(device_of(model)) for v in (images[idx], noise, t, text["states"][rows]))
        pred = model.unet(scheduler.add_noise(x0, noise, t), t, encoder_hidden_states=states).sample
        target = {"epsilon": noise, "sample": x0}.get(cfg.prediction_type)
        return torch.nn.functional.mse_loss(pred, scheduler.get_velocity(x0, noise, t) if target is None else target)

    loop = Loop(cfg.steps, cfg.seed, cfg.lr_schedule, device=device, save_every=cfg.save_every)
    model = fit(make, step, loop, name, settings, progress)
    model.eval()
    return model


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
