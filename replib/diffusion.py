"""Diffusion models, from scratch first and then with diffusers.

- The paper's toy: a time-conditioned tied two-layer ReLU DAE, D(x, sigma) = s x + exp(MLP(log sigma)) W relu(W^T c_in x),
  with a learnable scalar skip s initialised at 0, trained as a VE denoiser with sigma log-uniform in [0.02, 2], and
  sampled with the probability-flow ODE (Euler steps on a geometric sigma grid).
  What makes it work (measured, notebook 04): the gain exp(MLP(log sigma)) is one scalar per noise level (a gain per
  neuron let untrained neurons blow the sampler up); the loss is unweighted (with 1/sigma or 1/sigma^2 weights the
  scalar skip drifts to ~1, i.e. identity); and the data is scaled so images have norm ~1, inside the sigma range
  [0.02, 2] (with raw norms ~13 the sampler starts far off the data and its samples come out dim).
  A tied ReLU denoiser is linear along each stored image, so it fixes a sample's direction, not its brightness: copies
  come out as dimmer or brighter versions of a training image, which is why notebook 04 compares unit-norm images.
- Training runs through `training.fit`: "load the checkpoint if present, else train", with partial checkpoints
  written atomically every `save_every` steps so an interrupted run resumes where it stopped, on any device.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from .params import check_choice, check_float, check_int

WEIGHTINGS = ("none", "inverse-sigma", "edm")
TOY_VERSION = 2  # part of every toy checkpoint's key: bump it when the model or its loss changes


class ToyDiffusionDAE(nn.Module):
    """D(x, sigma) = skip * x + exp(MLP(log sigma)) W relu(W^T c_in x): one tied ReLU layer of `width` neurons whose
    hidden vector h = relu(W^T c_in x) is rescaled by one learned factor per noise level (a scalar, so no neuron can
    get a gain of its own that nothing trains); h is the representation the paper measures.
    c_in = 1 / sqrt(sigma^2 + sigma_data^2) keeps the input at unit scale at every noise level (EDM's input scaling)."""

    def __init__(self, dim: int, width: int = 100, mlp_width: int = 32, sigma_data: float = 0.5, seed: int = 0):
        super().__init__()
        self.sigma_data = sigma_data
        g = torch.Generator().manual_seed(seed)
        self.W = nn.Parameter(torch.randn(dim, width, generator=g) / math.sqrt(dim))
        self.mlp = nn.Sequential(nn.Linear(1, mlp_width), nn.SiLU(), nn.Linear(mlp_width, 1))
        with torch.no_grad():
            for layer in (self.mlp[0], self.mlp[2]):
                layer.weight.copy_(torch.randn(layer.weight.shape, generator=g) / math.sqrt(layer.in_features))
                layer.bias.zero_()
        self.skip = nn.Parameter(torch.zeros(()))

    def hidden(self, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        """The representation h = relu(W^T c_in(sigma) x), before the noise-level scaling."""
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1, 1)
        return torch.relu((x / torch.sqrt(sigma**2 + self.sigma_data**2)) @ self.W)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1, 1).expand(len(x), 1)
        scale = torch.exp(self.mlp(torch.log(sigma)))
        return self.skip * x + (self.hidden(x, sigma) * scale) @ self.W.T


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
    """Train (or load; resumable) the toy diffusion DAE on `data` (n, d) through `training.fit`, on `device`."""
    from .data import data_fingerprint
    from .training import Loop, fit

    settings = {"kind": "toy-diffusion", "version": TOY_VERSION, "width": width, "dim": data.shape[1],
                "data": data_fingerprint(data), **asdict(cfg)}

    def make():
        model = ToyDiffusionDAE(data.shape[1], width, seed=cfg.seed)
        return model, torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    loop = Loop(cfg.steps, cfg.seed, device=device, save_every=cfg.save_every)
    return fit(make, lambda m, g: toy_loss(m, data, cfg, g), loop, name, settings, progress)


@torch.no_grad()
def sample_toy(model: ToyDiffusionDAE, n: int, steps: int = 50, sigma_min: float = 0.02, sigma_max: float = 2.0,
               method: str = "ode", seed: int = 0) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Sample on a geometric sigma grid from sigma_max to sigma_min, then one final denoising step.

    method "ode": Euler steps of the probability-flow ODE, dx = (x - D)/sigma dsigma (deterministic).
    method "sde": Euler-Maruyama steps of the reverse VE SDE, x += (s_i^2 - s_{i+1}^2) score + sqrt(s_i^2 - s_{i+1}^2) z
    with score = (D - x)/s_i^2; the fresh noise corrects the denoiser's errors along the way.
    Runs on the model's device; returns (samples, the hidden representation h at every step) on the CPU."""
    if method not in ("ode", "sde"):
        raise ValueError(f"method={method!r} is not allowed: method must be 'ode' or 'sde'")
    g = torch.Generator().manual_seed(seed)  # noise drawn on the CPU: the same samples on every device
    device = model.W.device
    sigmas = torch.exp(torch.linspace(math.log(sigma_max), math.log(sigma_min), steps)).to(device)
    x = sigma_max * torch.randn(n, model.W.shape[0], generator=g).to(device)
    hidden = []
    for i, sigma in enumerate(sigmas):
        hidden.append(model.hidden(x, sigma).cpu())
        denoised = model(x, sigma)
        if i + 1 == len(sigmas):
            x = denoised
        elif method == "ode":
            x = x + (sigmas[i + 1] - sigma) * (x - denoised) / sigma
        else:
            var = sigma**2 - sigmas[i + 1] ** 2
            x = x + var * (denoised - x) / sigma**2 + var.sqrt() * torch.randn(x.shape, generator=g).to(device)
    return x.cpu(), hidden


# --- The library version: a small diffusers UNet2DModel, DDPM training, DDIM sampling --------------------------------

def small_unet(sample_size: int = 16, channels: tuple[int, ...] = (16, 32), layers_per_block: int = 1,
               in_channels: int = 1, norm_groups: int = 8):
    """A small diffusers `UNet2DModel` (no attention): (16, 32) channels at 16x16 has 164k parameters and trains at
    ~15 steps/s (batch 32) on one CPU thread."""
    from diffusers import UNet2DModel

    return UNet2DModel(sample_size=sample_size, in_channels=in_channels, out_channels=in_channels,
                       block_out_channels=tuple(channels), layers_per_block=layers_per_block,
                       down_block_types=("DownBlock2D",) * len(channels), up_block_types=("UpBlock2D",) * len(channels),
                       norm_num_groups=norm_groups)


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
    """`step(unet, generator) -> loss` of `training.fit` for DDPM on `images` (N, C, H, W): a batch of `cfg.batch_size`
    images, each noised at a uniform timestep (`DDPMScheduler.add_noise`), epsilon-prediction MSE."""
    from diffusers import DDPMScheduler

    from .training import device_of

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
    `DDPMScheduler.add_noise` and the epsilon-prediction loss, through `training.fit`, on `device`."""
    from .data import data_fingerprint
    from .training import Loop, fit

    unet_kwargs = {"sample_size": images.shape[-1], "in_channels": images.shape[1], **unet_kwargs}
    settings = {"kind": "unet-ddpm", "unet": {k: list(v) if isinstance(v, tuple) else v for k, v in unet_kwargs.items()},
                "data": data_fingerprint(images.flatten(1)), **asdict(cfg)}

    def make():
        torch.manual_seed(cfg.seed)
        unet = small_unet(**unet_kwargs)
        return unet, torch.optim.Adam(unet.parameters(), lr=cfg.lr)

    loop = Loop(cfg.steps, cfg.seed, device=device, save_every=cfg.save_every)
    unet = fit(make, ddpm_step(images, cfg), loop, name, settings, progress)
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
    from .training import device_of

    device = device_of(unet)
    errors = []
    for start in range(0, len(images), batch_size):
        x0, eps, tt = (v[start:start + batch_size].to(device) for v in (images, noise, t))
        pred = unet(scheduler.add_noise(x0, eps, tt), tt).sample
        errors.append((pred - eps).pow(2).flatten(1).mean(1).cpu())
    return float(torch.cat(errors).mean())


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
