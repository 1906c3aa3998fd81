"""Where the kit keeps its files, and the one way it writes them.

`cache_dir` is the folder every cached result lives under (checkpoints, downloaded prompt sets, tokenizer files,
stand-in weights, detector scores). `atomic_path` is the only way the kit writes a file that another run may read:
the content goes to a temporary file in the same folder, which is renamed over the target only when complete (atomic
on POSIX), so an interrupted run never leaves a half-written file. No torch here: plain prompt loading imports this.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]


def cache_dir() -> Path:
    """Where cached results live: $REPLIB_CACHE if set, else data/cache/ in a source checkout, else ~/.cache/replib."""
    if os.environ.get("REPLIB_CACHE"):
        path = Path(os.environ["REPLIB_CACHE"])
    elif (_ROOT / "pyproject.toml").exists() and (_ROOT / "data").is_dir():
        path = _ROOT / "data" / "cache"
    else:
        path = Path.home() / ".cache" / "replib"
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """`with atomic_path(target) as tmp: write tmp`: on a clean exit `tmp` is renamed over `target`; on an error the
    target is left as it was and `tmp` is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_bytes_atomic(data: bytes, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(text: str, path: str | os.PathLike) -> None:
    """UTF-8 with "\\n" line ends on every platform."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)
