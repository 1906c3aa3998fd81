"""Training of DAE banks (notebooks 01-03): one noise level, weight decay per model, full batch or minibatches,
through `training.loop.fit`; and the denoising objective itself, which notebooks evaluate on held-out images.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..models.dae import ReLUDAE
from ..params import check_choice, check_float, check_int
from .loop import SCHEDULES, Loop, _cpu, fit

OPTIMIZERS = {"rmsprop": torch.optim.RMSprop, "adam": torch.optim.Adam, "sgd": torch.optim.SGD}


@dataclass
class DAETraining:
    """Settings of one DAE training run. The defaults are the paper's memorizing run (n <= p, full batch)."""

    sigma: float | list[float] = 0.2  # noise level of x_noisy = x + sigma * eps, one value or one per model
    steps: int = 20_000
    optimizer: str = "rmsprop"
    lr: float = 1e-3
    weight_decay: float | list[float] = 1e-2  # coupled L2, one value or one per model: gradient + weight_decay * W
    batch_size: int | None = None  # None: full batch
    schedule: str = "constant"  # "cosine": lr decays to 0 over the run; "cosine-tail": only over the last third
    seed: int = 0

    def __post_init__(self):
        for name, values in (("sigma", self.sigma), ("weight_decay", self.weight_decay)):
            values = values if isinstance(values, (list, tuple)) else [values]
            for i, v in enumerate(values):
                check_float(name if len(values) == 1 else f"{name}[{i}]", v, 0.0)
        check_int("steps", self.steps, 1)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_float("lr", self.lr, 0.0, strict=True)
        check_choice("schedule", self.schedule, SCHEDULES)
        if self.batch_size is not None:
            check_int("batch_size", self.batch_size, 1)

    def per_model(self, name: str, n_models: int) -> torch.Tensor:
        """The setting `name` ("sigma" or "weight_decay") as one value per model of a bank."""
        v = getattr(self, name)
        v = list(v) if isinstance(v, (list, tuple)) else [v] * n_models
        if len(v) != n_models:
            raise ValueError(f"{len(v)} {name} values for a bank of {n_models} models")
        return torch.tensor(v, dtype=torch.float32)


def penalty_lambda(weight_decay: float) -> float:
    """lambda of the objective (1/n) sum_i ||f(x_i + sigma eps) - x_i||^2 + lambda ||W||_F^2 that coupled weight decay
    minimises: the gradient gets weight_decay * W = 2 lambda W, so lambda = weight_decay / 2."""
    return weight_decay / 2


@dataclass
class TrainLog:
    steps: list[int] = field(default_factory=list)
    loss: list[np.ndarray] = field(default_factory=list)  # one value per model at each logged step

    @property
    def final_loss(self) -> np.ndarray:
        return self.loss[-1]

    def as_dict(self) -> dict:
        """The log as plain data (a list of ints and one float tensor), which a checkpoint can store and a safe load
        (`torch.load(weights_only=True)`) can read back; `from_dict` rebuilds it exactly."""
        loss = torch.from_numpy(np.stack(self.loss)) if self.loss else torch.zeros(0)
        return {"steps": [int(s) for s in self.steps], "loss": loss}

    @classmethod
    def from_dict(cls, blob: dict) -> "TrainLog":
        return cls(list(blob["steps"]), [row.copy() for row in blob["loss"].numpy()])


def _stack(datasets: torch.Tensor | list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad a list of (n_m, d) data sets into one (M, n_max, d) tensor plus the sizes n_m."""
    if isinstance(datasets, torch.Tensor):
        datasets = [datasets] if datasets.dim() == 2 else list(datasets)
    sizes = torch.tensor([len(x) for x in datasets])
    padded = torch.zeros(len(datasets), int(sizes.max()), datasets[0].shape[1])
    for i, x in enumerate(datasets):
        padded[i, : len(x)] = x
    return padded, sizes


def denoising_loss(model: ReLUDAE, x: torch.Tensor, weights: torch.Tensor, sigma: float | torch.Tensor,
                   g: torch.Generator | None = None) -> torch.Tensor:
    """Per-model weighted mean over samples of ||f(x + sigma eps) - x||_2^2 (sum over pixels). x: (M, B, d);
    sigma: a number or one value per model."""
    sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1, 1, 1)
    noisy = x + sigma * torch.randn(x.shape, generator=g).to(x.device)
    err = (model(noisy) - x).pow(2).sum(-1)  # (M, B)
    return (err * weights).sum(1) / weights.sum(1)


@torch.no_grad()
def denoising_error(model: ReLUDAE, x: torch.Tensor, sigma: float, seed: int = 0) -> float:
    """The training objective on any images x (n, d) of a single DAE: the mean of ||f(x + sigma eps) - x||^2, with
    seeded noise. Evaluated on training and on held-out images with the same seed, the two differ only by the
    images: how far a model's denoising carries over to images it never saw."""
    g = torch.Generator().manual_seed(seed)
    return float(denoising_loss(model, x[None], torch.ones(1, len(x)), sigma, g)[0])


def train_dae(model: ReLUDAE, data: torch.Tensor | list[torch.Tensor], cfg: DAETraining, progress: bool = True,
              log_every: int = 100, desc: str = "training DAE", device: str | torch.device = "cpu") -> TrainLog:
    """Train every DAE of the bank on its own data set (data[m] for model m; a single (n, d) tensor for M = 1), through
    `fit`, on `device`.

    Full batch (batch_size None) uses every sample of each model's set at each step, padded to the largest set (so
    use it for sets of similar size); otherwise each model draws `batch_size` samples with replacement from its own
    set, which is what a sweep over n should use. Adam/RMSprop act elementwise, so optimising the summed loss
    of the bank is exactly M independent trainings.
    """
    padded, sizes = _stack(data)
    if len(sizes) != model.n_models:
        raise ValueError(f"{len(sizes)} data sets for a bank of {model.n_models} models")
    device = torch.device(device)
    decay = cfg.per_model("weight_decay", model.n_models).to(device)
    sigma = cfg.per_model("sigma", model.n_models).to(device)
    valid = (torch.arange(padded.shape[1])[None] < sizes[:, None]).float()
    padded_on, valid_on = padded.to(device), valid.to(device)
    log = TrainLog()
    done = [0]

    def step(bank: ReLUDAE, g: torch.Generator) -> torch.Tensor:
        if cfg.batch_size is None:
            x, w = padded_on, valid_on
        else:
            idx = (torch.rand(len(sizes), cfg.batch_size, generator=g) * sizes[:, None]).long().to(device)
            x = torch.gather(padded_on, 1, idx[..., None].expand(-1, -1, padded.shape[2]))
            w = torch.ones(idx.shape, device=device)
        loss = denoising_loss(bank, x, w, sigma, g)
        # coupled L2 per model (what torch's weight_decay argument does, but one value per model of the bank)
        l2 = sum((decay * p.pow(2).sum((1, 2))).sum() for p in bank.parameters()) / 2
        done[0] += 1
        if done[0] % log_every == 0 or done[0] == cfg.steps:
            log.steps.append(done[0])
            log.loss.append(loss.detach().cpu().numpy().copy())
        return loss.sum() + l2

    loop = Loop(cfg.steps, cfg.seed, cfg.schedule, device=device, log_every=log_every)
    fit(lambda: (model, OPTIMIZERS[cfg.optimizer](model.parameters(), lr=cfg.lr)), step, loop, desc, progress=progress)
    return log


def train_dae_cached(name: str, data: torch.Tensor | list[torch.Tensor], cfg: DAETraining, width: int = 100,
                     tied: bool = True, init_scale: float | None = None, init_seed: int = 0, progress: bool = True,
                     device: str | torch.device = "cpu") -> tuple[ReLUDAE, TrainLog]:
    """Load the trained bank from the checkpoint cache if these exact settings and data were trained before, else
    train it (one model per data set, on `device`) and store it. The bank comes back on the CPU, where notebooks
    01-03 read its weights as arrays."""
    from dataclasses import asdict

    from ..checkpoints import data_fingerprint, load_or_compute

    sets = [data] if isinstance(data, torch.Tensor) and data.dim() == 2 else list(data)
    dim = sets[0].shape[1]
    settings = {"kind": "relu-dae", "dim": dim, "width": width, "tied": tied, "init_scale": init_scale,
                "init_seed": init_seed, "n_models": len(sets), "data": data_fingerprint(sets), **asdict(cfg)}

    def compute():
        model = ReLUDAE(dim, width, tied, len(sets), init_scale, init_seed)
        log = train_dae(model, sets, cfg, progress=progress, desc=name, device=device)
        return {"state": _cpu(model.state_dict()), "log": log.as_dict()}  # plain CPU data: loads safely anywhere

    blob = load_or_compute(name, settings, compute, libraries=("torch",))  # no diffusers in a DAE
    model = ReLUDAE(dim, width, tied, len(sets), init_scale, init_seed)
    model.load_state_dict(blob["state"])
    return model, TrainLog.from_dict(blob["log"])
