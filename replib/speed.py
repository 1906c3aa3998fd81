"""How fast the kit's machinery is, measured on this machine: the training loop (`training.loop.fit`) against a bare
PyTorch loop on the same model and step, and a batched DAE bank against a Python loop over single DAEs.

`benchmarks/run.py` prints both (the README reports them); notebook 02 shows the second on its own sweep. Timings
take the best of a few interleaved repeats, which is what a busy machine's noise least disturbs.
"""
from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import nn


def best_of(fn: Callable[[], object], repeats: int = 3) -> float:
    """The shortest wall time of `repeats` calls of `fn`, in seconds."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def bare_loop(make: Callable[[], tuple[nn.Module, torch.optim.Optimizer]],
              step: Callable[[nn.Module, torch.Generator], torch.Tensor], steps: int, seed: int = 0) -> nn.Module:
    """The plainest PyTorch loop over the same `make` and `step` that `training.loop.fit` takes: no schedule, no logging,
    no progress bar, no checkpoint. What the loop's overhead is measured against."""
    model, opt = make()
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        loss = step(model, g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model


def loop_overhead(make, step, steps: int, repeats: int = 3) -> dict[str, float]:
    """Seconds per step of `training.loop.fit` (no checkpoint, the loss logged every step, the progress bar off) and of
    `bare_loop`, best of `repeats` each (interleaved), and their ratio (1.0: no overhead). Both end with the same
    weights (a constant schedule scales the learning rate by 1.0)."""
    from .training.loop import Loop, fit

    bare_loop(make, step, min(steps, 5))  # warm-up: first calls pay for allocations and lazy initialisation
    fit_s, bare_s = [], []
    for _ in range(repeats):
        fit_s.append(best_of(lambda: fit(make, step, Loop(steps), progress=False), 1))
        bare_s.append(best_of(lambda: bare_loop(make, step, steps), 1))
    return {"fit s/step": min(fit_s) / steps, "bare s/step": min(bare_s) / steps,
            "ratio": min(fit_s) / min(bare_s)}


def bank_vs_loop(sets: list[torch.Tensor], cfg, width: int, repeats: int = 2) -> dict[str, float]:
    """Seconds to train one DAE per data set as one batched bank (`dae.ReLUDAE(n_models=M)`) and as a Python loop over
    M single DAEs (same settings), best of `repeats`, and the speed-up of the bank."""
    from .models.dae import ReLUDAE
    from .training.dae import train_dae

    d = sets[0].shape[1]
    bank = best_of(lambda: train_dae(ReLUDAE(d, width, n_models=len(sets)), sets, cfg, progress=False), repeats)
    loop = best_of(lambda: [train_dae(ReLUDAE(d, width), x, cfg, progress=False) for x in sets], repeats)
    return {"models": len(sets), "pixels": d, "bank s": bank, "loop s": loop, "speed-up": loop / bank}
