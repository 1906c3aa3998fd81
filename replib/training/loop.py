"""The kit's one training loop (`fit`).

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
from dataclasses import dataclass

import torch
from torch import nn

from ..checkpoints import LIBRARIES, checkpoint_path, load_checked, save_checkpoint, why_not_cached
from ..params import check_choice, check_float, check_int
from ..widgets import progress as progress_bar

SCHEDULES = ("constant", "cosine", "cosine-tail")


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
        settings: dict | None = None, progress: bool = True, libraries: tuple[str, ...] = LIBRARIES) -> nn.Module:
    """Train `make()`'s model with its optimizer, minimising `step(model, generator) -> loss` for `loop.steps` steps.

    The model is moved to `loop.device`; `step` draws batches and noise from the CPU `generator` (seeded with
    `loop.seed`) and moves them to the model's device (`device_of(model)`). The model comes back with `losses` (the
    loss every `loop.log_every` steps) and `train_seconds`.

    With `settings`, the run is cached under `name` and those settings (`checkpoints.checkpoint_path`): a finished
    checkpoint is loaded without training; otherwise a partial checkpoint (model, optimizer, generator state, step,
    losses) is written atomically every `loop.save_every` steps and picked up by the next call, so an interrupted run
    resumes. An unreadable, mismatched or unsafe file, or one made with another minor release of `libraries` (those
    the result depends on), is reported and ignored (`checkpoints.load_checked`). Everything stored is plain CPU data,
    so a checkpoint written on a GPU loads on a CPU and the other way round."""

    model, opt = make()
    model.to(loop.device)
    final = partial = None
    if settings is not None:
        final = checkpoint_path(name, settings)
        partial = final.with_suffix(".partial.pt")
        done = load_checked(final, settings, libraries)
        if done is not None:
            model.load_state_dict(done["model"])
            model.losses, model.train_seconds = done.get("losses", []), done.get("seconds", float("nan"))
            print(f"loaded checkpoint {final.name} (trained in {model.train_seconds:.0f} s)")
            return model
    base_lr = [group["lr"] for group in opt.param_groups]  # as `make` set them: the schedule scales these
    g = torch.Generator().manual_seed(loop.seed)
    start, losses, seconds = 0, [], 0.0
    state = load_checked(partial, settings, libraries) if settings is not None else None
    if settings is not None and not final.exists() and not partial.exists() and (why := why_not_cached(name, settings)):
        print(why)
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
            elapsed = time.perf_counter() - t0
            save_checkpoint(partial, settings, {"model": _cpu(model.state_dict()), "optimizer": _cpu(opt.state_dict()),
                                                "generator": g.get_state(), "step": i, "losses": losses,
                                                "seconds": elapsed}, elapsed, libraries)
    model.losses, model.train_seconds = losses, time.perf_counter() - t0
    if settings is not None:
        save_checkpoint(final, settings, {"model": _cpu(model.state_dict()), "losses": losses,
                                          "seconds": model.train_seconds}, model.train_seconds, libraries)
        partial.unlink(missing_ok=True)
        print(f"trained and saved checkpoint {final.name} ({model.train_seconds:.0f} s)")
    return model


def device_of(model: nn.Module) -> torch.device:
    """The device of the model's parameters (the CPU for a model without any)."""
    return next(model.parameters(), torch.empty(0)).device
