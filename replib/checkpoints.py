""""Load the checkpoint if present, else compute": a small cache of results keyed by every setting that changes them
(`training.loop.fit` keeps its finished and partial training runs here; `replib.cache` packs them for hand-out).

Files are written atomically (temporary file + rename), so an interrupted run never leaves a half-written checkpoint;
a file that cannot be read, whose stored settings differ from the requested ones, or that was made with other
library releases, is reported and recomputed, never silently used.

What decides whether a checkpoint is this run's result, and why:

- **In the key** (the file name `NAME-KEY.pt`, KEY = `settings_key(settings)`, with the settings stored inside the
  file and compared on load): everything the caller's code says changes the result. Each trainer puts in the model
  kind and a version number bumped by hand when its model or loss code changes (`kind`, `version`), the
  architecture (widths, channels, text encoder size, tokenizer length), every training setting (its dataclass:
  steps, learning rate, batch, schedule, noise, seed) and `data`, a sha256 fingerprint of the exact training tensors
  (`data_fingerprint`). The fingerprint covers whatever made the data: another subset, seed or data-set release, and
  the glyph images of notebooks 06-07, which the installed matplotlib draws — another matplotlib that renders a pixel
  differently gives another key, so it can never load the old model (`why_not_cached` then names the matplotlib
  versions).
- **Beside the key** (`made_with`, stored in the file and checked on load): the torch, diffusers and transformers
  releases the result was computed with. Another *minor* release (2.13 vs 2.12) can change defaults, kernels or
  initialisation and so train to another result: the checkpoint is recomputed with a warning that names both
  versions. A patch release (2.13.1 vs 2.13.0) fixes bugs without meaning to change results: the checkpoint is used,
  with a printed note naming both. The build tag (`+cpu`, `+cu128`) is ignored: `training.loop.fit` draws every batch
  and noise from a seeded CPU generator and stores CPU tensors, so a model trained on a GPU is the same run (up to
  floating-point rounding) as on a laptop, which is what lets an instructor's pack load anywhere. Each caller names
  the libraries its result depends on (`libraries`: the DAE banks and the toy only torch, the UNets diffusers too,
  the text-to-image model transformers as well), so a diffusers upgrade retrains only what diffusers built. A
  checkpoint with no `made_with` (written by replib 0.2 or earlier) cannot show what it was made with and is
  recomputed with a message. The versions are kept out of the hash so that a version change says why it retrains,
  and existing keys stay the same.
- **Recorded, not checked**: matplotlib and Python versions, the machine (CPU, GPU when used), the wall seconds and
  the time it was stored — what `python -m replib.cache list` and a pack's manifest show.

Checkpoints cannot run code: they are read with `torch.load(..., weights_only=True)`, which rebuilds tensors, lists,
dicts, numbers and strings and refuses anything else (a pickle can otherwise import and call any function, so a
folder of checkpoints handed to students would be arbitrary code). Callers therefore store plain data and rebuild
richer objects themselves (e.g. `training.TrainLog.from_dict`); `save_atomic` refuses to write anything else.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import os
import pickle
import pickletools
import platform
import re
import time
import warnings
import zipfile
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import torch

from .files import atomic_path, cache_dir
from .machine import cpu_model

# The libraries whose release can change a trained result (see the module docstring); a caller that does not say
# which of them its result depends on is checked against all three.
LIBRARIES = ("torch", "diffusers", "transformers")
RECORDED = (*LIBRARIES, "matplotlib")  # matplotlib draws the glyph images: recorded, covered by the data fingerprint
CHECKPOINT_NAME = re.compile(r"(?P<name>.+)-(?P<key>[0-9a-f]{16})\.pt")  # a finished checkpoint's file name


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
            raise TypeError(f"{path.name} would not load safely ({one_line_error(err)}): store only tensors, lists, dicts, "
                            "numbers and strings in a checkpoint, and rebuild richer objects after loading") from err


def one_line_error(err: Exception) -> str:
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


def installed_versions() -> dict[str, str]:
    """The installed release of each library in `RECORDED` ("not installed" if absent), read from the package
    metadata, so nothing heavy is imported."""
    out = {}
    for lib in RECORDED:
        try:
            out[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            out[lib] = "not installed"
    return out


def _machine() -> str:
    """The CPU (and the GPU, when this process has used one) a result was computed on, for the record."""
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_initialized() else ""
    return f"{cpu_model()}, {os.cpu_count()} CPUs{gpu}"


def made_with(seconds: float, libraries: tuple[str, ...] = LIBRARIES) -> dict[str, Any]:
    """What a checkpoint records beside its result: library versions, the libraries its result depends on (the ones
    `load_checked` compares), Python, the machine, the wall seconds it took and when it was stored."""
    return {"versions": installed_versions(), "depends_on": list(libraries), "python": platform.python_version(),
            "machine": _machine(), "seconds": round(float(seconds), 1),
            "when": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}


def _release(version: str, parts: int) -> tuple[int, ...]:
    """The first `parts` numbers of a version, without the build tag: "2.13.0+cu128" -> (2, 13) for parts=2."""
    return tuple(int(n) for n in re.findall(r"\d+", version.split("+")[0])[:parts])


def version_differences(made: dict[str, Any], libraries: tuple[str, ...] = LIBRARIES) -> tuple[list[str], list[str]]:
    """(libraries made with another minor release, libraries made with another patch release of the same minor one),
    each as "torch 2.12.0 (here 2.13.0)", comparing the versions recorded in `made` (a `made_with` dict) with the
    installed ones. The first list means another result; the second, the same one (see the module docstring)."""
    here, there = installed_versions(), made.get("versions", {})
    minor, patch = [], []
    for lib in libraries:
        theirs, ours = str(there.get(lib, "unknown")), here.get(lib, "not installed")
        said = f"{lib} {theirs} (here {ours})"
        if theirs == ours:
            continue
        if _release(theirs, 2) != _release(ours, 2) or not _release(theirs, 2):
            minor.append(said)
        elif _release(theirs, 3) != _release(ours, 3):
            patch.append(said)
    return minor, patch


def save_checkpoint(path: Path, settings: dict[str, Any], result: Any, seconds: float,
                    libraries: tuple[str, ...] = LIBRARIES) -> None:
    """Store `result` with its settings (as plain data) and what it was made with (`made_with`), atomically."""
    save_atomic({"settings": plain_settings(settings), "result": result,
                 "made_with": made_with(seconds, libraries)}, path)


def load_checked(path: Path, settings: dict[str, Any], libraries: tuple[str, ...] = LIBRARIES) -> Any | None:
    """The stored result if `path` holds a readable checkpoint made with exactly `settings` and with the installed
    minor releases of `libraries`, else None (with a warning that says why when a file was there). Only plain data
    is loaded (`weights_only=True`): a file that asks to run code is refused, never executed."""
    if not path.exists():
        return None
    try:
        with warnings.catch_warnings():  # torch's note on a pickle protocol it did not write: ours below says more
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            blob = torch.load(path, weights_only=True)
        stored = blob["settings"]
        result = blob["result"]
    except Exception as err:  # refused by the safe load, corrupt, or foreign
        warnings.warn(_refusal(path, err) or f"checkpoint {path.name} is unreadable ({one_line_error(err)}); recomputing it")
        return None
    if json.dumps(stored, sort_keys=True, default=repr) != json.dumps(settings, sort_keys=True, default=repr):
        warnings.warn(f"checkpoint {path.name} was made with other settings; recomputing it")
        return None
    made = blob.get("made_with")
    if not isinstance(made, dict) or not isinstance(made.get("versions"), dict):
        warnings.warn(f"checkpoint {path.name} does not record the torch, diffusers and transformers versions it was "
                      "made with (written by replib 0.2 or earlier), so it cannot be shown to be this installation's "
                      "result; recomputing it")
        return None
    minor, patch = version_differences(made, libraries)
    if minor:
        warnings.warn(f"checkpoint {path.name} was made with {', '.join(minor)}: another release can train to "
                      "another result; recomputing it")
        return None
    if patch:
        print(f"note: {path.name} was made with {', '.join(patch)}: the same minor release, so the same result; "
              "using it")
    return result


def why_not_cached(name: str, settings: dict[str, Any]) -> str | None:
    """When the cache has no checkpoint for these settings but has others stored under the same `name`: which
    settings differ from the closest of them, in words (None when there is none). Printed before training, so a
    rerun that trains again says why (another data fingerprint, for instance glyphs drawn by another matplotlib)."""
    want = plain_settings(settings)
    closest = None
    for path in sorted(cache_dir().glob("*.pt")):
        found = CHECKPOINT_NAME.fullmatch(path.name)
        if not found or found["name"] != name:
            continue
        try:
            blob = torch.load(path, weights_only=True, mmap=True)
            stored, made = dict(blob["settings"]), blob.get("made_with") or {}
        except Exception:  # unreadable: nothing to compare with
            continue
        differ = sorted(k for k in set(want) | set(stored) if want.get(k, "(none)") != stored.get(k, "(none)"))
        if differ and (closest is None or len(differ) < len(closest[1])):
            closest = (path, differ, stored, made)
    if closest is None:
        return None
    path, differ, stored, made = closest
    return (f"no checkpoint of {name} with these settings yet; the cached {path.name} was made with other "
            f"settings: {'; '.join(_difference(k, stored, want, made) for k in differ)}")


def _difference(key: str, stored: dict[str, Any], want: dict[str, Any], made: dict[str, Any]) -> str:
    """One setting that differs, in words: the data fingerprint says what can change it; short values are shown."""
    if key in ("data", "real"):  # fingerprints of the training tensors (`data_fingerprint`)
        there = made.get("versions", {}).get("matplotlib", "unknown")
        here = installed_versions()["matplotlib"]
        drawn = (f"or glyphs drawn differently: matplotlib {there} then, {here} now, and the installed matplotlib "
                 "draws the glyph images" if there != here else f"matplotlib {here} then and now")
        return f"{key}: the training data differ (another data set, subset or seed; {drawn})"

    def short(value: Any) -> str:
        text = "(none)" if value == "(none)" else json.dumps(value, default=repr)
        return text if len(text) <= 40 else text[:37] + "..."
    return f"{key}: {short(stored.get(key, '(none)'))} then, {short(want.get(key, '(none)'))} now"


def load_or_compute(name: str, settings: dict[str, Any], compute: Callable[[], Any], verbose: bool = True,
                    libraries: tuple[str, ...] = LIBRARIES) -> Any:
    """Return the cached result of `compute()` for these settings, computing and storing it on a miss. `libraries`:
    those whose release the result depends on (see the module docstring)."""
    path = checkpoint_path(name, settings)
    result = load_checked(path, settings, libraries)
    if result is not None:
        if verbose:
            print(f"loaded checkpoint {path.name}")
        return result
    if verbose and not path.exists() and (why := why_not_cached(name, settings)):
        print(why)
    start = time.perf_counter()
    result = compute()
    save_checkpoint(path, settings, result, time.perf_counter() - start, libraries)
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
