"""train_resumable: a finished run loads, an interrupted run resumes from its partial checkpoint and ends where an
uninterrupted run ends."""
import torch
from torch import nn

from replib.checkpoints import checkpoint_path, train_resumable

SETTINGS = {"kind": "test-resumable", "steps": 30}


def _make():
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    return model, torch.optim.SGD(model.parameters(), lr=0.05)


def _step(model, g):
    x = torch.randn(8, 3, generator=g)
    return (model(x).squeeze(1) - x.sum(1)).pow(2).mean()


class Interrupt(Exception):
    pass


def test_interrupted_run_resumes_and_matches(tmp_path, monkeypatch):
    monkeypatch.setenv("REPLIB_CACHE", str(tmp_path / "a"))
    straight = train_resumable("r", SETTINGS, _make, _step, 30, seed=1, save_every=10, show_progress=False)

    monkeypatch.setenv("REPLIB_CACHE", str(tmp_path / "b"))
    calls = {"n": 0}

    def failing_step(model, g):
        calls["n"] += 1
        if calls["n"] == 25:
            raise Interrupt
        return _step(model, g)

    try:
        train_resumable("r", SETTINGS, _make, failing_step, 30, seed=1, save_every=10, show_progress=False)
    except Interrupt:
        pass
    partial = checkpoint_path("r", SETTINGS).with_suffix(".partial.pt")
    assert partial.exists(), "an interrupted run must leave its last partial checkpoint"
    calls["n"] = 0
    resumed = train_resumable("r", SETTINGS, _make, failing_step, 30, seed=1, save_every=10, show_progress=False)
    assert calls["n"] == 10, f"the resumed run should only do the 10 steps after step 20, did {calls['n']}"
    assert not partial.exists()
    for a, b in zip(straight.parameters(), resumed.parameters()):
        assert torch.allclose(a, b, atol=1e-6), "resumed training must end where an uninterrupted run ends"

    calls["n"] = 0
    again = train_resumable("r", SETTINGS, _make, failing_step, 30, seed=1, save_every=10, show_progress=False)
    assert calls["n"] == 0, "a finished run must load, not train"
    assert torch.allclose(again.weight, resumed.weight)
