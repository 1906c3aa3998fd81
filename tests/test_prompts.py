"""Tests of replib.data.prompts: local reading, checksums, download and cache (urlopen faked: no network), sampling, and
the stand-in's example prompts.

Most tests run on fabricated files (checked against their own sha256) and run everywhere. The tests of the two
published files read them from $REPLIB_PROMPTS_DIR when it is set, else download them once per session (checked);
when neither works they are skipped with a reason naming the variable, or fail when REPLIB_REQUIRE_PROMPTS=1 (CI sets
it next to the folder, so those tests can never be skipped silently there).
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import time
import urllib.error
from collections.abc import Mapping
from pathlib import Path

import pytest

from replib.data import example_prompts, prompts
from replib.data.prompts import (
    PROMPT_SETS,
    PromptSet,
    PromptSetError,
    load_or_examples,
    load_prompt_set,
    sample,
)

REQUIRE_VAR = "REPLIB_REQUIRE_PROMPTS"  # "1": a published-file test that finds no files fails instead of skipping
DOWNLOAD_TIMEOUT = 3.0  # seconds the session's one download attempt may take

# Fabricated stand-ins for the two files: small, in the published formats.
MEM_BYTES = b"".join(json.dumps({"caption": f" prompt {i} ", "index": 100 + i, "url": f"http://x/{i}.jpg"}).encode()
                     + b"\n" for i in range(6))
NMEM_BYTES = b"a red apple\n\na blue door\n  a green hill  \n"


def reference_dir(environ: Mapping[str, str], cache: Path) -> Path:
    """The folder the published-file tests read: $REPLIB_PROMPTS_DIR when set, else `cache` once both files have been
    downloaded into it (sha256-checked). When neither: a skip whose reason names the variable, or, with
    REPLIB_REQUIRE_PROMPTS=1, a failure with the same reason."""
    if environ.get(prompts.ENV_VAR):
        return Path(environ[prompts.ENV_VAR])
    try:
        for name in PROMPT_SETS:
            load_prompt_set(name, cache_dir=cache, timeout=DOWNLOAD_TIMEOUT)
        return cache
    except PromptSetError as err:
        reason = (f"the published prompt sets are not here: {prompts.ENV_VAR} is not set and the download failed. "
                  f"Set {prompts.ENV_VAR}=/folder/with/the/files to run these tests. [{err}]")
    if environ.get(REQUIRE_VAR) == "1":
        pytest.fail(f"{REQUIRE_VAR}=1 requires the published-file tests to run: {reason}", pytrace=False)
    pytest.skip(f"{reason} (with {REQUIRE_VAR}=1 this is a failure)")


@pytest.fixture(scope="session")
def ref_dir(tmp_path_factory) -> Path:
    """Found once per session (a skip or failure is remembered for the session too)."""
    return reference_dir(os.environ, tmp_path_factory.mktemp("published-prompts"))


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


# --- finding the published files, or saying loudly why not -------------------------------------------------------

def test_no_files_skip_names_the_variable_and_require_turns_it_into_a_failure(tmp_path, monkeypatch, no_env):
    def fail(url, timeout=None):
        assert timeout == DOWNLOAD_TIMEOUT
        raise urllib.error.URLError("name resolution failed")

    monkeypatch.setattr(prompts.urllib.request, "urlopen", fail)
    with pytest.raises(pytest.skip.Exception) as skipped:
        reference_dir({}, tmp_path)
    assert prompts.ENV_VAR in str(skipped.value) and REQUIRE_VAR in str(skipped.value)
    with pytest.raises(pytest.fail.Exception) as failed:
        reference_dir({REQUIRE_VAR: "1"}, tmp_path)
    assert prompts.ENV_VAR in str(failed.value) and REQUIRE_VAR in str(failed.value)
    assert reference_dir({prompts.ENV_VAR: str(tmp_path), REQUIRE_VAR: "1"}, tmp_path) == tmp_path


def test_reference_dir_downloads_into_the_cache(tmp_path, monkeypatch, no_env):
    for name, data in [("memorized", MEM_BYTES), ("nonmemorized", NMEM_BYTES)]:
        _with_sha(monkeypatch, name, data)
    files = {PROMPT_SETS["memorized"].url: MEM_BYTES, PROMPT_SETS["nonmemorized"].url: NMEM_BYTES}
    monkeypatch.setattr(prompts.urllib.request, "urlopen", lambda url, timeout=None: io.BytesIO(files[url]))
    assert reference_dir({REQUIRE_VAR: "1"}, tmp_path) == tmp_path
    assert len(load_prompt_set("memorized", local_dir=tmp_path)) == 6


# --- reading the published files -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["memorized", "nonmemorized"])
def test_reference_sets_load(name, ref_dir, monkeypatch, no_network):
    monkeypatch.setenv(prompts.ENV_VAR, str(ref_dir))
    ps = load_prompt_set(name)
    assert isinstance(ps, PromptSet) and ps.name == name and len(ps) == 500
    assert all(isinstance(p, str) and p and p == p.strip() for p in ps.prompts)
    assert ps.sha256 == PROMPT_SETS[name].sha256 == _sha(ps.path.read_bytes())
    assert ps.path.parent == ref_dir and len(ps) == PROMPT_SETS[name].size
    assert ps.describe().startswith("500 prompts") and ps.sha256[:12] in ps.describe()


def test_memorized_records_keep_index_and_url(ref_dir, no_env, no_network):
    ps = load_prompt_set("memorized", local_dir=ref_dir)
    assert ps.records is not None and len(ps.records) == 500
    assert [r["caption"].strip() for r in ps.records] == ps.prompts
    assert all(isinstance(r["index"], int) and r["url"].startswith("http") for r in ps.records)
    assert load_prompt_set("nonmemorized", local_dir=ref_dir).records is None


@pytest.mark.parametrize("standin", [True, False])
def test_published_sets_are_what_both_modes_get(standin, ref_dir, monkeypatch, no_network):
    monkeypatch.setenv(prompts.ENV_VAR, str(ref_dir))
    for name in PROMPT_SETS:
        ps = load_or_examples(name, standin=standin)
        assert not ps.example and ps.name == name and len(ps) == 500 and ps.sha256 == PROMPT_SETS[name].sha256


# --- reading local copies (fabricated files) ------------------------------------------------------------------------

def test_source_and_alternative_names_accepted(tmp_path, monkeypatch, no_env, no_network):
    _with_sha(monkeypatch, "nonmemorized", NMEM_BYTES)
    (tmp_path / "sd1_nmem.txt").write_bytes(NMEM_BYTES)  # the name in the public repository
    ps = load_prompt_set("nonmemorized", local_dir=tmp_path)
    assert ps.path.name == "sd1_nmem.txt" and ps.prompts == ["a red apple", "a blue door", "a green hill"]
    assert ps.records is None
    alt = tmp_path / "alt"
    alt.mkdir()
    (alt / "sd1_nonmemorized_500.txt").write_bytes(NMEM_BYTES)
    assert load_prompt_set("nonmemorized", local_dir=alt).prompts == ps.prompts


def test_jsonl_records_are_kept(tmp_path, monkeypatch, no_env, no_network):
    _with_sha(monkeypatch, "memorized", MEM_BYTES)
    (tmp_path / "sdv1_500_memorized.jsonl").write_bytes(MEM_BYTES)
    ps = load_prompt_set("memorized", local_dir=tmp_path)
    assert ps.prompts == [f"prompt {i}" for i in range(6)] and [r["index"] for r in ps.records] == list(range(100, 106))


def test_local_dir_overrides_env(tmp_path, monkeypatch, no_network):
    _with_sha(monkeypatch, "memorized", MEM_BYTES)
    (tmp_path / "sdv1_500_memorized.jsonl").write_bytes(MEM_BYTES)
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv(prompts.ENV_VAR, str(empty))
    assert len(load_prompt_set("memorized", local_dir=tmp_path)) == 6
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

def test_download_writes_verified_cache_then_reuses_it(tmp_path, monkeypatch, no_env):
    calls = []

    def fake_urlopen(url, timeout=None):
        calls.append((url, timeout))
        return io.BytesIO(NMEM_BYTES)

    _with_sha(monkeypatch, "nonmemorized", NMEM_BYTES)
    monkeypatch.setattr(prompts.urllib.request, "urlopen", fake_urlopen)
    ps = load_prompt_set("nonmemorized", cache_dir=tmp_path, timeout=3.0)
    assert calls == [(PROMPT_SETS["nonmemorized"].url, 3.0)]
    assert ps.path == tmp_path / "sd1_nmem.txt" and ps.path.read_bytes() == NMEM_BYTES
    assert len(ps) == 3 and [p.name for p in tmp_path.iterdir()] == ["sd1_nmem.txt"]  # no temp file left
    assert load_prompt_set("nonmemorized", cache_dir=tmp_path).prompts == ps.prompts
    assert len(calls) == 1


def test_default_cache_dir_is_under_replib_cache(tmp_path, monkeypatch, no_env):
    _with_sha(monkeypatch, "memorized", MEM_BYTES)
    monkeypatch.setenv("REPLIB_CACHE", str(tmp_path))
    monkeypatch.setattr(prompts.urllib.request, "urlopen", lambda url, timeout=None: io.BytesIO(MEM_BYTES))
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


def test_corrupted_cache_is_detected_and_deleted(tmp_path, monkeypatch, no_env, no_network):
    _with_sha(monkeypatch, "memorized", MEM_BYTES)
    cached = tmp_path / "sdv1_500_memorized.jsonl"
    cached.write_bytes(MEM_BYTES[:-10])
    with pytest.raises(PromptSetError) as err:
        load_prompt_set("memorized", cache_dir=tmp_path)
    assert PROMPT_SETS["memorized"].sha256 in str(err.value) and "deleted" in str(err.value)
    assert not cached.exists()


# --- the stand-in's example prompts ---------------------------------------------------------------------------------

def _refuse_network(monkeypatch) -> list:
    """urlopen fails as on an offline machine; returns the list of timeouts it is called with."""
    timeouts = []

    def refuse(url, timeout=None):
        timeouts.append(timeout)
        raise urllib.error.URLError("network refused")

    monkeypatch.setattr(prompts.urllib.request, "urlopen", refuse)
    return timeouts


def test_standin_without_files_or_network_gets_labelled_examples(tmp_path, monkeypatch, no_env):
    timeouts = _refuse_network(monkeypatch)
    for name in PROMPT_SETS:
        ps = load_or_examples(name, standin=True, cache_dir=tmp_path)
        assert ps.example and ps.name == f"{name}-examples" and ps.path is None and ps.sha256 is None
        assert ps.prompts == list(example_prompts.EXAMPLES[name])
        assert prompts.ENV_VAR in ps.note and "network refused" in ps.note  # why the published set was not used
        assert "kit-written examples, NOT the published set" in ps.describe() and "sha256" not in ps.describe()
    assert timeouts == [prompts.STANDIN_TIMEOUT] * len(PROMPT_SETS)


def test_real_mode_never_falls_back(tmp_path, monkeypatch, no_env):
    timeouts = _refuse_network(monkeypatch)
    with pytest.raises(PromptSetError, match=prompts.ENV_VAR):
        load_or_examples("memorized", standin=False, cache_dir=tmp_path)
    assert timeouts == [prompts.DOWNLOAD_TIMEOUT]


def test_a_folder_asked_for_is_never_papered_over(tmp_path, monkeypatch, no_network):
    monkeypatch.setenv(prompts.ENV_VAR, str(tmp_path))  # empty: a mistake to report, even for the stand-in
    with pytest.raises(PromptSetError, match="sd1_nmem.txt"):
        load_or_examples("nonmemorized", standin=True)
    with pytest.raises(PromptSetError, match="famous"):
        load_or_examples("famous", standin=True)


def test_standin_takes_the_published_set_when_it_is_there(tmp_path, monkeypatch, no_env, no_network):
    _with_sha(monkeypatch, "nonmemorized", NMEM_BYTES)
    (tmp_path / "sd1_nmem.txt").write_bytes(NMEM_BYTES)
    ps = load_or_examples("nonmemorized", standin=True, cache_dir=tmp_path)  # already in the download cache
    assert not ps.example and ps.name == "nonmemorized" and ps.sha256 == _sha(NMEM_BYTES)


def test_examples_are_labelled_distinct_and_enough_for_the_notebooks():
    groups = example_prompts.EXAMPLES
    assert set(groups) == set(PROMPT_SETS)
    everything = [p for prompts_ in groups.values() for p in prompts_]
    assert all(isinstance(p, str) and p and p == p.strip() for p in everything)
    assert len(set(everything)) == len(everything), "no prompt twice, within or across the groups"
    assert all(len(g) >= 64 for g in groups.values()), "notebook 09 takes its memorized rows modulo 64, and 08 up to STANDIN_PROMPTS a set"
    assert "written for the kit" in example_prompts.NOTE and "not a published prompt set" in example_prompts.NOTE
    assert "NOT" in example_prompts.__doc__ and "nothing about memorization" in example_prompts.__doc__


# --- sampling -----------------------------------------------------------------------------------------------------

def test_sample_reproducible_and_distinct():
    ps = prompts.example_set("nonmemorized")
    a = sample(ps, 50, seed=3)
    assert a == sample(ps, 50, seed=3) and a != sample(ps, 50, seed=4)
    assert len(set(a)) == 50 and set(a) <= set(ps.prompts)
    assert sorted(sample(ps, len(ps), seed=0)) == sorted(ps.prompts)
    assert sample(["x", "y"], 0, seed=0) == []


def test_sample_too_many():
    ps = PromptSet("fabricated", [f"p{i}" for i in range(500)], None, None)
    with pytest.raises(PromptSetError) as err:
        sample(ps, 501, seed=0)
    assert "501" in str(err.value) and "500" in str(err.value)
