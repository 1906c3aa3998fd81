"""training.loop.fit: a finished run loads, an interrupted run resumes from its partial checkpoint and ends where an
uninterrupted run ends."""
from pathlib import Path

import pytest
import torch
from tiny import make as _make, step as _step  # noqa: I001  (the kit's tests' tiny regression)

from replib.checkpoints import checkpoint_path
from replib.training.loop import Loop, fit

SETTINGS = {"kind": "test-resumable", "steps": 30}


class Interrupt(Exception):
    pass


def test_interrupted_run_resumes_and_matches(tmp_path, monkeypatch):
    monkeypatch.setenv("REPLIB_CACHE", str(tmp_path / "a"))
    straight = fit(_make, _step, Loop(30, seed=1, save_every=10), "r", SETTINGS, progress=False)

    monkeypatch.setenv("REPLIB_CACHE", str(tmp_path / "b"))
    calls = {"n": 0}

    def failing_step(model, g):
        calls["n"] += 1
        if calls["n"] == 25:
            raise Interrupt
        return _step(model, g)

    try:
        fit(_make, failing_step, Loop(30, seed=1, save_every=10), "r", SETTINGS, progress=False)
    except Interrupt:
        pass
    partial = checkpoint_path("r", SETTINGS).with_suffix(".partial.pt")
    assert partial.exists(), "an interrupted run must leave its last partial checkpoint"
    calls["n"] = 0
    resumed = fit(_make, failing_step, Loop(30, seed=1, save_every=10), "r", SETTINGS, progress=False)
    assert calls["n"] == 10, f"the resumed run should only do the 10 steps after step 20, did {calls['n']}"
    assert not partial.exists()
    for a, b in zip(straight.parameters(), resumed.parameters()):
        assert torch.allclose(a, b, atol=1e-6), "resumed training must end where an uninterrupted run ends"

    calls["n"] = 0
    again = fit(_make, failing_step, Loop(30, seed=1, save_every=10), "r", SETTINGS, progress=False)
    assert calls["n"] == 0, "a finished run must load, not train"
    assert torch.allclose(again.weight, resumed.weight)


class Plant:
    """Unpickling this calls Path.touch(marker): the stand-in for any code a planted checkpoint could run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


@pytest.mark.parametrize("which", ["final", "partial"])
def test_planted_code_is_refused_and_the_run_trains_from_scratch(tmp_path, monkeypatch, which):
    monkeypatch.setenv("REPLIB_CACHE", str(tmp_path / "a"))
    straight = fit(_make, _step, Loop(30, seed=1, save_every=10), "r", SETTINGS, progress=False)

    monkeypatch.setenv("REPLIB_CACHE", str(tmp_path / "b"))
    final = checkpoint_path("r", SETTINGS)
    planted = final if which == "final" else final.with_suffix(".partial.pt")  # the files training.loop.fit reads
    marker = tmp_path / "pwned"
    torch.save({"settings": SETTINGS, "result": Plant(marker)}, planted)
    torch.load(planted, weights_only=False)  # the control: loading it unsafely runs its code
    assert marker.exists()
    marker.unlink()

    calls = {"n": 0}

    def counting_step(model, g):
        calls["n"] += 1
        return _step(model, g)

    with pytest.warns(UserWarning, match="refused") as record:
        model = fit(_make, counting_step, Loop(30, seed=1, save_every=10), "r", SETTINGS, progress=False)
    assert any(str(planted) in str(w.message) and "code" in str(w.message) for w in record)
    assert not marker.exists(), "loading a checkpoint must never run the code inside it"
    assert calls["n"] == 30, "the refused file is ignored: the run trains from step 0"
    for a, b in zip(straight.parameters(), model.parameters()):
        assert torch.equal(a, b)
    assert torch.load(final, weights_only=True)["result"]["losses"] == model.losses
    assert not final.with_suffix(".partial.pt").exists()
