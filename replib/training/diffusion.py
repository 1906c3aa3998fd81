"""How the kit's diffusion models are trained, each through the one loop (`training.loop.fit`): "load the checkpoint
if present, else train", resumable, on any device.

- The toy (`models.toy`): a VE denoiser, sigma log-uniform in [sigma_min, sigma_max], unweighted loss (`train_toy`).
- The small UNet (`models.unets.small_unet`): DDPM noise, epsilon prediction (`ddpm_step`, `train_unet`).
- The text-to-image pair (`models.unets.TextToImage`): DDPM noise and caption dropout (the caption replaced by the
  empty string with probability `p_uncond`) so that one network gives both the conditional and the unconditional
  prediction that classifier-free guidance mixes, with one change from SD1.4: the UNet predicts **v** (Salimans & Ho
  2022, as Stable Diffusion 2 does) rather than the noise. Why, measured on 8 glyphs with 8 captions after 1,500
  steps: an epsilon-prediction model's one-step x0 estimate picked the caption's image 100% of the time at t=500 but
  25% at t=999, because near pure noise the caption changes the target noise by only sqrt(alpha_bar) ~ 0.006 of the
  image, so the loss hardly teaches it; its DDIM samples followed the caption in 59% (guidance 1) and 12% (guidance 3)
  of cases. The v-prediction model's samples followed it in 100% at guidance 1 and 3 (`train_text2image`).

The held-out objectives (`toy_denoising_error`, `unet_denoising_error`) evaluate the training loss on any images with
a seeded noise, which is how notebooks 04 and 05 show that a model's denoising carries over to images it never saw.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from ..checkpoints import data_fingerprint
from ..models.text import tokenize
from ..models.toy import TOY_VERSION, ToyDiffusionDAE
from ..models.unets import PREDICTION_TYPES, TextToImage, small_cond_unet, small_unet
from ..params import check_choice, check_float, check_int
from .loop import SCHEDULES, Loop, device_of, fit

WEIGHTINGS = ("none", "inverse-sigma", "edm")


@dataclass
class ToyTraining:
    """Settings of a toy diffusion training run (VE noise, sigma log-uniform in [sigma_min, sigma_max])."""

    steps: int = 10_000
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-4
    sigma_min: float = 0.02
    sigma_max: float = 2.0
    weighting: str = "none"  # loss weight per noise level: "none", "inverse-sigma" (1/sigma) or "edm"
    seed: int = 0
    save_every: int = 1_000

    def __post_init__(self):
        check_choice("weighting", self.weighting, WEIGHTINGS)
        check_int("steps", self.steps, 1)
        check_int("batch_size", self.batch_size, 1)
        check_float("lr", self.lr, 0.0, strict=True)
        check_float("weight_decay", self.weight_decay, 0.0)
        check_float("sigma_min", self.sigma_min, 0.0, strict=True)
        check_float("sigma_max", self.sigma_max, self.sigma_min, strict=True)
        check_int("save_every", self.save_every, 1)


def toy_loss(model: ToyDiffusionDAE, x: torch.Tensor, cfg: ToyTraining, g: torch.Generator) -> torch.Tensor:
    """Denoising loss w(sigma) ||D(x + sigma eps, sigma) - x||^2 at sigma ~ log-uniform[sigma_min, sigma_max];
    w = 1, 1/sigma, or EDM's (sigma^2 + sigma_data^2) / (sigma sigma_data)^2."""
    return _toy_error(model, x[torch.randint(0, len(x), (cfg.batch_size,), generator=g)], cfg, g).mean()


def _toy_error(model: ToyDiffusionDAE, x0: torch.Tensor, cfg: ToyTraining, g: torch.Generator) -> torch.Tensor:
    """Per-image weighted denoising error of the batch x0, each at its own sigma."""
    u = torch.rand(len(x0), 1, generator=g)
    noise = torch.randn(x0.shape, generator=g)  # drawn on the CPU: the same numbers on every device
    device = model.W.device
    x0, u, noise = x0.to(device), u.to(device), noise.to(device)
    sigma = torch.exp(math.log(cfg.sigma_min) + u * (math.log(cfg.sigma_max) - math.log(cfg.sigma_min)))
    noisy = x0 + sigma * noise
    err = (model(noisy, sigma) - x0).pow(2).sum(-1)
    sigma = sigma.squeeze(1)
    weight = {"none": torch.ones_like(sigma), "inverse-sigma": 1 / sigma,
              "edm": (sigma**2 + model.sigma_data**2) / (sigma * model.sigma_data) ** 2}[cfg.weighting]
    return weight * err


@torch.no_grad()
def toy_denoising_error(model: ToyDiffusionDAE, x: torch.Tensor, cfg: ToyTraining, seed: int = 0) -> float:
    """The training objective on any images x (n, d): every image once, at a seeded noise level and noise. Same
    seed on training and held-out images: the two numbers differ only by the images."""
    return float(_toy_error(model, x, cfg, torch.Generator().manual_seed(seed)).mean())


def train_toy(name: str, data: torch.Tensor, cfg: ToyTraining, width: int = 100, progress: bool = True,
              device: str | torch.device = "cpu") -> ToyDiffusionDAE:
    """Train (or load; resumable) the toy diffusion DAE on `data` (n, d) through `training.loop.fit`, on `device`."""
    settings = {"kind": "toy-diffusion", "version": TOY_VERSION, "width": width, "dim": data.shape[1],
                "data": data_fingerprint(data), **asdict(cfg)}

    def make():
        model = ToyDiffusionDAE(data.shape[1], width, seed=cfg.seed)
        return model, torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    loop = Loop(cfg.steps, cfg.seed, device=device, save_every=cfg.save_every)
    return fit(make, lambda m, g: toy_loss(m, data, cfg, g), loop, name, settings, progress, libraries=("torch",))


@dataclass
class UNetTraining:
    """DDPM training of a small UNet (epsilon prediction, linear betas, T = num_train_timesteps)."""

    steps: int = 3_000
    batch_size: int = 32
    lr: float = 1e-3
    num_train_timesteps: int = 1000
    seed: int = 0
    save_every: int = 500

    def __post_init__(self):
        check_int("steps", self.steps, 1)
        check_int("batch_size", self.batch_size, 1)
        check_float("lr", self.lr, 0.0, strict=True)
        check_int("num_train_timesteps", self.num_train_timesteps, 2)
        check_int("save_every", self.save_every, 1)


def ddpm_step(images: torch.Tensor, cfg: UNetTraining):
    """`step(unet, generator) -> loss` of `training.loop.fit` for DDPM on `images` (N, C, H, W): a batch of `cfg.batch_size`
    images, each noised at a uniform timestep (`DDPMScheduler.add_noise`), epsilon-prediction MSE."""
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler(num_train_timesteps=cfg.num_train_timesteps)

    def step(unet, g: torch.Generator) -> torch.Tensor:
        x0 = images[torch.randint(0, len(images), (cfg.batch_size,), generator=g)]
        noise = torch.randn(x0.shape, generator=g)
        t = torch.randint(0, cfg.num_train_timesteps, (cfg.batch_size,), generator=g)
        x0, noise, t = (v.to(device_of(unet)) for v in (x0, noise, t))
        return torch.nn.functional.mse_loss(unet(scheduler.add_noise(x0, noise, t), t).sample, noise)
    return step


def train_unet(name: str, images: torch.Tensor, cfg: UNetTraining, progress: bool = True,
               device: str | torch.device = "cpu", **unet_kwargs):
    """Train (or load; resumable) a `small_unet(**unet_kwargs)` on images (N, C, H, W) in [-1, 1] with diffusers'
    `DDPMScheduler.add_noise` and the epsilon-prediction loss, through `training.loop.fit`, on `device`."""
    unet_kwargs = {"sample_size": images.shape[-1], "in_channels": images.shape[1], **unet_kwargs}
    settings = {"kind": "unet-ddpm", "unet": {k: list(v) if isinstance(v, tuple) else v for k, v in unet_kwargs.items()},
                "data": data_fingerprint(images.flatten(1)), **asdict(cfg)}

    def make():
        torch.manual_seed(cfg.seed)
        unet = small_unet(**unet_kwargs)
        return unet, torch.optim.Adam(unet.parameters(), lr=cfg.lr)

    loop = Loop(cfg.steps, cfg.seed, device=device, save_every=cfg.save_every)
    unet = fit(make, ddpm_step(images, cfg), loop, name, settings, progress, libraries=("torch", "diffusers"))
    unet.eval()
    return unet


@torch.no_grad()
def unet_denoising_error(unet, images: torch.Tensor, seed: int = 0, num_train_timesteps: int = 1000,
                         batch_size: int = 256) -> float:
    """The DDPM objective on any images (n, C, H, W) in [-1, 1]: the mean squared error of the predicted noise, every
    image once at a seeded timestep and noise (predicting zero noise scores 1). Same seed on training and held-out
    images: the two numbers differ only by the images."""
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler(num_train_timesteps=num_train_timesteps)
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(images.shape, generator=g)
    t = torch.randint(0, num_train_timesteps, (len(images),), generator=g)

    device = device_of(unet)
    errors = []
    for start in range(0, len(images), batch_size):
        x0, eps, tt = (v[start:start + batch_size].to(device) for v in (images, noise, t))
        pred = unet(scheduler.add_noise(x0, eps, tt), tt).sample
        errors.append((pred - eps).pow(2).flatten(1).mean(1).cpu())
    return float(torch.cat(errors).mean())


T2I_VERSION = 4  # part of every checkpoint key: bump when the model or the loss changes


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
    from ..models.text import small_text_encoder

    torch.manual_seed(cfg.seed)
    unet = small_cond_unet(sample_size, cfg.channels, cross_attention_dim=cfg.text_hidden,
                           attention_levels=cfg.attention_levels, in_channels=in_channels,
                           text_time_embedding=cfg.text_time_embedding)
    return TextToImage(unet, small_text_encoder(hidden=cfg.text_hidden, layers=cfg.text_layers, seed=cfg.seed),
                       cfg.prediction_type)


def train_text2image(name: str, images: torch.Tensor, captions: list[str], cfg: T2ITraining, tokenizer,
                     progress: bool = True, device: str | torch.device = "cpu") -> TextToImage:
    """Train (or load; resumable) the pair on images (N, C, H, W) in [-1, 1] with their captions, through
    `training.loop.fit`, on `device`."""
    from diffusers import DDPMScheduler

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
    model = fit(make, step, loop, name, settings, progress, libraries=("torch", "diffusers", "transformers"))
    model.eval()
    return model
