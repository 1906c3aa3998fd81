"""Progress bars do not flood logs: in a non-interactive run (REPLIB_STATIC=1, set by conftest) a training prints a
few progress lines, not one per logged step. tqdm writes to stderr; every '\\r' or '\\n' ends one printed line."""
import re

import pytest
import torch
import tqdm.std
from torch import nn

from replib.data.digits import simplex_samples
from replib.models.dae import ReLUDAE
from replib.training.dae import DAETraining, train_dae
from replib.training.loop import Loop, fit

STEPS = 1000


def printed_lines(err: str) -> list[str]:
    return [line for line in re.split(r"[\r\n]", err) if line.strip()]


def train_small_dae() -> None:
    """A real training that logs (and updates the bar's loss) on every one of its STEPS steps."""
    x = simplex_samples(4, 8, norm=1.0)
    train_dae(ReLUDAE(8, 6, seed=0), x, DAETraining(sigma=0.1, steps=STEPS, lr=1e-2), log_every=1, desc="dae")


def test_training_prints_a_few_progress_lines(capsys):
    train_small_dae()
    lines = printed_lines(capsys.readouterr().err)
    assert 1 <= len(lines) <= 3, f"{len(lines)} progress lines for one training: {lines[:5]}"
    assert "dae" in lines[-1] and f"{STEPS}/{STEPS}" in lines[-1] and "loss=" in lines[-1]  # the last state shown


def test_refreshing_the_postfix_on_every_step_floods(capsys, monkeypatch):
    # the behaviour before (set_postfix's default refresh=True): one line per logged step, whatever the interval.
    # The counting above therefore sees a flood when there is one.
    set_postfix = tqdm.std.tqdm.set_postfix
    monkeypatch.setattr(tqdm.std.tqdm, "set_postfix",
                        lambda self, *args, refresh=True, **kwargs: set_postfix(self, *args, refresh=True, **kwargs))
    train_small_dae()
    assert len(printed_lines(capsys.readouterr().err)) >= STEPS


def test_resumable_training_prints_a_few_progress_lines(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("REPLIB_CACHE", str(tmp_path))

    def make():
        model = nn.Linear(3, 1)
        return model, torch.optim.SGD(model.parameters(), lr=0.01)

    def step(model, g):
        x = torch.randn(8, 3, generator=g)
        return (model(x).squeeze(1) - x.sum(1)).pow(2).mean()

    fit(make, step, Loop(STEPS, save_every=STEPS), "quiet", {"kind": "test-progress"})
    lines = printed_lines(capsys.readouterr().err)
    assert 1 <= len(lines) <= 3, f"{len(lines)} progress lines for one training: {lines[:5]}"


@pytest.mark.parametrize("calls", [10, 1000])
def test_plain_bar_prints_at_most_first_and_last_line_within_its_interval(capsys, calls):
    from replib.widgets import progress

    bar = progress(range(calls), desc="loop")
    for i in bar:
        bar.set_postfix(i=i, refresh=False)
    assert len(printed_lines(capsys.readouterr().err)) <= 2
