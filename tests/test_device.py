"""The device: one list of choices, one function that resolves it, a DEVICE parameter in every training notebook that
reaches the training calls, and checkpoints that hold only CPU tensors (so they load on any machine)."""
import ast
import json
import re
from pathlib import Path

import pytest
import torch
from tiny import make as _make, step as _step  # noqa: I001  (the kit's tests' tiny regression)

from replib.params import ParameterError
from replib.session import DEVICES, choose_device
from replib.training.loop import Loop, fit

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
TRAINING_NOTEBOOKS = ["01", "02", "03", "04", "05", "06", "07", "10", "11"]


def test_auto_is_cuda_exactly_when_present(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert choose_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert choose_device("auto") == torch.device("cuda")
    assert choose_device("cpu") == torch.device("cpu")  # forced, GPU or not


def test_bad_device_names_the_parameter(monkeypatch):
    with pytest.raises(ParameterError, match="DEVICE.*'auto', 'cpu', 'cuda'"):
        choose_device("gpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ParameterError, match="DEVICE='cuda'.*no CUDA device"):
        choose_device("cuda")


def test_the_cli_and_the_sd14_notebooks_use_the_same_choices():
    from replib.models import sd14

    assert sd14.DEVICES is DEVICES


def _code(number: str) -> tuple[str, str]:
    nb = json.loads(next(NOTEBOOKS.glob(f"{number}_*.ipynb")).read_text())
    cells = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
    return cells[0], "\n".join(cells[1:])


TRAINERS = {"train_dae_cached", "train_toy", "train_unet", "train_model", "notebook06_model", "run_collapse"}


@pytest.mark.parametrize("number", TRAINING_NOTEBOOKS)
def test_every_training_notebook_trains_on_its_device_parameter(number):
    params, code = _code(number)
    assert re.search(r'^DEVICE = "auto" ', params, re.M), "DEVICE parameter missing or not 'auto' by default"
    assert re.search(r"device = replib\.setup\([^)]*device=DEVICE\)", code), "setup does not resolve DEVICE"
    calls = [node for node in ast.walk(ast.parse(code)) if isinstance(node, ast.Call)
             and getattr(node.func, "attr", getattr(node.func, "id", None)) in TRAINERS]
    assert calls, "no training call found"
    for call in calls:  # (02 also times DAE banks on the CPU, through speed.bank_vs_loop: a benchmark, not a model)
        passes = any(k.arg == "device" for k in call.keywords) or (
            len(call.args) == 3 and ast.unparse(call.args[2]) == "device")  # notebook06_model(profile, tok, device)
        assert passes, f"a training call without the device: {ast.unparse(call)[:120]}"


def test_checkpoints_hold_only_cpu_tensors(tmp_path, monkeypatch):
    monkeypatch.setenv("REPLIB_CACHE", str(tmp_path))
    fit(_make, _step, Loop(4, save_every=2, device="cpu"), "dev", {"kind": "test-device"}, progress=False)
    (final,) = tmp_path.glob("dev-*.pt")
    blob = torch.load(final, weights_only=True)

    def devices(obj):
        if torch.is_tensor(obj):
            yield obj.device.type
        elif isinstance(obj, dict):
            for v in obj.values():
                yield from devices(v)
        elif isinstance(obj, (list, tuple)):
            for v in obj:
                yield from devices(v)

    assert set(devices(blob)) == {"cpu"}


def test_schedule_and_clipping_change_the_run():
    # the loop's own settings act: a cosine schedule and a tight gradient clip each give other weights than the plain
    # run, and the plain run is what the model gets without them (same seed, same numbers)
    def weights(**kw):
        return fit(_make, _step, Loop(20, **kw), progress=False).weight.detach().clone()

    plain = weights()
    assert torch.equal(plain, weights())
    assert not torch.allclose(plain, weights(schedule="cosine"))
    assert not torch.allclose(plain, weights(clip_grad=1e-3))
