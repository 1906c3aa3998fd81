import io
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny import Counter  # noqa: I001  (the kit's tests' shared helpers)

import replib.training.dae as training
from replib.checkpoints import (
    cache_dir,
    checkpoint_path,
    load_or_compute,
    save_atomic,
    settings_key,
)
from replib.data.digits import simplex_samples
from replib.models.dae import ReLUDAE
from replib.training.dae import DAETraining, TrainLog, train_dae, train_dae_cached


def test_cache_dir_follows_env(cache):
    assert cache_dir() == cache and cache.is_dir()


def test_settings_key_ignores_key_order_and_sees_values():
    assert settings_key({"a": 1, "b": [1, 2]}) == settings_key({"b": [1, 2], "a": 1})
    assert settings_key({"a": 1, "b": [1, 2]}) != settings_key({"a": 1, "b": [1, 3]})


def test_load_or_compute_computes_once_then_loads(cache, capsys):
    settings = {"n": 3, "sigma": 0.2}
    compute = Counter({"w": torch.arange(4.0)})
    first = load_or_compute("run", settings, compute)
    second = load_or_compute("run", dict(settings), compute)
    assert compute.calls == 1
    assert torch.equal(first["w"], second["w"])
    assert checkpoint_path("run", settings).exists()
    out = capsys.readouterr().out
    assert "trained and saved" in out and "loaded checkpoint" in out


def test_a_checkpoint_records_what_it_was_made_with(cache):
    # what load_checked compares (versions of the libraries the result depends on) and what a pack's manifest shows
    load_or_compute("run", {"n": 3}, Counter(1), verbose=False, libraries=("torch",))
    made = torch.load(checkpoint_path("run", {"n": 3}), weights_only=True)["made_with"]
    assert made["versions"]["torch"] == torch.__version__ and set(made["versions"]) >= {"diffusers", "matplotlib"}
    assert made["depends_on"] == ["torch"] and made["seconds"] >= 0 and made["machine"] and made["when"]


def test_different_settings_different_files(cache):
    a = load_or_compute("run", {"n": 3}, Counter("a"), verbose=False)
    b = load_or_compute("run", {"n": 4}, Counter("b"), verbose=False)
    assert (a, b) == ("a", "b")
    assert checkpoint_path("run", {"n": 3}) != checkpoint_path("run", {"n": 4})
    assert len(list(cache.glob("run-*.pt"))) == 2
    assert load_or_compute("run", {"n": 3}, Counter("other"), verbose=False) == "a"
    assert load_or_compute("other-name", {"n": 3}, Counter("c"), verbose=False) == "c"


def test_corrupted_file_is_reported_and_recomputed(cache):
    settings = {"n": 3}
    path = checkpoint_path("run", settings)
    path.write_bytes(b"\x00garbage, not a torch file\xff" * 10)
    compute = Counter([1, 2, 3])
    with pytest.warns(UserWarning, match="unreadable"):
        assert load_or_compute("run", settings, compute, verbose=False) == [1, 2, 3]
    assert compute.calls == 1
    # the recomputed result replaced the bad file
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_or_compute("run", settings, compute, verbose=False) == [1, 2, 3]
    assert compute.calls == 1


def test_foreign_file_without_settings_is_recomputed(cache):
    settings = {"n": 3}
    torch.save({"something": "else"}, checkpoint_path("run", settings))
    compute = Counter(7)
    with pytest.warns(UserWarning, match="unreadable"):
        assert load_or_compute("run", settings, compute, verbose=False) == 7
    assert compute.calls == 1


def test_mismatching_stored_settings_are_reported_and_recomputed(cache):
    settings = {"n": 3, "sigma": 0.2}
    path = checkpoint_path("run", settings)
    torch.save({"settings": {"n": 3, "sigma": 0.5}, "result": "stale"}, path)
    compute = Counter("fresh")
    with pytest.warns(UserWarning, match="other settings"):
        assert load_or_compute("run", settings, compute, verbose=False) == "fresh"
    assert compute.calls == 1
    assert torch.load(path, weights_only=True)["settings"] == settings


def test_save_atomic_leaves_no_temporary_files(tmp_path):
    path = tmp_path / "sub" / "x.pt"
    save_atomic({"a": torch.ones(3)}, path)
    save_atomic({"a": torch.zeros(3)}, path)
    assert [p.name for p in path.parent.iterdir()] == ["x.pt"]
    assert torch.equal(torch.load(path)["a"], torch.zeros(3))


def test_save_atomic_failure_keeps_old_file(tmp_path):
    path = tmp_path / "x.pt"
    save_atomic({"a": torch.ones(3)}, path)
    with pytest.raises(Exception):
        save_atomic({"f": lambda: 0}, path)  # a lambda cannot be pickled
    assert [p.name for p in tmp_path.iterdir()] == ["x.pt"]
    assert torch.equal(torch.load(path)["a"], torch.ones(3))


def test_save_atomic_refuses_what_a_safe_load_would_refuse(tmp_path):
    # a numpy array would be refused on every later load (and recomputed every run): refuse it when writing
    path = tmp_path / "x.pt"
    with pytest.raises(TypeError, match="would not load safely"):
        save_atomic({"a": np.zeros(3)}, path)
    assert list(tmp_path.iterdir()) == []


def test_settings_are_stored_as_plain_data(cache):
    # tuples and non-JSON values (here a dtype) are stored the way the settings check compares them
    settings = {"channels": (32, 64), "dtype": torch.float32}
    load_or_compute("run", settings, Counter(1), verbose=False)
    assert torch.load(checkpoint_path("run", settings), weights_only=True)["settings"] == {
        "channels": [32, 64], "dtype": "torch.float32"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_or_compute("run", settings, Counter(2), verbose=False) == 1


# ---------------------------------------------------------------- checkpoints cannot run code
class Plant:
    """Unpickling this calls Path.touch(marker): the stand-in for any code a planted checkpoint could run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


def malicious_bytes(marker: Path, settings: dict, kind: str) -> bytes:
    """A checkpoint-shaped file whose result runs Path.touch(marker) when unpickled: written by torch.save (what the
    kit reads) or as a plain pickle (what torch.load reads through its legacy path)."""
    blob = {"settings": settings, "result": Plant(marker)}
    if kind == "pickle":
        return pickle.dumps(blob)
    buffer = io.BytesIO()
    torch.save(blob, buffer)
    return buffer.getvalue()


@pytest.mark.parametrize("kind", ["torch.save", "pickle"])
def test_planted_file_runs_code_when_loaded_unsafely(tmp_path, kind):
    # the control: the planted bytes are really malicious, so the refusal test below cannot pass vacuously
    marker, path = tmp_path / "pwned", tmp_path / "x.pt"
    path.write_bytes(malicious_bytes(marker, {"n": 3}, kind))
    try:
        torch.load(path, weights_only=False)  # what replib did before
    except Exception:
        pass  # the plain pickle runs first, then fails torch's magic-number check
    assert marker.exists()
    if kind == "pickle":
        marker.unlink()
        pickle.loads(path.read_bytes())
        assert marker.exists()


@pytest.mark.parametrize("kind", ["torch.save", "pickle"])
def test_planted_code_is_refused_not_run_and_recomputed(cache, tmp_path, kind):
    settings = {"n": 3}
    path = checkpoint_path("run", settings)  # exactly the file load_or_compute reads
    marker = tmp_path / "pwned"
    path.write_bytes(malicious_bytes(marker, settings, kind))
    compute = Counter({"w": torch.arange(3.0)})
    with pytest.warns(UserWarning, match="refused") as record:
        result = load_or_compute("run", settings, compute, verbose=False)
    message = " ".join(str(w.message) for w in record if "refused" in str(w.message))
    assert str(path) in message and "code" in message and "weights_only=True" in message
    assert "recomputing" in message
    assert not marker.exists(), "loading a checkpoint must never run the code inside it"
    assert compute.calls == 1 and torch.equal(result["w"], torch.arange(3.0))
    # the recomputed result replaced the planted file and loads safely, without a warning
    assert torch.equal(torch.load(path, weights_only=True)["result"]["w"], torch.arange(3.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(load_or_compute("run", settings, compute, verbose=False)["w"], torch.arange(3.0))
    assert compute.calls == 1 and not marker.exists()


# ---------------------------------------------------------------- train_dae_cached
@pytest.fixture
def counted_train(monkeypatch):
    calls = []
    real = training.train_dae

    def wrapper(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(training, "train_dae", wrapper)
    return calls


def test_train_dae_cached_trains_once_then_loads(cache, counted_train):
    x = simplex_samples(4, 8, norm=1.0)
    cfg = DAETraining(sigma=0.1, steps=30, lr=1e-2)
    m1, log1 = train_dae_cached("dae", x, cfg, width=6, progress=False)
    assert len(counted_train) == 1
    m2, log2 = train_dae_cached("dae", x, cfg, width=6, progress=False)
    assert len(counted_train) == 1
    assert torch.equal(m1.W1, m2.W1)
    assert log1.steps == log2.steps and all((a == b).all() for a, b in zip(log1.loss, log2.loss))
    # the loaded weights are the trained ones, not a fresh initialisation
    assert not torch.equal(m2.W1, ReLUDAE(8, 6).W1)
    # other settings or other data train again
    train_dae_cached("dae", x, DAETraining(sigma=0.2, steps=30, lr=1e-2), width=6, progress=False)
    assert len(counted_train) == 2
    y = x.clone()
    y[0, 0] += 0.01
    train_dae_cached("dae", y, cfg, width=6, progress=False)
    assert len(counted_train) == 3
    train_dae_cached("dae", x, cfg, width=6, tied=False, progress=False)
    assert len(counted_train) == 4


def test_train_dae_cached_bank(cache, counted_train):
    x = simplex_samples(4, 8, norm=1.0)
    cfg = DAETraining(sigma=[0.1, 0.3], steps=20, lr=1e-2)
    bank, log = train_dae_cached("bank", [x[:2], x], cfg, width=5, progress=False)
    assert bank.n_models == 2 and log.final_loss.shape == (2,)
    again, _ = train_dae_cached("bank", [x[:2], x], cfg, width=5, progress=False)
    assert len(counted_train) == 1 and torch.equal(bank.W1, again.W1)


def test_train_dae_cached_other_split_of_same_rows_trains_again(cache, counted_train):
    # two banks whose models see different training sets must not share a checkpoint
    x = simplex_samples(5, 8, norm=1.0)
    cfg = DAETraining(sigma=0.1, steps=10, lr=1e-2)
    train_dae_cached("split", [x[:2], x[2:]], cfg, width=6, progress=False)
    train_dae_cached("split", [x[:3], x[3:]], cfg, width=6, progress=False)
    assert len(counted_train) == 2


def test_train_dae_cached_gives_the_numbers_of_train_dae(cache):
    # the log goes through a checkpoint as plain data (TrainLog.as_dict / from_dict): nothing may change on the way
    x = simplex_samples(4, 8, norm=1.0)
    cfg = DAETraining(sigma=0.1, steps=30, lr=1e-2)
    direct = ReLUDAE(8, 6, True, 1, None, 0)
    direct_log = train_dae(direct, [x], cfg, progress=False)
    for _ in range(2):  # trained, then loaded
        model, log = train_dae_cached("dae", x, cfg, width=6, progress=False)
        assert torch.equal(model.W1, direct.W1)
        assert log.steps == direct_log.steps
        assert all(a.dtype == b.dtype and (a == b).all() for a, b in zip(log.loss, direct_log.loss))
    assert isinstance(log, TrainLog) and log.final_loss.shape == (1,)


def test_train_dae_cached_refuses_a_checkpoint_of_the_old_format(cache, counted_train):
    # older replib stored the TrainLog dataclass (with numpy arrays): refused with a clear warning, then retrained
    x = simplex_samples(4, 8, norm=1.0)
    cfg = DAETraining(sigma=0.1, steps=20, lr=1e-2)
    first, log = train_dae_cached("dae", x, cfg, width=6, progress=False)
    path = next(cache.glob("dae-*.pt"))
    blob = torch.load(path, weights_only=True)
    blob["result"]["log"] = log  # the old format
    torch.save(blob, path)
    with pytest.warns(UserWarning, match="refused") as record:
        again, _ = train_dae_cached("dae", x, cfg, width=6, progress=False)
    message = " ".join(str(w.message) for w in record)
    assert str(path) in message and "older replib" in message
    assert len(counted_train) == 2 and torch.equal(first.W1, again.W1)
    torch.load(path, weights_only=True)  # rewritten in the plain format


def test_atomic_path_leaves_the_target_untouched_on_error(tmp_path):
    from replib.files import atomic_path, write_text_atomic

    target = tmp_path / "sub" / "file.txt"
    write_text_atomic("old\n", target)
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old\n" and list(target.parent.iterdir()) == [target]
