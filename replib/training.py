"""Training of DAE banks: one noise level, weight decay, full batch or minibatches, with a progress bar."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from .dae import ReLUDAE
from .params import check_choice, check_float, check_int
from .widgets import progress as progress_bar

SCHEDULES = ("constant", "cosine", "cosine-tail")
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


def lr_factor(schedule: str, step: int, steps: int) -> float:
    """Learning-rate multiplier at `step`. The cosine tail lets RMSprop's jitter settle so the weights can be read off;
    the constant phase before it is where neurons that share a sample consolidate into one."""
    start = {"constant": steps, "cosine": 0, "cosine-tail": (2 * steps) // 3}[schedule]
    if step < start:
        return 1.0
    return 0.5 * (1 + math.cos(math.pi * (step - start) / max(1, steps - start)))


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
    sigma = torch.as_tensor(sigma, dtype=x.dtype).reshape(-1, 1, 1)
    noisy = x + sigma * torch.randn(x.shape, generator=g)
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
              log_every: int = 100, desc: str = "training DAE") -> TrainLog:
    """Train every DAE of the bank on its own data set (data[m] for model m; a single (n, d) tensor for M = 1).

    Full batch (batch_size None) uses every sample of each model's set at each step, padded to the largest set (so
    use it for sets of similar size); otherwise each model draws `batch_size` samples with replacement from its own
    set, which is what a sweep over n should use. Adam/RMSprop act elementwise, so optimising the summed loss
    of the bank is exactly M independent trainings.
    """
    padded, sizes = _stack(data)
    if len(sizes) != model.n_models:
        raise ValueError(f"{len(sizes)} data sets for a bank of {model.n_models} models")
    g = torch.Generator().manual_seed(cfg.seed)
    opt_cls = OPTIMIZERS[cfg.optimizer]
    opt = opt_cls(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(cfg.schedule, step, cfg.steps))
    decay = cfg.per_model("weight_decay", model.n_models)
    sigma = cfg.per_model("sigma", model.n_models)
    valid = (torch.arange(padded.shape[1])[None] < sizes[:, None]).float()
    log = TrainLog()
    bar = progress_bar(range(1, cfg.steps + 1), desc=desc, disable=not progress, mininterval=5.0)
    for step in bar:
        if cfg.batch_size is None:
            x, w = padded, valid
        else:
            idx = (torch.rand(len(sizes), cfg.batch_size, generator=g) * sizes[:, None]).long()
            x = torch.gather(padded, 1, idx[..., None].expand(-1, -1, padded.shape[2]))
            w = torch.ones(idx.shape)
        loss = denoising_loss(model, x, w, sigma, g)
        # coupled L2 per model (what torch's weight_decay argument does, but one value per model of the bank)
        l2 = sum((decay * p.pow(2).sum((1, 2))).sum() for p in model.parameters()) / 2
        opt.zero_grad(set_to_none=True)
        (loss.sum() + l2).backward()
        opt.step()
        sched.step()
        if step % log_every == 0 or step == cfg.steps:
            log.steps.append(step)
            log.loss.append(loss.detach().numpy().copy())
            bar.set_postfix(loss=float(loss.detach().mean()), refresh=False)  # printed at the bar's own pace
    return log


def train_dae_cached(name: str, data: torch.Tensor | list[torch.Tensor], cfg: DAETraining, width: int = 100,
                     tied: bool = True, init_scale: float | None = None, init_seed: int = 0, progress: bool = True
                     ) -> tuple[ReLUDAE, TrainLog]:
    """Load the trained bank from the checkpoint cache if these exact settings and data were trained before, else
    train it (one model per data set) and store it."""
    from dataclasses import asdict

    from .checkpoints import load_or_compute
    from .data import data_fingerprint

    sets = [data] if isinstance(data, torch.Tensor) and data.dim() == 2 else list(data)
    dim = sets[0].shape[1]
    settings = {"kind": "relu-dae", "dim": dim, "width": width, "tied": tied, "init_scale": init_scale,
                "init_seed": init_seed, "n_models": len(sets), "data": data_fingerprint(sets), **asdict(cfg)}

    def compute():
        model = ReLUDAE(dim, width, tied, len(sets), init_scale, init_seed)
        log = train_dae(model, sets, cfg, progress=progress, desc=name)
        return {"state": model.state_dict(), "log": log.as_dict()}  # plain data: checkpoints load safely

    blob = load_or_compute(name, settings, compute)
    model = ReLUDAE(dim, width, tied, len(sets), init_scale, init_seed)
    model.load_state_dict(blob["state"])
    return model, TrainLog.from_dict(blob["log"])
