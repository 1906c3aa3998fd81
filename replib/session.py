"""One call that every notebook makes first: seeds, threads, device, plotting style; and the devices the kit runs on."""
from __future__ import annotations

import os
import random

import numpy as np
import torch

DEVICES = ("auto", "cpu", "cuda")  # every notebook's DEVICE and the CLI's --device; "auto": CUDA when present


def choose_device(device: str = "auto", parameter: str = "DEVICE") -> torch.device:
    """The device named by `device` (one of DEVICES; "auto": CUDA when present, else the CPU). A bad value, or "cuda"
    on a machine without one, raises a ParameterError that names `parameter`."""
    from .params import ParameterError, check_choice

    check_choice(parameter, device, DEVICES)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ParameterError(f"parameter {parameter}='cuda' is not allowed here: no CUDA device is available; "
                             "use 'cpu' or 'auto'")
    return torch.device(device)


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a torch generator seeded the same way for explicit use."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def setup(seed: int = 0, threads: int | None = None, style: bool = True, device: str = "auto") -> torch.device:
    """Fix the seed, use a single torch thread (override with REPLIB_THREADS) and return the device the notebook
    trains and samples on (`choose_device(device)`: its DEVICE parameter).

    One thread is the default because on small layers multi-threaded torch on a busy 2-core CPU was measured up to
    40x slower, and because one thread makes timings and results reproducible run to run.
    """
    threads = int(os.environ.get("REPLIB_THREADS", threads or 1))
    torch.set_num_threads(threads)
    seed_everything(seed)
    if style:
        import matplotlib as mpl

        mpl.rcParams.update({"figure.dpi": 90, "axes.spines.top": False, "axes.spines.right": False})
    return choose_device(device)
