"""How fast the kit's machinery is, measured on this machine: the training loop (`training.loop.fit`) against a bare
PyTorch loop on the same model and step, and a batched DAE bank against a Python loop over single DAEs.

`benchmarks/run.py` prints both (the README reports them); notebook 02 shows the second on its own sweep. Timings
take the best of a few interleaved repeats (`interleaved`), which is what a busy machine's noise least disturbs, and
report CPU seconds beside wall seconds: the CPU time of this process does not count the time another process or the
host took the core away, so a CPU-time ratio survives a machine that is busy while it is measured.
"""
from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import nn


def best_of(fn: Callable[[], object], repeats: int = 3) -> float:
    """The shortest wall time of `repeats` calls of `fn`, in seconds."""
    return interleaved({"fn": fn}, repeats)["fn"]["wall s"]


def interleaved(fns: dict[str, Callable[[], object]], repeats: int = 3) -> dict[str, dict[str, float]]:
    """Call each of `fns` `repeats` times in turn (a, b, a, b, ...) so that a slow spell falls on all of them, and
    return, for each name, its shortest wall time ("wall s") and shortest CPU time of this process ("cpu s")."""
    best = {name: {"wall s": float("inf"), "cpu s": float("inf")} for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            w0, c0 = time.perf_counter(), time.process_time()
            fn()
            w, c = time.perf_counter() - w0, time.process_time() - c0
            best[name] = {"wall s": min(best[name]["wall s"], w), "cpu s": min(best[name]["cpu s"], c)}
    return best


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
    t = interleaved({"fit": lambda: fit(make, step, Loop(steps), progress=False),
                     "bare": lambda: bare_loop(make, step, steps)}, repeats)
    fit_s, bare_s = t["fit"]["wall s"], t["bare"]["wall s"]
    return {"fit s/step": fit_s / steps, "bare s/step": bare_s / steps, "ratio": fit_s / bare_s}


def bank_vs_loop(sets: list[torch.Tensor], cfg, width: int, repeats: int = 3) -> dict[str, float]:
    """Seconds to train one DAE per data set as one batched bank (`dae.ReLUDAE(n_models=M)`) and as a Python loop over
    M single DAEs (same settings), best of `repeats` interleaved calls each, and the bank's speed-up in wall time and
    in CPU time (the work each way costs, whatever else the machine is doing)."""
    from .models.dae import ReLUDAE
    from .training.dae import train_dae

    d = sets[0].shape[1]
    t = interleaved({"bank": lambda: train_dae(ReLUDAE(d, width, n_models=len(sets)), sets, cfg, progress=False),
                     "loop": lambda: [train_dae(ReLUDAE(d, width), x, cfg, progress=False) for x in sets]}, repeats)
    bank, loop = t["bank"], t["loop"]
    return {"models": len(sets), "pixels": d, "bank s": bank["wall s"], "loop s": loop["wall s"],
            "speed-up": loop["wall s"] / bank["wall s"], "speed-up (CPU)": loop["cpu s"] / bank["cpu s"]}
