"""Loading pretrained models without ever waiting on a network: the order SD1.4 and CLIP are both loaded in.

1. a local folder (`path=` or an environment variable) that must hold the model's index file;
2. the user's Hugging Face cache, with `local_files_only=True`;
3. a download, only when a 3-second TCP test says the hub answers (never when HF_HUB_OFFLINE is set).

Anything else raises the caller's "unavailable" error with its instructions, within seconds. A folder written by one
of the kit's `build_standin…` functions carries `STANDIN_MARK`, so whatever loads it knows its numbers mean nothing.
"""
from __future__ import annotations

import os
import socket
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

STANDIN_MARK = "REPLIB_STANDIN.txt"  # written into a stand-in's folder, so loading it says so
HUB_HOST = ("huggingface.co", 443)
T = TypeVar("T")


def hub_reachable(timeout: float = 3.0) -> bool:
    """Can a TCP connection to the Hugging Face hub be opened within `timeout` seconds? False when HF_HUB_OFFLINE is
    set. Used so that an offline machine fails at once instead of retrying for minutes."""
    if os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0"):
        return False
    try:
        with socket.create_connection(HUB_HOST, timeout=timeout):
            return True
    except OSError:
        return False


@contextmanager
def quiet_loading():
    """No 'Loading pipeline components' / 'Loading weights' / 'Writing model shards' bars (they fill a notebook's
    output); download bars, which come from huggingface_hub, are left on."""
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    dlog.disable_progress_bar()
    tlog.disable_progress_bar()
    try:
        yield
    finally:
        dlog.enable_progress_bar()
        tlog.enable_progress_bar()


def load_local_first(load: Callable[..., T], model_id: str, label: str, path: str | os.PathLike | None, env_var: str,
                     index_file: str, how_to: str, unavailable: type[Exception], allow_download: bool = True,
                     **hub_kwargs) -> tuple[T, str, bool]:
    """`load(source, **kwargs)` from the first place that has the model (see the module docstring). Returns (what
    `load` returned, where it came from, whether it is a kit stand-in). `hub_kwargs` (e.g. `revision=`) go to the
    cache and hub attempts; `label` names the model in `source`; `how_to` is the message of `unavailable`."""
    path = path or os.environ.get(env_var) or None
    if path is not None:
        folder = Path(path).expanduser()
        if not (folder / index_file).is_file():
            raise unavailable(f"{folder} is not a folder with the model (no {index_file}).\n{how_to}")
        return load(str(folder)), str(folder), (folder / STANDIN_MARK).exists()
    try:  # the user's cache, no network
        return load(model_id, local_files_only=True, **hub_kwargs), f"{label} (cache)", False
    except (OSError, ValueError):
        pass
    if not (allow_download and hub_reachable()):
        raise unavailable(how_to)
    try:
        return load(model_id, **hub_kwargs), label, False
    except OSError as err:  # gated, no token, disk full, ...
        raise unavailable(f"download of {model_id} failed: {err}\n{how_to}") from err
