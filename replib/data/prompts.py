"""The two public prompt sets used to evaluate memorization detection on Stable Diffusion v1.4.

- "memorized": Webster's 500 memorized SD1.4 prompts as redistributed by Wen et al. (ICLR 2024), JSON lines with
  fields caption (the prompt), index (LAION-2B row) and url.
- "nonmemorized": the 500 non-memorized prompts (COCO, Lexica, Tuxemon, GPT-4) used by Jeon et al. (ICML 2025), one
  per line.

The files are not shipped with the kit: they are downloaded once from their public source into a cache folder, and
every load checks their sha256, so a result can only ever be computed from exactly the published prompts. For offline
use, point the environment variable REPLIB_PROMPTS_DIR (or the `local_dir=` argument) at a folder holding copies;
then nothing is downloaded. Every failure raises :class:`PromptSetError` with a message that says what to do.

`load_or_examples` is what the SD1.4 notebooks call: the published set, or, only for the stand-in model (whose scores
mean nothing anyway), the kit's own example prompts (`replib.data.example_prompts`) when the published set cannot be
loaded, labelled `example=True` so that banners and tables can say so. With the real model it raises like
`load_prompt_set`.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import os
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..files import cache_dir as files_cache_dir
from ..files import write_bytes_atomic

ENV_VAR = "REPLIB_PROMPTS_DIR"
DOWNLOAD_TIMEOUT = 20.0  # seconds a download may take
STANDIN_TIMEOUT = 5.0  # seconds the stand-in waits for a download before it takes the example prompts

# Where each file is downloaded from: one line to change if a repository moves or renames its branch.
URLS: dict[str, str] = {
    "memorized": "https://raw.githubusercontent.com/YuxinWenRick/diffusion_memorization/main/"
                 "examples/sdv1_500_memorized.jsonl",
    "nonmemorized": "https://raw.githubusercontent.com/Dongjae0324/sharpness_memorization_diffusion/main/"
                    "prompts/sd1_nmem.txt",
}


class PromptSetError(RuntimeError):
    """A prompt set could not be loaded (missing, corrupted, unreachable or malformed); the message says why."""


@dataclass(frozen=True)
class PromptSource:
    """Where a prompt set comes from and how to check and read it.

    `filename` is the name in the public repository (and in the cache); `alt_names` are other names accepted in a
    local folder; `kind` is "jsonl" (one JSON object per line, prompt in "caption") or "lines" (one prompt a line);
    `size` is the number of prompts in the published file (so a row index can be checked before it is loaded).
    """

    name: str
    filename: str
    url: str
    sha256: str
    alt_names: tuple[str, ...] = ()
    kind: str = "lines"
    size: int = 500


PROMPT_SETS: dict[str, PromptSource] = {
    "memorized": PromptSource(
        name="memorized",
        filename="sdv1_500_memorized.jsonl",
        url=URLS["memorized"],
        sha256="8eb16c6ff1c7195cddf26b3207bdc7c6a905a20162c6070d79fe60336a525c60",
        kind="jsonl",
    ),
    "nonmemorized": PromptSource(
        name="nonmemorized",
        filename="sd1_nmem.txt",
        url=URLS["nonmemorized"],
        sha256="628796e195391501591859f55e249cca70e8fcaa7ceb33aac1d753fbfe4d8a4c",
        alt_names=("sd1_nonmemorized_500.txt",),
        kind="lines",
    ),
}


@dataclass
class PromptSet:
    """The prompts of one set, in file order, with the checked file they came from.

    `records` keeps the full JSON objects (caption, index, url) of a "jsonl" set, aligned with `prompts`; None for
    a plain-text set. `example` is True for the kit's example prompts standing in for a published set (named
    "<set>-examples", with no file and no checksum); `note` then says why the published set was not used.
    """

    name: str
    prompts: list[str]
    path: Path | None
    sha256: str | None
    records: list[dict[str, Any]] | None = None
    example: bool = False
    note: str = ""

    def __len__(self) -> int:
        return len(self.prompts)

    def describe(self) -> str:
        """One line for a table: the file and its checksum, or that these are the kit's example prompts."""
        if self.example:
            return f"{len(self)} kit-written examples, NOT the published set"
        return f"{len(self)} prompts, sha256 {self.sha256[:12]}..."


def load_prompt_set(name: str, local_dir: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
                    timeout: float = DOWNLOAD_TIMEOUT) -> PromptSet:
    """Load the prompt set `name` ("memorized" or "nonmemorized"), its sha256 checked.

    Files are read only from `local_dir` (else $REPLIB_PROMPTS_DIR) when one is given, so offline runs never touch
    the network; otherwise from `cache_dir` (default: the kit's cache folder / "prompts"), downloading once with a
    `timeout`-second limit when the file is not there yet.
    """
    source = _source(name)
    folder = local_dir if local_dir is not None else os.environ.get(ENV_VAR) or None
    if folder is not None:
        path = _find_local(source, Path(folder))
        data = _read_checked(source, path, delete_if_wrong=False)
    else:
        path = Path(cache_dir) if cache_dir is not None else _default_cache_dir()
        path = path / source.filename
        if not path.exists():
            _download(source, path, timeout)
        data = _read_checked(source, path, delete_if_wrong=True)
    prompts, records = _parse(source, data.decode("utf-8"), path)
    if not prompts:
        raise PromptSetError(f"prompt set {source.name!r}: {path} holds no prompts (only blank lines); "
                             f"replace it with the published file ({source.url})")
    return PromptSet(source.name, prompts, path, source.sha256, records)


def load_or_examples(name: str, standin: bool, local_dir: str | os.PathLike | None = None,
                     cache_dir: str | os.PathLike | None = None) -> PromptSet:
    """The published set `name` (as `load_prompt_set` finds it); with the stand-in model only, the kit's example
    prompts when the published set cannot be downloaded and no folder holds it, so that stand-in mode needs neither.

    The real model never falls back: its numbers are only worth anything on the published, checksummed prompts, so
    there the `PromptSetError` saying where to get them is raised. Neither does a folder that was asked for
    (`local_dir` or $REPLIB_PROMPTS_DIR) but holds no valid copy: that is a mistake to report, not to paper over.
    The stand-in gives a download `STANDIN_TIMEOUT` seconds.
    """
    try:
        return load_prompt_set(name, local_dir, cache_dir, timeout=STANDIN_TIMEOUT if standin else DOWNLOAD_TIMEOUT)
    except PromptSetError as err:
        if not standin or local_dir is not None or os.environ.get(ENV_VAR) or name not in PROMPT_SETS:
            raise
        return example_set(name, note=str(err))


def example_set(name: str, note: str = "") -> PromptSet:
    """The kit's example prompts that take the place of the published set `name` (see `replib.data.example_prompts`);
    `note` says why they are used."""
    from .example_prompts import EXAMPLES

    source = _source(name)
    return PromptSet(f"{source.name}-examples", list(EXAMPLES[source.name]), None, None, example=True, note=note)


def read_prompt_file(path: str | os.PathLike) -> list[str]:
    """Prompts from a file of one's own, read as the public sets are: .jsonl (field "caption") or one per line."""
    path = Path(path)
    source = PromptSource(path.stem, path.name, "", "", kind="jsonl" if path.suffix == ".jsonl" else "lines")
    return _parse(source, path.read_text(encoding="utf-8"), path)[0]


def sample(prompt_set: PromptSet | Sequence[str], n: int, seed: int) -> list[str]:
    """`n` distinct prompts of the set (distinct positions, in random order), the same ones for the same `seed`.

    Drawn with numpy's default_rng(seed), so a subset used in an experiment can be named by (set, n, seed).
    """
    prompts = prompt_set.prompts if isinstance(prompt_set, PromptSet) else list(prompt_set)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise PromptSetError(f"sample: n must be an integer >= 0, got {n!r}")
    if n > len(prompts):
        raise PromptSetError(f"sample: cannot draw n={n} distinct prompts from a set of size {len(prompts)}; "
                             f"use n <= {len(prompts)}")
    picks = np.random.default_rng(seed).choice(len(prompts), size=int(n), replace=False)
    return [prompts[i] for i in picks]


def _source(name: str) -> PromptSource:
    if name not in PROMPT_SETS:
        allowed = ", ".join(repr(k) for k in PROMPT_SETS)
        raise PromptSetError(f"unknown prompt set {name!r}: use one of {allowed}")
    return PROMPT_SETS[name]


def _default_cache_dir() -> Path:
    return files_cache_dir() / "prompts"


def _find_local(source: PromptSource, folder: Path) -> Path:
    """The first of the accepted file names present in `folder`."""
    names = (source.filename, *source.alt_names)
    for name in names:
        if (folder / name).is_file():
            return folder / name
    where = "is not a directory" if not folder.is_dir() else "holds none of them"
    raise PromptSetError(f"prompt set {source.name!r}: looked for {', '.join(names)} in {folder}, which {where}. "
                         f"Put a copy of {source.url} there, or unset {ENV_VAR} (and local_dir) to download it.")


def _download(source: PromptSource, path: Path, timeout: float) -> None:
    """Fetch the file once (no retries) and write it atomically, so an interrupted download leaves nothing behind."""
    try:
        with urllib.request.urlopen(source.url, timeout=timeout) as response:
            data = response.read()
    except (OSError, http.client.HTTPException, ValueError) as err:  # URLError and timeouts are OSErrors
        raise PromptSetError(
            f"prompt set {source.name!r}: could not download {source.url} ({type(err).__name__}: {err}). "
            f"Offline? Download {source.filename} elsewhere and set {ENV_VAR}=/path/to/folder (or pass local_dir=)."
        ) from err
    write_bytes_atomic(data, path)


def _read_checked(source: PromptSource, path: Path, delete_if_wrong: bool) -> bytes:
    """The bytes of `path` if their sha256 is the published one; a wrong cached copy is deleted."""
    data = path.read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if actual == source.sha256:
        return data
    if delete_if_wrong:
        path.unlink(missing_ok=True)
        todo = "it was deleted; run again to download it afresh"
    else:
        todo = f"replace it with the published file ({source.url})"
    raise PromptSetError(f"prompt set {source.name!r}: wrong sha256 for {path}: expected {source.sha256}, "
                         f"got {actual}; {todo}")


def _parse(source: PromptSource, text: str, path: Path) -> tuple[list[str], list[dict[str, Any]] | None]:
    """Prompts in file order, whitespace stripped and blank lines skipped (plus the JSON records for "jsonl")."""
    lines = [(i, line.strip()) for i, line in enumerate(text.splitlines(), start=1) if line.strip()]
    if source.kind == "lines":
        return [line for _, line in lines], None
    records = []
    for number, line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise PromptSetError(f"prompt set {source.name!r}: {path} line {number} is not valid JSON ({err})") from err
        if not isinstance(record, dict) or not isinstance(record.get("caption"), str) or not record["caption"].strip():
            raise PromptSetError(f"prompt set {source.name!r}: {path} line {number} has no non-empty 'caption'")
        records.append(record)
    return [r["caption"].strip() for r in records], records
