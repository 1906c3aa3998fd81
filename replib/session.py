"""One call that every notebook makes first: seeds, threads, device, plotting style."""
from __future__ import annotations

import os
import random

import numpy as np
import torch


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a torch generator seeded the same way for explicit use."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def setup(seed: int = 0, threads: int | None = None, style: bool = True) -> torch.device:
    """Fix the seed, use a single torch thread (override with REPLIB_THREADS) and return the device.

    One thread is the default because on small layers multi-threaded torch on a busy 2-core CPU was measured up to
    40x slower, and because one thread makes timings and results reproducible run to run.
    """
    threads = int(os.environ.get("REPLIB_THREADS", threads or 1))
    torch.set_num_threads(threads)
    seed_everything(seed)
    if style:
        import matplotlib as mpl

        mpl.rcParams.update({"figure.dpi": 90, "axes.spines.top": False, "axes.spines.right": False})
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
