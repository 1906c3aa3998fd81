"""replib.speed and benchmarks/run.py: what the benchmark compares is the same computation (a loop with overhead
would otherwise be compared with a loop doing less work), and the script runs. The timings themselves are the
benchmark's to report, not a test's to assert: a test on wall time fails on a busy machine."""
import runpy
import sys
from pathlib import Path

import pytest
import torch
from tiny import make as _make, step as _step  # noqa: I001  (the kit's tests' tiny regression)

from replib import speed
from replib.training.loop import Loop, fit

ROOT = Path(__file__).resolve().parents[1]


def test_bare_loop_and_fit_compute_the_same_weights():
    bare = speed.bare_loop(_make, _step, 30)
    looped = fit(_make, _step, Loop(30), progress=False)
    assert torch.equal(bare.weight, looped.weight) and torch.equal(bare.bias, looped.bias)
    # and a different step count is told apart: the comparison is not vacuous
    assert not torch.equal(speed.bare_loop(_make, _step, 29).weight, looped.weight)


def test_loop_overhead_reports_both_timings():
    out = speed.loop_overhead(_make, _step, 10, repeats=1)
    assert out["fit s/step"] > 0 and out["bare s/step"] > 0
    assert out["ratio"] == pytest.approx(out["fit s/step"] / out["bare s/step"])


def test_the_benchmark_script_runs(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["run.py", "--quick"])
    runpy.run_path(str(ROOT / "benchmarks" / "run.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "fit vs bare loop" in out and "DAE bank vs Python loop" in out and "training loop overhead" in out
