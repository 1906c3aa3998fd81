"""The paper's toy diffusion model (notebook 04): a time-conditioned tied two-layer ReLU DAE,
D(x, sigma) = s x + exp(MLP(log sigma)) W relu(W^T c_in x), with a learnable scalar skip s initialised at 0, and its
sampler, Euler steps of the probability-flow ODE (or the reverse SDE) on a geometric sigma grid.

What makes it work (measured, notebook 04): the gain exp(MLP(log sigma)) is one scalar per noise level (a gain per
neuron let untrained neurons blow the sampler up); the loss is unweighted (with 1/sigma or 1/sigma^2 weights the
scalar skip drifts to ~1, i.e. identity); and the data is scaled so images have norm ~1, inside the sigma range
[0.02, 2] (with raw norms ~13 the sampler starts far off the data and its samples come out dim). A tied ReLU denoiser
is linear along each stored image, so it fixes a sample's direction, not its brightness: copies come out as dimmer or
brighter versions of a training image, which is why notebook 04 compares unit-norm images. Its training recipe is
`training.diffusion.train_toy`.
"""
from __future__ import annotations

import math

import torch
from torch import nn

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


def euler_step(x: torch.Tensor, denoised: torch.Tensor, sigma, sigma_next) -> torch.Tensor:
    """One Euler step of the probability-flow ODE dx/dsigma = (x - D(x, sigma))/sigma, from noise level `sigma` to
    `sigma_next` (smaller while sampling); `denoised` = D(x, sigma)."""
    return x + (sigma_next - sigma) * (x - denoised) / sigma


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
            x = euler_step(x, denoised, sigma, sigmas[i + 1])
        else:
            var = sigma**2 - sigmas[i + 1] ** 2
            x = x + var * (denoised - x) / sigma**2 + var.sqrt() * torch.randn(x.shape, generator=g).to(device)
    return x.cpu(), hidden
