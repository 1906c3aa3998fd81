""""Load the checkpoint if present, else compute": a small cache of results keyed by every setting that changes them
(`training.loop.fit` keeps its finished and partial training runs here).

Files are written atomically (temporary file + rename), so an interrupted run never leaves a half-written checkpoint;
a file that cannot be read, or whose stored settings differ from the requested ones, is reported and recomputed,
never silently used.

Checkpoints cannot run code: they are read with `torch.load(..., weights_only=True)`, which rebuilds tensors, lists,
dicts, numbers and strings and refuses anything else (a pickle can otherwise import and call any function, so a
folder of checkpoints handed to students would be arbitrary code). Callers therefore store plain data and rebuild
richer objects themselves (e.g. `training.TrainLog.from_dict`); `save_atomic` refuses to write anything else.
"""
from __future__ import annotations

import hashlib
import json
import pickle
import pickletools
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any, Callable

import torch

from .files import atomic_path, cache_dir  # noqa: F401  (cache_dir: checkpoints live there)


def settings_key(settings: dict[str, Any]) -> str:
    """A short stable hash of the settings (JSON with sorted keys; non-JSON values by their repr)."""
    text = json.dumps(settings, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def checkpoint_path(name: str, settings: dict[str, Any]) -> Path:
    return cache_dir() / f"{name}-{settings_key(settings)}.pt"


def plain_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """The settings as plain JSON data (tuples as lists, other values by their repr), which is what a checkpoint
    stores: a safe load can read it back, and it compares equal under the settings check of `load_checked`."""
    return json.loads(json.dumps(settings, sort_keys=True, default=repr))


def save_atomic(obj: Any, path: Path) -> None:
    """torch.save to `path` atomically (`files.atomic_path`).

    The temporary file is read back with a safe load first (memory-mapped, so tensors are not copied): an object that
    `load_checked` would refuse raises a TypeError here, instead of being recomputed on every later run."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
        try:
            torch.load(tmp, weights_only=True, mmap=True)
        except Exception as err:
            raise TypeError(f"{path.name} would not load safely ({_short(err)}): store only tensors, lists, dicts, "
                            "numbers and strings in a checkpoint, and rebuild richer objects after loading") from err


def _short(err: Exception) -> str:
    """One line of an error: torch's safe-load errors are a page of advice around the line that says what failed."""
    text = str(err).split("WeightsUnpickler error:")[-1]
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return f"{type(err).__name__}: {line[:300]}"


def _asks_to_import(path: Path) -> bool:
    """Whether the pickle in `path` (a torch zip's data.pkl, else the file itself) names a function or class to import,
    read off its opcodes with pickletools, which runs nothing."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                data = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
        else:
            data = path.read_bytes()
        return any(op.name in ("GLOBAL", "STACK_GLOBAL", "INST") for op, _, _ in pickletools.genops(data))
    except Exception:  # not a pickle: garbage, not code
        return False


def _refusal(path: Path, err: Exception) -> str | None:
    """The warning for a file that the safe load refused because its pickle asks to import and call something (a
    function or class: code that `weights_only=True` will not run); None for any other failure."""
    if not isinstance(err, pickle.UnpicklingError) or not _asks_to_import(path):
        return None
    found = re.search(r"GLOBAL (\S+)", str(err))  # torch names the first global it refused
    what = f" ({found.group(1)})" if found else ""
    return (f"checkpoint {path} was refused: it contains code or Python objects{what} that a safe load "
            "(torch.load with weights_only=True) will not run, so nothing in it was executed; recomputing it and "
            "overwriting the file. (A checkpoint written by an older replib, which stored numpy arrays or "
            "dataclasses, is refused the same way.)")


def load_checked(path: Path, settings: dict[str, Any]) -> Any | None:
    """The stored result if `path` holds a readable checkpoint made with exactly `settings`, else None (with a
    warning that says why when a file was there). Only plain data is loaded (`weights_only=True`): a file that asks
    to run code is refused, never executed."""
    if not path.exists():
        return None
    try:
        with warnings.catch_warnings():  # torch's note on a pickle protocol it did not write: ours below says more
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            blob = torch.load(path, weights_only=True)
        stored = blob["settings"]
        result = blob["result"]
    except Exception as err:  # refused by the safe load, corrupt, or foreign
        warnings.warn(_refusal(path, err) or f"checkpoint {path.name} is unreadable ({_short(err)}); recomputing it")
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
    save_atomic({"settings": plain_settings(settings), "result": result}, path)
    if verbose:
        print(f"trained and saved checkpoint {path.name}")
    return result


def data_fingerprint(x: torch.Tensor | list[torch.Tensor]) -> str:
    """A short hash of the data's values, so checkpoints are keyed by the exact training set."""
    import hashlib

    h = hashlib.sha256()
    for t in x if isinstance(x, (list, tuple)) else [x]:
        h.update(str(tuple(t.shape)).encode())  # set boundaries matter: [x[:2], x[2:]] != [x[:3], x[3:]]
        h.update(t.detach().float().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]
