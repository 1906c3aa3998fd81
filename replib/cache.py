"""Checkpoint packs: train once, hand the results out, load them anywhere without training.

    python -m replib.cache pack build/replib-checkpoints.tar     # every finished checkpoint of the cache, one file
    python -m replib.cache unpack build/replib-checkpoints.tar   # verified, then into the cache
    python -m replib.cache list                                  # what the cache holds

A pack is a plain tar of `manifest.json` and the checkpoint files. The manifest lists, per file, its name, size,
sha256, the settings it was trained with and what it was made with (torch, diffusers, transformers and matplotlib
versions, the machine, wall seconds, when: `checkpoints.made_with`).

**What a pack carries:** every finished checkpoint at the top of the cache folder (`NAME-KEY.pt`, written by
`checkpoints.load_or_compute` and `training.loop.fit`): the results that cost training time. Not carried: partial
checkpoints (`*.partial.pt`, an unfinished run), temporary files, and the rest of the cache folder, which every
machine makes for itself in seconds or fetches with its own check: the CLIP tokenizer files (built from `data/clip`),
the SD1.4 and CLIP stand-ins (seeded random weights), the downloaded prompt sets (each checked against its sha256)
and the SD1.4 score tables (`replib.score`, resumable). A checkpoint that does not load safely or records no versions
is left out with a message: it would be recomputed wherever it went.

**What unpacking checks, before anything lands in the cache:** every member is read into a temporary folder inside
the cache folder; the archive must be a readable tar of plain files with plain names (no folders, links, absolute
paths or `..`), each name once; the manifest must name each checkpoint once, every named file must be there with its
size and sha256, no file may be there unnamed, and each must load with `torch.load(weights_only=True)` and store the
settings and versions the manifest gives, under the key its settings give. Only then is each file moved into the
cache (an atomic rename per file; a cached file of the same name with other bytes is replaced). Any failure stops
with one line naming the file and what is wrong (`PackRefused`), and the cache is as it was. (A process killed while
unpacking can leave a `.unpack-*` folder in the cache, which nothing reads: delete it.)

The hashes catch damage (a truncated download, a flipped byte) and a manifest that does not match its files; they do
not prove who made a pack. What makes a pack from anyone safe to load is that it holds data only: checkpoints are
read with `weights_only=True` (here and in `checkpoints.load_checked`), which rebuilds tensors and plain values and
runs no code. A checkpoint made with other library releases than the installed ones is kept, and recomputed when used
(`checkpoints.load_checked` says why); `unpack` and `list` say which ones.
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import io
import json
import os
import re
import shutil
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from .files import atomic_path, cache_dir

MANIFEST = "manifest.json"
FORMAT = "replib checkpoint pack"
FORMAT_VERSION = 1
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")  # a file name: no folder, no "..", no hidden file
_CHUNK = 1 << 20


class PackRefused(SystemExit):
    """An archive that `unpack` will not put into the cache; the message names the file and what is wrong. A
    SystemExit, so `python -m replib.cache unpack` ends with the message and exit status 1 and no traceback."""


def finished_checkpoints(folder: Path | None = None) -> list[Path]:
    """The finished checkpoints at the top of the cache folder (`NAME-KEY.pt`), sorted by name: not the partial
    ones, not temporary files, nothing in subfolders."""
    from .checkpoints import CHECKPOINT_NAME

    folder = Path(folder) if folder is not None else cache_dir()
    return sorted(p for p in folder.iterdir() if p.is_file() and CHECKPOINT_NAME.fullmatch(p.name))


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _stored(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(settings, made_with) of a checkpoint, read with a safe, memory-mapped load (tensors are not copied)."""
    import torch

    blob = torch.load(path, weights_only=True, mmap=True)
    return blob["settings"], blob.get("made_with")


def pack(out: str | os.PathLike, folder: Path | None = None) -> dict[str, Any]:
    """Write every finished checkpoint of the cache (or `folder`) with its manifest into the tar `out`, atomically;
    return the manifest. A checkpoint that does not load safely, or records no versions, is left out and named."""
    from .checkpoints import one_line_error, installed_versions

    folder = Path(folder) if folder is not None else cache_dir()
    entries, skipped = [], []
    with atomic_path(out) as tmp, tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        for path in finished_checkpoints(folder):
            try:
                settings, made = _stored(path)
            except Exception as err:
                skipped.append(f"{path.name}: does not load safely ({one_line_error(err)})")
                continue
            if not isinstance(made, dict):
                skipped.append(f"{path.name}: records no versions (an older replib); it would be recomputed anyway")
                continue
            with open(path, "rb") as f:  # hashed and archived from one open file: a concurrent rewrite cannot mix
                h = hashlib.sha256()
                while chunk := f.read(_CHUNK):
                    h.update(chunk)
                info = tarfile.TarInfo(path.name)
                info.size, info.mtime, info.mode = f.tell(), int(path.stat().st_mtime), 0o644
                f.seek(0)
                tar.addfile(info, f)
            entries.append({"name": path.name, "size": info.size, "sha256": h.hexdigest(), "settings": settings,
                            "made_with": made})
        manifest = {"format": FORMAT, "format_version": FORMAT_VERSION,
                    "packed": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                    "packed_with": installed_versions(), "files": entries}
        data = json.dumps(manifest, indent=1, sort_keys=True, default=repr).encode()
        info = tarfile.TarInfo(MANIFEST)  # last: an archive cut short has no manifest, and is refused as such
        info.size, info.mtime, info.mode = len(data), int(datetime.datetime.now().timestamp()), 0o644
        tar.addfile(info, io.BytesIO(data))
    for line in skipped:
        print(f"not packed: {line}")
    return manifest


def _refuse(archive: Path, what: str) -> PackRefused:
    return PackRefused(f"refused {archive}: {what}; nothing was put into the cache")


def _read_members(archive: Path, into: Path) -> dict[str, tuple[int, str]]:
    """Every member of the tar written into `into`: {name: (size, sha256)}. Refuses what is not a plain file with a
    plain name, a name given twice, and an archive that cannot be read to its end."""
    found: dict[str, tuple[int, str]] = {}
    try:
        with tarfile.open(archive, "r:") as tar:  # a pack is a plain tar
            for member in tar:
                name = member.name
                if not _PLAIN_NAME.fullmatch(name):
                    raise _refuse(archive, f"it holds {name!r}, which is not a plain file name (a path, a hidden "
                                           "file or a way out of the cache folder)")
                if not member.isfile():
                    raise _refuse(archive, f"{name!r} is a link, folder or device, not a plain file")
                if name in found:
                    raise _refuse(archive, f"it holds {name!r} twice")
                src, h, size = tar.extractfile(member), hashlib.sha256(), 0
                with open(into / name, "wb") as dst:
                    while chunk := src.read(_CHUNK):
                        h.update(chunk)
                        dst.write(chunk)
                        size += len(chunk)
                if size != member.size:
                    raise _refuse(archive, f"{name!r} is cut short ({size} of {member.size} bytes)")
                found[name] = (size, h.hexdigest())
    except PackRefused:
        raise
    except (tarfile.TarError, EOFError, OSError, ValueError) as err:
        why = " ".join(str(err).split())  # one line
        raise _refuse(archive, f"it is not a readable tar archive, or it is truncated or damaged ({why})") from err
    return found


def _check(archive: Path, folder: Path, members: dict[str, tuple[int, str]]) -> list[dict[str, Any]]:
    """The manifest's entries, once every rule of the module docstring holds for the extracted files in `folder`."""
    from .checkpoints import CHECKPOINT_NAME, one_line_error, plain_settings, settings_key

    if MANIFEST not in members:
        raise _refuse(archive, f"it has no {MANIFEST} (not a replib pack, or cut short)")
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        entries = manifest["files"]
        if manifest.get("format") != FORMAT or not isinstance(entries, list):
            raise ValueError(f"format {manifest.get('format')!r}, not {FORMAT!r}")
        names = [e["name"] for e in entries]
    except Exception as err:
        raise _refuse(archive, f"its {MANIFEST} is not a replib manifest ({type(err).__name__}: {err})") from err
    for name in names:
        if not isinstance(name, str) or not CHECKPOINT_NAME.fullmatch(name) or not _PLAIN_NAME.fullmatch(name):
            raise _refuse(archive, f"its manifest names {name!r}, which is not a checkpoint file name")
        if names.count(name) > 1:
            raise _refuse(archive, f"its manifest names {name!r} twice")
    for name in sorted(set(members) - set(names) - {MANIFEST}):
        raise _refuse(archive, f"{name!r} is in the archive but not in its manifest")
    for entry in entries:
        name = entry["name"]
        if name not in members:
            raise _refuse(archive, f"{name!r} is in the manifest but missing from the archive")
        size, sha = members[name]
        if (size, sha) != (entry.get("size"), entry.get("sha256")):
            raise _refuse(archive, f"{name!r} does not match its manifest (size {size} vs {entry.get('size')}, "
                                   f"sha256 {sha[:12]}... vs {str(entry.get('sha256'))[:12]}...): damaged or changed")
        try:
            settings, made = _stored(folder / name)
        except Exception as err:
            raise _refuse(archive, f"{name!r} does not load as plain data with weights_only=True "
                                   f"({one_line_error(err)})") from err
        if plain_settings(settings) != entry.get("settings") or made != entry.get("made_with"):
            raise _refuse(archive, f"{name!r} stores other settings or versions than its manifest gives")
        if CHECKPOINT_NAME.fullmatch(name)["key"] != settings_key(settings):
            raise _refuse(archive, f"{name!r} is stored under another key than its settings give")
    return entries


def unpack(archive: str | os.PathLike, folder: Path | None = None) -> dict[str, str]:
    """Verify the pack `archive` completely, then move its checkpoints into the cache (or `folder`), one atomic
    rename each. Returns {name: "added" | "replaced" | "already cached"}. Raises `PackRefused` (the cache
    unchanged) when any check of the module docstring fails."""
    archive, folder = Path(archive), Path(folder) if folder is not None else cache_dir()
    if not archive.is_file():
        raise _refuse(archive, "there is no such file")
    folder.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=folder, prefix=".unpack-"))  # same file system: the renames are atomic
    try:
        entries = _check(archive, work, _read_members(archive, work))
        done = {}
        for entry in entries:
            target = folder / entry["name"]
            if target.is_file() and _sha256(target) == entry["sha256"]:
                done[entry["name"]] = "already cached"
                continue
            done[entry["name"]] = "replaced" if target.exists() else "added"
            os.replace(work / entry["name"], target)
        return done
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _usable_here(made: dict[str, Any] | None) -> str:
    """'' when the installed releases are those the checkpoint depends on, else why it will be recomputed here."""
    from .checkpoints import LIBRARIES, version_differences

    if not isinstance(made, dict) or not isinstance(made.get("versions"), dict):
        return "recomputed here: records no versions"
    minor, _ = version_differences(made, tuple(made.get("depends_on") or LIBRARIES))
    return f"recomputed here: made with {', '.join(minor)}" if minor else ""


def describe_made_with(made: dict[str, Any] | None) -> str:
    """What a checkpoint was made with, in one short phrase."""
    if not isinstance(made, dict):
        return "versions not recorded"
    versions = made.get("versions", {})
    libs = ", ".join(f"{lib} {versions.get(lib, '?')}" for lib in ("torch", "diffusers", "transformers", "matplotlib"))
    return f"{libs}, on {made.get('machine', 'an unrecorded machine')}"


def listing(folder: Path | None = None, names: set[str] | None = None) -> list[str]:
    """One line per finished checkpoint in the cache (or only those in `names`): name, size, when it was stored, what
    it was made with, the seconds it took, and whether the installed releases will use it or recompute it; then a
    line of totals."""
    folder = Path(folder) if folder is not None else cache_dir()
    lines = []
    for path in finished_checkpoints(folder):
        if names is not None and path.name not in names:
            continue
        try:
            _, made = _stored(path)
        except Exception:
            lines.append(f"{path.name}  {_size(path.stat().st_size)}  does not load safely: recomputed when used")
            continue
        made = made if isinstance(made, dict) else None
        when = (made or {}).get("when") or datetime.datetime.fromtimestamp(path.stat().st_mtime).isoformat(
            timespec="seconds")
        seconds = f"{made['seconds']:.0f} s" if made and isinstance(made.get("seconds"), (int, float)) else "? s"
        note = _usable_here(made)
        lines.append(f"{path.name}  {_size(path.stat().st_size)}  {when}  trained {seconds}  "
                     f"{describe_made_with(made)}" + (f"  [{note}]" if note else ""))
    partial = sum(1 for p in folder.glob("*.partial.pt"))
    total = sum(p.stat().st_size for p in finished_checkpoints(folder))
    lines.append(f"{len(lines)} checkpoints, {_size(total)}, in {folder}"
                 + (f" (and {partial} unfinished runs, *.partial.pt, not packed)" if partial else ""))
    return lines


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m replib.cache", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("pack", help="write every finished checkpoint into one archive").add_argument("out", type=Path)
    sub.add_parser("unpack", help="verify an archive, then put its checkpoints into the cache").add_argument(
        "archive", type=Path)
    sub.add_parser("list", help="one line per cached checkpoint")
    args = ap.parse_args(argv)
    if args.command == "pack":
        manifest = pack(args.out)
        print(f"packed {len(manifest['files'])} checkpoints from {cache_dir()} into {args.out} "
              f"({_size(args.out.stat().st_size)}, "
              f"sha256 {_sha256(args.out)})")
    elif args.command == "unpack":
        done = unpack(args.archive)
        counts = {how: sum(1 for v in done.values() if v == how) for how in ("added", "replaced", "already cached")}
        print(f"verified {len(done)} checkpoints of {args.archive} (sha256 {_sha256(args.archive)}): "
              + ", ".join(f"{n} {how}" for how, n in counts.items()) + f", in {cache_dir()}")
        for line in listing(names=set(done))[:-1]:
            if "recomputed here" in line:
                print(f"note: {line}")
    else:
        print("\n".join(listing()))


if __name__ == "__main__":
    sys.exit(main())
