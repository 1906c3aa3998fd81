"""benchmarks/gpu.py, the GPU check prepared for a machine with a GPU: on this CPU-only machine it says there is no
GPU and exits 0; its stand-in timing runs on the CPU."""
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.py"


def _module():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present: the script would measure it")
def test_without_a_gpu_it_says_so_and_exits_zero():
    done = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "No CUDA GPU is present on this machine" in done.stdout


def test_the_standin_timing_runs_on_the_cpu(tmp_path):
    from replib.models import sd14

    folder = sd14.build_standin(tmp_path / "standin")
    row = _module().standin_rows("cpu", "float32", ["a photo of a cat", "an old man"], steps=2, folder=folder)
    assert row["cpu"] > 0 and row["unit"] == "s per prompt"
