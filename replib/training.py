"""The kit's one training loop (`fit`), and the DAE bank's objective and settings.

`fit` is what every model of the kit trains through: DAE banks (notebooks 01-03), the toy diffusion model (04), the
DDPM UNet (05, 10) and the text-to-image model (06, 07). One place holds the optimizer step, the learning-rate
schedule, the device, gradient clipping, the progress bar and, when the run is cached, the periodic atomic partial
checkpoints that let an interrupted run resume. What differs between models is only `step(model, generator) ->
loss`: it draws its batch and noise from the loop's CPU generator, so a run gives the same numbers whatever the device
it trains on, and a checkpoint (always stored on the CPU) loads on any device.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

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


@dataclass
class Loop:
    """How `fit` runs: `steps` optimizer steps, the learning rate of step i (0-based) the optimizer's own times
    `lr_factor(schedule, i, steps)`, gradients clipped to norm `clip_grad` (None: not clipped), on `device`, the loss
    logged every `log_every` steps and, for a cached run, a partial checkpoint every `save_every` steps."""

    steps: int
    seed: int = 0
    schedule: str = "constant"
    clip_grad: float | None = None
    device: str | torch.device = "cpu"
    save_every: int | None = None
    log_every: int = 1

    def __post_init__(self):
        check_int("steps", self.steps, 1)
        check_choice("schedule", self.schedule, SCHEDULES)
        if self.clip_grad is not None:
            check_float("clip_grad", self.clip_grad, 0.0, strict=True)
        if self.save_every is not None:
            check_int("save_every", self.save_every, 1)
        check_int("log_every", self.log_every, 1)


def _cpu(obj):
    """A state dict (nested dicts/lists of tensors) with every tensor on the CPU: what a checkpoint stores."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cpu(v) for v in obj)
    return obj


def fit(make: Callable[[], tuple[nn.Module, torch.optim.Optimizer]],
        step: Callable[[nn.Module, torch.Generator], torch.Tensor], loop: Loop, name: str = "training",
        settings: dict | None = None, progress: bool = True) -> nn.Module:
    """Train `make()`'s model with its optimizer, minimising `step(model, generator) -> loss` for `loop.steps` steps.

    The model is moved to `loop.device`; `step` draws batches and noise from the CPU `generator` (seeded with
    `loop.seed`) and moves them to the model's device (`device_of(model)`). The model comes back with `losses` (the
    loss every `loop.log_every` steps) and `train_seconds`.

    With `settings`, the run is cached under `name` and those settings (`checkpoints.checkpoint_path`): a finished
    checkpoint is loaded without training; otherwise a partial checkpoint (model, optimizer, generator state, step,
    losses) is written atomically every `loop.save_every` steps and picked up by the next call, so an interrupted run
    resumes. An unreadable, mismatched or unsafe file is reported and ignored (`checkpoints.load_checked`). Everything
    stored is plain CPU data, so a checkpoint written on a GPU loads on a CPU and the other way round."""
    from .checkpoints import checkpoint_path, load_checked, plain_settings, save_atomic

    model, opt = make()
    model.to(loop.device)
    final = partial = None
    if settings is not None:
        final = checkpoint_path(name, settings)
        partial = final.with_suffix(".partial.pt")
        done = load_checked(final, settings)
        if done is not None:
            model.load_state_dict(done["model"])
            model.losses, model.train_seconds = done.get("losses", []), done.get("seconds", float("nan"))
            print(f"loaded checkpoint {final.name} (trained in {model.train_seconds:.0f} s)")
            return model
    base_lr = [group["lr"] for group in opt.param_groups]  # as `make` set them: the schedule scales these
    g = torch.Generator().manual_seed(loop.seed)
    start, losses, seconds = 0, [], 0.0
    state = load_checked(partial, settings) if settings is not None else None
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])  # moves the optimizer's state to the parameters' device
        g.set_state(state["generator"])
        start, losses, seconds = state["step"], state["losses"], state.get("seconds", 0.0)
        print(f"resuming {name} from step {start} of {loop.steps}")
    bar = progress_bar(range(start + 1, loop.steps + 1), desc=name, disable=not progress, mininterval=5.0,
                       total=loop.steps, initial=start)
    t0 = time.perf_counter() - seconds
    for i in bar:
        factor = lr_factor(loop.schedule, i - 1, loop.steps)
        for group, lr in zip(opt.param_groups, base_lr):
            group["lr"] = lr * factor
        loss = step(model, g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if loop.clip_grad is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), loop.clip_grad)
        opt.step()
        if i % loop.log_every == 0 or i == loop.steps:
            losses.append(float(loss.detach()))
            bar.set_postfix(loss=losses[-1], refresh=False)  # printed at the bar's own pace
        if settings is not None and loop.save_every and i % loop.save_every == 0 and i < loop.steps:
            save_atomic({"settings": plain_settings(settings),
                         "result": {"model": _cpu(model.state_dict()), "optimizer": _cpu(opt.state_dict()),
                                    "generator": g.get_state(), "step": i, "losses": losses,
                                    "seconds": time.perf_counter() - t0}}, partial)
    model.losses, model.train_seconds = losses, time.perf_counter() - t0
    if settings is not None:
        save_atomic({"settings": plain_settings(settings), "result": {"model": _cpu(model.state_dict()),
                                                                      "losses": losses,
                                                                      "seconds": model.train_seconds}}, final)
        partial.unlink(missing_ok=True)
        print(f"trained and saved checkpoint {final.name} ({model.train_seconds:.0f} s)")
    return model


def device_of(model: nn.Module) -> torch.device:
    """The device of the model's parameters (the CPU for a model without any)."""
    return next(model.parameters(), torch.empty(0)).device


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

    from .checkpoints import load_or_compute
    from .data import data_fingerprint

    sets = [data] if isinstance(data, torch.Tensor) and data.dim() == 2 else list(data)
    dim = sets[0].shape[1]
    settings = {"kind": "relu-dae", "dim": dim, "width": width, "tied": tied, "init_scale": init_scale,
                "init_seed": init_seed, "n_models": len(sets), "data": data_fingerprint(sets), **asdict(cfg)}

    def compute():
        model = ReLUDAE(dim, width, tied, len(sets), init_scale, init_seed)
        log = train_dae(model, sets, cfg, progress=progress, desc=name, device=device)
        return {"state": _cpu(model.state_dict()), "log": log.as_dict()}  # plain CPU data: loads safely anywhere

    blob = load_or_compute(name, settings, compute)
    model = ReLUDAE(dim, width, tied, len(sets), init_scale, init_seed)
    model.load_state_dict(blob["state"])
    return model, TrainLog.from_dict(blob["log"])
