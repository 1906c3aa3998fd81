""""Load the checkpoint if present, else train": a small cache of results keyed by every setting that changes them.

Files are written atomically (temporary file + rename), so an interrupted run never leaves a half-written checkpoint;
a file that cannot be read, or whose stored settings differ from the requested ones, is reported and recomputed,
never silently used.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

_ROOT = Path(__file__).resolve().parents[1]


def cache_dir() -> Path:
    """Where checkpoints live: $REPLIB_CACHE if set, else data/cache/ in a source checkout, else ~/.cache/replib."""
    if os.environ.get("REPLIB_CACHE"):
        path = Path(os.environ["REPLIB_CACHE"])
    elif (_ROOT / "pyproject.toml").exists() and (_ROOT / "data").is_dir():
        path = _ROOT / "data" / "cache"
    else:
        path = Path.home() / ".cache" / "replib"
    path.mkdir(parents=True, exist_ok=True)
    return path


def settings_key(settings: dict[str, Any]) -> str:
    """A short stable hash of the settings (JSON with sorted keys; non-JSON values by their repr)."""
    text = json.dumps(settings, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def checkpoint_path(name: str, settings: dict[str, Any]) -> Path:
    return cache_dir() / f"{name}-{settings_key(settings)}.pt"


def save_atomic(obj: Any, path: Path) -> None:
    """torch.save to a temporary file in the same folder, then rename over `path` (atomic on POSIX)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_checked(path: Path, settings: dict[str, Any]) -> Any | None:
    """The stored result if `path` holds a readable checkpoint made with exactly `settings`, else None (with a
    warning that says why when a file was there)."""
    if not path.exists():
        return None
    try:
        blob = torch.load(path, weights_only=False)
        stored = blob["settings"]
        result = blob["result"]
    except Exception as err:  # corrupt or foreign file
        warnings.warn(f"checkpoint {path.name} is unreadable ({type(err).__name__}: {err}); recomputing it")
        return None
    if json.dumps(stored, sort_keys=True, default=repr) != json.dumps(settings, sort_keys=True, default=repr):
        warnings.warn(f"checkpoint {path.name} was made with other settings; recomputing it")
        return None
    return result


def load_or_compute(name: str, settings: dict[str, Any], compute: Callable[[], Any], verbose: bool = True) -> Any:
    """Return the cached result of `compute()` for these settings, computing and storing it on a miss."""
    path = checkpoint_path(name, settings)
    result = load_checked(path, settings)
    if result is not None:
        if verbose:
            print(f"loaded checkpoint {path.name}")
        return result
    result = compute()
    save_atomic({"settings": settings, "result": result}, path)
    if verbose:
        print(f"trained and saved checkpoint {path.name}")
    return result


def train_resumable(name: str, settings: dict, make: Callable[[], tuple[nn.Module, torch.optim.Optimizer]],
                    step: Callable[[nn.Module, torch.Generator], torch.Tensor], steps: int, seed: int,
                    save_every: int, show_progress: bool = True) -> nn.Module:
    """Train `make()`'s model with `step(model, generator) -> loss` for `steps` steps, cached under `settings`.

    A finished checkpoint is loaded without training. Otherwise a partial checkpoint (model, optimizer, generator
    state, step) is written atomically every `save_every` steps and picked up by the next call, so an interrupted
    run resumes; an unreadable or mismatched file is reported and ignored (see `checkpoints.load_checked`)."""
    from .widgets import progress

    model, opt = make()
    final = checkpoint_path(name, settings)
    partial = final.with_suffix(".partial.pt")
    done = load_checked(final, settings)
    if done is not None:
        model.load_state_dict(done["model"])
        model.losses, model.train_seconds = done.get("losses", []), done.get("seconds", float("nan"))
        print(f"loaded checkpoint {final.name} (trained in {model.train_seconds:.0f} s)")
        return model
    g = torch.Generator().manual_seed(seed)
    start, losses, seconds = 0, [], 0.0
    state = load_checked(partial, settings)
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        g.set_state(state["generator"])
        start, losses, seconds = state["step"], state["losses"], state.get("seconds", 0.0)
        print(f"resuming {name} from step {start} of {steps}")
    bar = progress(range(start + 1, steps + 1), desc=name, disable=not show_progress, mininterval=5.0,
                   total=steps, initial=start)
    t0 = time.perf_counter() - seconds
    for i in bar:
        loss = step(model, g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if i % save_every == 0 and i < steps:
            save_atomic({"settings": settings, "result": {"model": model.state_dict(), "optimizer": opt.state_dict(),
                                                          "generator": g.get_state(), "step": i, "losses": losses,
                                                          "seconds": time.perf_counter() - t0}},
                        partial)
    model.losses, model.train_seconds = losses, time.perf_counter() - t0
    save_atomic({"settings": settings, "result": {"model": model.state_dict(), "losses": losses,
                                                  "seconds": model.train_seconds}}, final)
    partial.unlink(missing_ok=True)
    print(f"trained and saved checkpoint {final.name} ({model.train_seconds:.0f} s)")
    return model
