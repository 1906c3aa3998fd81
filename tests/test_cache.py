"""replib.cache: a pack carries every finished checkpoint with a manifest, unpacking checks everything before the cache
changes and refuses a damaged or forged archive; and checkpoints.load_checked: a checkpoint made with other library
releases, or with none recorded, is recomputed with a message that says why."""
import hashlib
import io
import json
import subprocess
import sys
import tarfile
import warnings
from pathlib import Path

import pytest
import torch
from tiny import Counter, make as _make, step as _step  # noqa: I001  (the kit's tests' shared helpers)

import replib.checkpoints as ck
from replib import cache as packs
from replib.checkpoints import checkpoint_path, load_or_compute
from replib.training.loop import Loop, fit

ROOT = Path(__file__).resolve().parents[1]
SIGNATURE = torch.arange(1000.0) * 0.5  # tensor data distinctive enough to find in an archive's raw bytes


def fill(cache: Path) -> dict[str, dict]:
    """Three small checkpoints as the kit writes them, plus what a pack must leave out: an unfinished run, a
    temporary file and a folder of other cached things. Returns {file name: settings}."""
    runs = {"01-dae": ({"kind": "relu-dae", "data": "f00d", "steps": 30}, ("torch",)),
            "05-unet-n16": ({"kind": "unet-ddpm", "data": "beef", "steps": 8}, ("torch", "diffusers")),
            "06-t2i": ({"kind": "text2image", "data": "cafe", "steps": 4}, ck.LIBRARIES)}
    for i, (name, (settings, libraries)) in enumerate(runs.items()):
        load_or_compute(name, settings, lambda i=i: {"w": SIGNATURE + 1000 * i, "losses": [1.0, 0.5]}, verbose=False,
                        libraries=libraries)
    partial = checkpoint_path("07-run", {"n": 1}).with_suffix(".partial.pt")
    ck.save_checkpoint(partial, {"n": 1}, {"step": 3}, 1.0)
    (cache / "05-unet-n16-0123456789abcdef.pt12345.tmp").write_bytes(b"half written")
    (cache / "clip-tokenizer").mkdir()
    (cache / "clip-tokenizer" / "vocab.json").write_text("{}")
    return {checkpoint_path(name, s).name: s for name, (s, _) in runs.items()}


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` with its bytes: what "the cache is unchanged" compares."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def members(archive: Path) -> list[tuple[str, bytes]]:
    with tarfile.open(archive) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar]


def write_tar(path: Path, entries: list[tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def packed(cache, tmp_path):
    """(archive, {name: settings}) of a filled cache; the cache is then emptied of checkpoints."""
    names = fill(cache)
    archive = tmp_path / "pack.tar"
    packs.pack(archive)
    return archive, names


# ---------------------------------------------------------------- pack -> empty cache -> unpack
def test_pack_carries_every_finished_checkpoint_and_its_manifest(packed, cache):
    archive, names = packed
    inside = dict(members(archive))
    assert sorted(inside) == sorted([*names, "manifest.json"]), "no partial run, temporary file or folder is packed"
    manifest = json.loads(inside["manifest.json"])
    assert manifest["format"] == packs.FORMAT and manifest["packed_with"]["torch"] == torch.__version__
    for entry in manifest["files"]:
        data = (cache / entry["name"]).read_bytes()
        assert inside[entry["name"]] == data and entry["size"] == len(data)
        assert entry["sha256"] == packs._sha256(cache / entry["name"])
        assert entry["settings"] == names[entry["name"]]
        made = entry["made_with"]
        assert made["versions"]["torch"] == torch.__version__ and "diffusers" in made["versions"]
        assert made["machine"] and made["seconds"] >= 0 and made["when"]
    assert next(e for e in manifest["files"] if e["name"].startswith("01-"))["made_with"]["depends_on"] == ["torch"]


def test_round_trip_loads_without_computing(packed, cache, tmp_path, monkeypatch, capsys):
    archive, names = packed
    fresh = tmp_path / "fresh"
    monkeypatch.setenv("REPLIB_CACHE", str(fresh))
    assert packs.unpack(archive) == {name: "added" for name in names}
    assert snapshot(fresh) == {name: (cache / name).read_bytes() for name in names}, "byte for byte"
    compute = Counter({"w": torch.zeros(1)})
    capsys.readouterr()
    settings = {"kind": "unet-ddpm", "data": "beef", "steps": 8}
    result = load_or_compute("05-unet-n16", settings, compute, libraries=("torch", "diffusers"))
    assert compute.calls == 0 and torch.equal(result["w"], SIGNATURE + 1000)
    assert "loaded checkpoint" in capsys.readouterr().out
    assert packs.unpack(archive) == {name: "already cached" for name in names}
    victim = fresh / sorted(names)[0]
    victim.write_bytes(b"stale")
    assert packs.unpack(archive)[victim.name] == "replaced"
    assert victim.read_bytes() == (cache / victim.name).read_bytes()


def test_unpack_keeps_other_cache_content(packed, tmp_path, monkeypatch):
    archive, names = packed
    fresh = tmp_path / "fresh"
    (fresh / "prompts").mkdir(parents=True)
    (fresh / "prompts" / "sd1_nmem.txt").write_text("a prompt\n")
    monkeypatch.setenv("REPLIB_CACHE", str(fresh))
    packs.unpack(archive)
    assert (fresh / "prompts" / "sd1_nmem.txt").read_text() == "a prompt\n"
    assert not list(fresh.glob(".unpack-*")), "the temporary folder is gone"


# ---------------------------------------------------------------- refused archives, cache unchanged
def flip_tensor_byte(archive: Path, out: Path) -> Path:
    """A copy of `archive` with one byte of a stored tensor's data flipped, found in the raw archive bytes."""
    raw = bytearray(archive.read_bytes())
    at = raw.find((SIGNATURE + 1000).numpy().tobytes()[400:440])  # inside the 05-unet-n16 checkpoint's tensor
    assert at > 0
    raw[at + 3] ^= 0x40
    out.write_bytes(bytes(raw))
    return out


def test_flipped_byte_would_load_without_the_hash_check(packed, tmp_path):
    # the control: the damaged checkpoint still loads safely, with other numbers, so only the sha256 catches it
    archive, _ = packed
    bad = dict(members(flip_tensor_byte(archive, tmp_path / "bad.tar")))
    good = dict(members(archive))
    name = next(n for n in bad if n.startswith("05-"))
    assert bad[name] != good[name] and len(bad[name]) == len(good[name])
    (tmp_path / name).write_bytes(bad[name])
    w = torch.load(tmp_path / name, weights_only=True)["result"]["w"]
    assert not torch.equal(w, SIGNATURE + 1000) and (w != SIGNATURE + 1000).sum() == 1


def tampered(kind: str, archive: Path, tmp_path: Path) -> tuple[Path, str]:
    """An archive made from the good `archive` and damaged or forged one way; the words its refusal must contain."""
    out = tmp_path / f"{kind}.tar"
    entries = members(archive)
    manifest = json.loads(dict(entries)["manifest.json"])
    files = [(n, d) for n, d in entries if n != "manifest.json"]
    first, data = files[0]

    def with_manifest(files, manifest):
        return write_tar(out, [*files, ("manifest.json", json.dumps(manifest).encode())])

    if kind == "flipped byte":
        return flip_tensor_byte(archive, out), "does not match its manifest"
    if kind == "flipped byte in a header":  # in the first member's name: its header checksum no longer holds
        raw = bytearray(archive.read_bytes())
        raw[2] ^= 0x01
        out.write_bytes(bytes(raw))
        return out, "not a readable tar"
    if kind == "truncated":
        out.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
        return out, "truncated"
    if kind == "not a tar":
        out.write_bytes(b"PK\x03\x04 not a tar at all" * 40)
        return out, "not a readable tar"
    if kind == "file missing":
        return with_manifest(files[1:], manifest), f"{first!r} is in the manifest but missing"
    if kind == "manifest names a file twice":
        manifest["files"].append(manifest["files"][0])
        return with_manifest(files, manifest), f"names {first!r} twice"
    if kind == "archive holds a file twice":
        return with_manifest([*files, (first, b"other bytes")], manifest), f"holds {first!r} twice"
    if kind == "unlisted file":
        return with_manifest([*files, ("extra-0123456789abcdef.pt", data)], manifest), "not in its manifest"
    if kind in ("path traversal", "absolute path"):
        name = "../evil-0123456789abcdef.pt" if kind == "path traversal" else "/tmp/evil-0123456789abcdef.pt"
        manifest["files"][0]["name"] = name
        return with_manifest([(name, data), *files[1:]], manifest), "not a plain file name"
    if kind == "link":
        with tarfile.open(out, "w") as tar:
            link = tarfile.TarInfo(first)
            link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(link)
        return out, "link"
    if kind == "no manifest":
        return write_tar(out, files), "no manifest.json"
    if kind == "checkpoint under another key":  # a consistent manifest cannot make a file answer other settings
        second, other = files[1]
        manifest["files"][0].update({k: v for k, v in manifest["files"][1].items() if k != "name"})
        return with_manifest([(first, other), *files[1:]], manifest), "another key"
    if kind == "settings differ from the manifest":
        manifest["files"][0]["settings"] = {**manifest["files"][0]["settings"], "steps": 1}
        return with_manifest(files, manifest), "other settings"
    if kind == "code in a checkpoint":  # sha256 and size right: only the safe load stands between it and the cache
        planted = io.BytesIO()
        torch.save({"settings": manifest["files"][0]["settings"], "result": Plant(tmp_path / "pwned"),
                    "made_with": manifest["files"][0]["made_with"]}, planted)
        manifest["files"][0].update(size=len(planted.getvalue()), sha256=hashlib.sha256(planted.getvalue()).hexdigest())
        return with_manifest([(first, planted.getvalue()), *files[1:]], manifest), "weights_only=True"
    raise ValueError(kind)


class Plant:
    """Unpickling this calls Path.touch(marker): the stand-in for any code a planted checkpoint could run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


KINDS = ["flipped byte", "flipped byte in a header", "truncated", "not a tar", "file missing",
         "manifest names a file twice", "archive holds a file twice", "unlisted file", "path traversal",
         "absolute path", "link", "no manifest", "checkpoint under another key", "settings differ from the manifest",
         "code in a checkpoint"]


@pytest.mark.parametrize("kind", KINDS)
def test_refused_archive_leaves_the_cache_unchanged(packed, cache, tmp_path, kind):
    archive, names = packed
    bad, words = tampered(kind, archive, tmp_path)
    assert bad.read_bytes() != archive.read_bytes()
    (cache / sorted(names)[0]).write_bytes(b"the learner's own file, other bytes than the pack's")
    before = snapshot(cache)
    with pytest.raises(packs.PackRefused) as refused:
        packs.unpack(bad)
    message = str(refused.value)
    assert words in message and str(bad) in message and "nothing was put into the cache" in message
    assert "\n" not in message, "one line"
    assert snapshot(cache) == before, "a refused unpack leaves the cache byte for byte as it was"
    assert not list(cache.glob(".unpack-*")) and not (tmp_path / "evil-0123456789abcdef.pt").exists()
    assert not (tmp_path / "pwned").exists(), "unpacking never runs code from a checkpoint"


def test_the_good_archive_passes_the_same_checks(packed, cache):
    # the control for every refusal above: unchanged, the same archive is accepted
    archive, names = packed
    assert set(packs.unpack(archive)) == set(names)


def test_cli_refusal_is_one_line_and_exit_status_1(packed, tmp_path, cache):
    archive, _ = packed
    bad, _ = tampered("flipped byte", archive, tmp_path)
    run = subprocess.run([sys.executable, "-m", "replib.cache", "unpack", str(bad)], capture_output=True, text=True,
                         cwd=ROOT, env={"REPLIB_CACHE": str(cache), "PATH": "/usr/bin:/bin"})
    assert run.returncode == 1 and run.stdout == ""
    assert run.stderr.strip().startswith(f"refused {bad}: '05-unet-n16-") and len(run.stderr.strip().splitlines()) == 1


def test_pack_leaves_out_what_would_be_recomputed_anyway(cache, tmp_path, capsys):
    fill(cache)
    torch.save({"settings": {"n": 1}, "result": 1}, checkpoint_path("old", {"n": 1}))  # no made_with
    checkpoint_path("junk", {"n": 1}).write_bytes(b"not a checkpoint")
    manifest = packs.pack(tmp_path / "p.tar")
    out = capsys.readouterr().out
    assert "not packed: old-" in out and "records no versions" in out and "not packed: junk-" in out
    assert {e["name"][:3] for e in manifest["files"]} == {"01-", "05-", "06-"}


# ---------------------------------------------------------------- list
def test_list_shows_each_checkpoint_and_what_it_was_made_with(cache, capsys):
    names = fill(cache)
    set_versions(cache / next(n for n in names if n.startswith("06-")), torch="2.12.0")
    packs.main(["list"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4
    for name, line in zip(sorted(names), lines):
        assert line.startswith(name) and "kB" in line and "trained 0 s" in line and "matplotlib" in line
    assert f"torch {torch.__version__}" in lines[0] and "recomputed here" not in lines[0]
    assert "[recomputed here: made with torch 2.12.0" in lines[2]
    assert lines[3].startswith("3 checkpoints") and "1 unfinished run" in lines[3]


# ---------------------------------------------------------------- versions: same result or recomputed, never silent
def set_versions(path: Path, drop: bool = False, **versions) -> None:
    """Rewrite a checkpoint as if made with other library versions (or, with drop, by a replib that recorded none)."""
    blob = torch.load(path, weights_only=True)
    if drop:
        del blob["made_with"]
    else:
        blob["made_with"]["versions"].update(versions)
    torch.save(blob, path)


def here(lib: str) -> str:
    return ck.installed_versions()[lib]


def bump(version: str, part: int) -> str:
    """The version with its `part`-th number (0: major, 1: minor, 2: patch) one higher."""
    numbers = version.split("+")[0].split(".")
    numbers[part] = str(int(numbers[part]) + 1)
    return ".".join(numbers)


@pytest.mark.parametrize("lib", ["torch", "diffusers", "transformers"])
def test_another_minor_release_recomputes_with_a_message(cache, lib):
    settings = {"n": 3}
    load_or_compute("run", settings, Counter("first"), verbose=False)
    set_versions(checkpoint_path("run", settings), **{lib: bump(here(lib), 1)})
    compute = Counter("again")
    with pytest.warns(UserWarning, match="recomputing") as record:
        assert load_or_compute("run", settings, compute, verbose=False) == "again"
    message = str(record[0].message)
    assert f"{lib} {bump(here(lib), 1)} (here {here(lib)})" in message and "another release" in message
    assert compute.calls == 1
    with warnings.catch_warnings():  # the recomputed file records the installed versions
        warnings.simplefilter("error")
        assert load_or_compute("run", settings, compute, verbose=False) == "again" and compute.calls == 1


def test_a_patch_release_or_another_build_is_used_with_a_note(cache, capsys):
    settings = {"n": 3}
    load_or_compute("run", settings, Counter("first"), verbose=False)
    set_versions(checkpoint_path("run", settings), torch=bump(here("torch"), 2) + "+cu128")
    compute = Counter("again")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_or_compute("run", settings, compute, verbose=False) == "first"
    assert f"torch {bump(here('torch'), 2)}+cu128 (here {here('torch')})" in capsys.readouterr().out
    set_versions(checkpoint_path("run", settings), torch=here("torch").split("+")[0] + "+cu128")  # GPU build only
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_or_compute("run", settings, compute, verbose=False) == "first"
    assert capsys.readouterr().out == "" and compute.calls == 0


def test_only_the_libraries_a_result_depends_on_are_compared(cache):
    settings = {"n": 3}
    load_or_compute("dae", settings, Counter("first"), verbose=False, libraries=("torch",))
    set_versions(checkpoint_path("dae", settings), diffusers="0.1.0", transformers="1.0.0")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_or_compute("dae", settings, Counter("again"), verbose=False, libraries=("torch",)) == "first"
    with pytest.warns(UserWarning, match="diffusers 0.1.0"):  # the control: a caller that depends on diffusers
        assert load_or_compute("dae", settings, Counter("again"), verbose=False) == "again"


def test_a_checkpoint_without_versions_is_recomputed_with_a_message(cache):
    settings = {"n": 3}
    load_or_compute("run", settings, Counter("first"), verbose=False)
    set_versions(checkpoint_path("run", settings), drop=True)
    compute = Counter("again")
    with pytest.warns(UserWarning, match="does not record the torch, diffusers and transformers versions"):
        assert load_or_compute("run", settings, compute, verbose=False) == "again"
    assert "made_with" in torch.load(checkpoint_path("run", settings), weights_only=True)


def test_fit_retrains_a_run_made_with_another_torch(cache, capsys):
    settings = {"kind": "test-cache", "steps": 6}
    first = fit(_make, _step, Loop(6, seed=1), "r", settings, progress=False)
    final = checkpoint_path("r", settings)
    assert torch.load(final, weights_only=True)["made_with"]["seconds"] == round(first.train_seconds, 1)
    set_versions(final, torch=bump(here("torch"), 0))
    calls = []
    with pytest.warns(UserWarning, match=f"torch {bump(here('torch'), 0)}"):
        again = fit(_make, lambda m, g: calls.append(1) or _step(m, g), Loop(6, seed=1), "r", settings, progress=False)
    assert len(calls) == 6 and torch.equal(first.weight, again.weight)
    assert "trained and saved" in capsys.readouterr().out


# ---------------------------------------------------------------- a miss says which settings differ
def test_a_miss_says_which_settings_differ(cache, capsys):
    load_or_compute("06-t2i", {"kind": "text2image", "data": "aaaa", "steps": 4000}, Counter(1))
    load_or_compute("06-t2i-other", {"kind": "text2image", "data": "bbbb", "steps": 1}, Counter(1))
    capsys.readouterr()
    load_or_compute("06-t2i", {"kind": "text2image", "data": "cccc", "steps": 8000}, Counter(2))
    out = capsys.readouterr().out
    said = next(line for line in out.splitlines() if line.startswith("no checkpoint of 06-t2i "))
    assert "06-t2i-other" not in said, "only checkpoints stored under the same name are compared"
    assert "data: the training data differ" in said and "steps: 4000 then, 8000 now" in said
    assert "kind" not in said.split("settings:")[1]


def test_a_miss_names_another_matplotlib(cache, capsys):
    load_or_compute("06-t2i", {"data": "aaaa"}, Counter(1))
    set_versions(checkpoint_path("06-t2i", {"data": "aaaa"}), matplotlib="3.1.0")
    capsys.readouterr()
    load_or_compute("06-t2i", {"data": "bbbb"}, Counter(2))
    assert f"matplotlib 3.1.0 then, {here('matplotlib')} now" in capsys.readouterr().out


def test_glyphs_rendered_differently_give_another_key(monkeypatch):
    """The text-to-image model is keyed by the fingerprint of the rendered glyph pixels, so glyphs another matplotlib
    draws differently (here: one pixel changed) can never load the model trained on the old ones."""
    import replib.training.diffusion as diffusion
    from replib.data import glyphs
    from replib.models.text import clip_tokenizer

    seen = []

    class Model:
        def eval(self):
            return self

    monkeypatch.setattr(diffusion, "fit", lambda make, step, loop, name, settings, *a, **k: seen.append(settings)
                        or Model())
    data, tok, cfg = glyphs.make_glyph_set(6, 16, seed=0), clip_tokenizer(), diffusion.T2ITraining(steps=2)
    diffusion.train_text2image("t", data.images, data.captions, cfg, tok, progress=False)
    redrawn = data.images.clone()
    redrawn[0, 0, 0, 0] += 1 / 127.5
    diffusion.train_text2image("t", redrawn, data.captions, cfg, tok, progress=False)
    assert [k for k in seen[0] if seen[0][k] != seen[1][k]] == ["data"]
    assert checkpoint_path("t", seen[0]) != checkpoint_path("t", seen[1])
