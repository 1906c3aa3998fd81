"""Tests of replib.prompts: local reading, checksums, download and cache (urlopen faked: no network), sampling."""
from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import time
import urllib.error
from pathlib import Path

import pytest

from replib import prompts
from replib.prompts import PROMPT_SETS, PromptSet, PromptSetError, load_prompt_set, sample

_CANDIDATES = [Path(__file__).resolve().parents[2] / "shared" / "data", Path("/work/shared/data")]
REFERENCE_NAMES = {"memorized": "sdv1_500_memorized.jsonl", "nonmemorized": "sd1_nonmemorized_500.txt"}


@pytest.fixture(scope="module")
def ref_dir() -> Path:
    """The folder holding the reference copies; a missing folder is a failure (these tests must not be skipped)."""
    looked = ([Path(os.environ[prompts.ENV_VAR])] if os.environ.get(prompts.ENV_VAR) else []) + _CANDIDATES
    for folder in looked:
        if folder.is_dir():
            return folder
    pytest.fail(f"no reference prompt folder found; looked in ${prompts.ENV_VAR} and at "
                f"{', '.join(str(p) for p in looked)}")


@pytest.fixture
def ref_bytes(ref_dir):
    return {name: (ref_dir / fn).read_bytes() for name, fn in REFERENCE_NAMES.items()}


@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv(prompts.ENV_VAR, raising=False)


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("urlopen must not be called here")

    monkeypatch.setattr(prompts.urllib.request, "urlopen", refuse)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _with_sha(monkeypatch, name: str, data: bytes) -> None:
    """Make PROMPT_SETS[name] expect the checksum of fabricated `data`."""
    monkeypatch.setitem(PROMPT_SETS, name, dataclasses.replace(PROMPT_SETS[name], sha256=_sha(data)))


# --- reading the reference copies ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["memorized", "nonmemorized"])
def test_reference_sets_load(name, ref_dir, monkeypatch, no_network):
    monkeypatch.setenv(prompts.ENV_VAR, str(ref_dir))
    ps = load_prompt_set(name)
    assert isinstance(ps, PromptSet) and ps.name == name and len(ps) == 500
    assert all(isinstance(p, str) and p and p == p.strip() for p in ps.prompts)
    assert ps.sha256 == PROMPT_SETS[name].sha256 == _sha(ps.path.read_bytes())
    assert ps.path.parent == ref_dir


def test_memorized_records_keep_index_and_url(ref_dir, no_env, no_network):
    ps = load_prompt_set("memorized", local_dir=ref_dir)
    assert ps.records is not None and len(ps.records) == 500
    assert [r["caption"].strip() for r in ps.records] == ps.prompts
    assert all(isinstance(r["index"], int) and r["url"].startswith("http") for r in ps.records)
    assert load_prompt_set("nonmemorized", local_dir=ref_dir).records is None


def test_source_and_alternative_names_accepted(ref_bytes, tmp_path, no_env, no_network):
    (tmp_path / "sd1_nmem.txt").write_bytes(ref_bytes["nonmemorized"])  # the name in the public repository
    assert load_prompt_set("nonmemorized", local_dir=tmp_path).path.name == "sd1_nmem.txt"
    alt = tmp_path / "alt"
    alt.mkdir()
    (alt / "sd1_nonmemorized_500.txt").write_bytes(ref_bytes["nonmemorized"])
    assert len(load_prompt_set("nonmemorized", local_dir=alt)) == 500


def test_local_dir_overrides_env(ref_dir, tmp_path, monkeypatch, no_network):
    monkeypatch.setenv(prompts.ENV_VAR, str(tmp_path))  # empty folder
    assert len(load_prompt_set("memorized", local_dir=ref_dir)) == 500
    with pytest.raises(PromptSetError):
        load_prompt_set("memorized")


# --- errors -------------------------------------------------------------------------------------------------------

def test_wrong_checksum_names_both_hashes(tmp_path, no_env, no_network):
    bad = tmp_path / "sdv1_500_memorized.jsonl"
    bad.write_text('{"caption": "x", "index": 1, "url": "u"}\n')
    with pytest.raises(PromptSetError) as err:
        load_prompt_set("memorized", local_dir=tmp_path)
    msg = str(err.value)
    assert PROMPT_SETS["memorized"].sha256 in msg and _sha(bad.read_bytes()) in msg and str(bad) in msg
    assert bad.exists()  # a user's local copy is never deleted


def test_missing_file_lists_names_and_never_downloads(tmp_path, monkeypatch, no_network):
    monkeypatch.setenv(prompts.ENV_VAR, str(tmp_path))
    with pytest.raises(PromptSetError) as err:
        load_prompt_set("nonmemorized")
    msg = str(err.value)
    assert "sd1_nmem.txt" in msg and "sd1_nonmemorized_500.txt" in msg and str(tmp_path) in msg


@pytest.mark.parametrize("name, filename, data, message", [
    ("nonmemorized", "sd1_nmem.txt", b"\n   \n\t\n", "no prompts"),
    ("memorized", "sdv1_500_memorized.jsonl", b'{"caption": "a", "index": 1, "url": "u"}\n\n{not json\n', "line 3"),
], ids=["empty-set", "malformed-json-line"])
def test_unreadable_content(name, filename, data, message, tmp_path, monkeypatch, no_env, no_network):
    (tmp_path / filename).write_bytes(data)
    _with_sha(monkeypatch, name, data)
    with pytest.raises(PromptSetError, match=message):
        load_prompt_set(name, local_dir=tmp_path)


def test_unknown_name_lists_allowed(no_env, no_network):
    with pytest.raises(PromptSetError) as err:
        load_prompt_set("famous")
    assert "'memorized'" in str(err.value) and "'nonmemorized'" in str(err.value)


# --- download and cache (urlopen faked) ---------------------------------------------------------------------------

def test_download_writes_verified_cache_then_reuses_it(ref_bytes, tmp_path, monkeypatch, no_env):
    calls = []

    def fake_urlopen(url, timeout=None):
        calls.append((url, timeout))
        return io.BytesIO(ref_bytes["nonmemorized"])

    monkeypatch.setattr(prompts.urllib.request, "urlopen", fake_urlopen)
    ps = load_prompt_set("nonmemorized", cache_dir=tmp_path, timeout=3.0)
    assert calls == [(PROMPT_SETS["nonmemorized"].url, 3.0)]
    assert ps.path == tmp_path / "sd1_nmem.txt" and ps.path.read_bytes() == ref_bytes["nonmemorized"]
    assert len(ps) == 500 and [p.name for p in tmp_path.iterdir()] == ["sd1_nmem.txt"]  # no temp file left
    assert load_prompt_set("nonmemorized", cache_dir=tmp_path).prompts == ps.prompts
    assert len(calls) == 1


def test_default_cache_dir_is_under_replib_cache(ref_bytes, tmp_path, monkeypatch, no_env):
    monkeypatch.setenv("REPLIB_CACHE", str(tmp_path))
    monkeypatch.setattr(prompts.urllib.request, "urlopen", lambda url, timeout=None: io.BytesIO(ref_bytes["memorized"]))
    assert load_prompt_set("memorized").path == tmp_path / "prompts" / "sdv1_500_memorized.jsonl"


def test_download_failure_is_fast_and_says_what_to_do(tmp_path, monkeypatch, no_env):
    def fail(url, timeout=None):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(prompts.urllib.request, "urlopen", fail)
    start = time.perf_counter()
    with pytest.raises(PromptSetError) as err:
        load_prompt_set("memorized", cache_dir=tmp_path)
    assert time.perf_counter() - start < 0.5
    msg = str(err.value)
    assert prompts.ENV_VAR in msg and PROMPT_SETS["memorized"].url in msg and "no route to host" in msg
    assert list(tmp_path.iterdir()) == []


def test_wrong_download_is_deleted(tmp_path, monkeypatch, no_env):
    monkeypatch.setattr(prompts.urllib.request, "urlopen", lambda url, timeout=None: io.BytesIO(b"<html>moved</html>"))
    with pytest.raises(PromptSetError, match="expected"):
        load_prompt_set("nonmemorized", cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_corrupted_cache_is_detected_and_deleted(ref_bytes, tmp_path, no_env, no_network):
    cached = tmp_path / "sdv1_500_memorized.jsonl"
    cached.write_bytes(ref_bytes["memorized"][:-10])
    with pytest.raises(PromptSetError) as err:
        load_prompt_set("memorized", cache_dir=tmp_path)
    assert PROMPT_SETS["memorized"].sha256 in str(err.value) and "deleted" in str(err.value)
    assert not cached.exists()


# --- sampling -----------------------------------------------------------------------------------------------------

def test_sample_reproducible_and_distinct(ref_dir, no_env, no_network):
    ps = load_prompt_set("nonmemorized", local_dir=ref_dir)
    a = sample(ps, 50, seed=3)
    assert a == sample(ps, 50, seed=3) and a != sample(ps, 50, seed=4)
    assert len(set(a)) == 50 and set(a) <= set(ps.prompts)
    assert sorted(sample(ps, len(ps), seed=0)) == sorted(ps.prompts)
    assert sample(["x", "y"], 0, seed=0) == []


def test_sample_too_many(ref_dir, no_env, no_network):
    ps = load_prompt_set("memorized", local_dir=ref_dir)
    with pytest.raises(PromptSetError) as err:
        sample(ps, 501, seed=0)
    assert "501" in str(err.value) and "500" in str(err.value)
