"""Stable Diffusion v1.4 loading: the stand-in goes through the same `from_pretrained` path as the real weights, an
offline machine fails fast with instructions, and a half-empty tokenizer is refused."""
import json
import shutil
import time

import huggingface_hub.constants
import numpy as np
import pytest
import torch

from replib.data import prompts
from replib.experiments import sd14_run
from replib.models import pipelines, sd14
from replib.params import ParameterError
from replib.probes import detection


@pytest.fixture(scope="module")
def standin_dir(tmp_path_factory):
    return sd14.build_standin(tmp_path_factory.mktemp("sd14") / "standin")


def test_standin_has_sd14_shape_and_loads_through_from_pretrained(standin_dir):
    loaded = sd14.load_sd14(standin_dir, device="cpu")
    pipe = loaded.pipe
    assert loaded.standin and type(pipe).__name__ == "StableDiffusionPipeline" and loaded.dtype == torch.float32
    assert type(pipe.scheduler).__name__ == "DDIMScheduler"
    assert pipe.scheduler.config.beta_schedule == "scaled_linear" and pipe.vae_scale_factor == 8
    assert len(pipe.tokenizer) == 49_408 and pipe.tokenizer.model_max_length == 77
    names = dict(pipe.unet.named_modules())
    assert "up_blocks.0.resnets.2.nonlinearity" in names
    assert all(f"up_blocks.{b}.resnets.{r}" in names for b, r in [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)])
    gen = pipelines.generate(pipe, ["a photo of a cat", "an old man"], seeds=0, steps=3, guidance_scale=7.5,
                             progress=False)
    assert gen.latents.shape == (2, 4, 16, 16) and gen.images.shape == (2, 3, 128, 128)
    s1 = detection.paper_scores(pipe, gen.latents, "up_blocks.0.resnets.2.nonlinearity", timestep=10)
    s2 = detection.paper_scores(pipe, gen.latents, "up_blocks.0.resnets.2.nonlinearity", timestep=10)
    assert np.isfinite(s1).all() and np.array_equal(s1, s2)


def test_offline_without_weights_fails_fast_with_instructions(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    # huggingface_hub reads the variable once, at import: point its constant at the empty folder too, so a machine
    # that does have SD1.4 in its cache still tests the offline failure
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.delenv(sd14.ENV_VAR, raising=False)
    t0 = time.perf_counter()
    with pytest.raises(sd14.WeightsUnavailable, match="hf download CompVis/stable-diffusion-v1-4"):
        sd14.load_sd14(device="cpu")
    assert time.perf_counter() - t0 < 10
    with pytest.raises(sd14.WeightsUnavailable, match=sd14.ENV_VAR):
        sd14.load_or_standin("real", device="cpu")


def test_not_a_pipeline_folder(tmp_path):
    with pytest.raises(sd14.WeightsUnavailable, match="model_index.json"):
        sd14.load_sd14(tmp_path, device="cpu")


def test_auto_mode_falls_back_to_the_standin(tmp_path, monkeypatch, standin_dir):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.delenv(sd14.ENV_VAR, raising=False)
    loaded = sd14.load_or_standin("auto", device="cpu", standin_dir=standin_dir)
    assert loaded.standin
    with pytest.raises(ParameterError, match="mode"):
        sd14.load_or_standin("fake")


def test_two_token_tokenizer_is_refused(tmp_path, standin_dir):
    broken = tmp_path / "broken"
    shutil.copytree(standin_dir, broken)
    tok = broken / "tokenizer"
    (tok / "vocab.json").write_text(json.dumps({"<|startoftext|>": 0, "<|endoftext|>": 1}))
    (tok / "merges.txt").write_text("#version: 0.2\n")
    for extra in ("tokenizer.json",):
        (tok / extra).unlink(missing_ok=True)
    with pytest.raises(RuntimeError, match="only 2 tokens"):
        sd14.load_sd14(broken, device="cpu")


def test_the_dtype_asked_for_is_the_dtype_loaded(standin_dir):
    """from_pretrained(dtype=...) is honoured by the installed diffusers (pyproject's floor: the first release that
    takes it); an older one would load float32 silently."""
    pipe = sd14.load_sd14(standin_dir, device="cpu", dtype="float16").pipe
    assert pipe.unet.dtype == pipe.vae.dtype == pipe.text_encoder.dtype == torch.float16


def test_the_download_command_we_print_exists():
    """The printed `hf download ...` is a command of the installed huggingface_hub, with the options we pass."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    hf = shutil.which("hf") or str(Path(sys.executable).with_name("hf"))
    assert "hf download" in sd14.how_to_get_weights()
    usage = subprocess.run([hf, "download", "--help"], capture_output=True, text=True, timeout=60).stdout
    assert "--revision" in usage and "--local-dir" in usage


def test_device_and_dtype_choice():
    assert sd14.choose_device("cpu", "auto") == ("cpu", torch.float32)
    assert sd14.choose_device("cpu", "float16") == ("cpu", torch.float16)
    with pytest.raises(ParameterError, match="dtype"):
        sd14.choose_device("cpu", "bf16")
    if not torch.cuda.is_available():
        with pytest.raises(ParameterError, match="cuda"):
            sd14.choose_device("cuda")


def test_banner_and_tags_say_stand_in_loudly(standin_dir):
    standin = sd14.load_sd14(standin_dir, device="cpu")
    real = sd14.LoadedPipeline(standin.pipe, "CompVis/stable-diffusion-v1-4@133a221b (cache)", False, "cuda",
                               torch.float16, 9.0)
    box = sd14_run.banner(standin)
    assert "NOT meaningful" in box._repr_html_() and "NOT meaningful" in box._repr_markdown_()
    assert "hf download" in repr(box) and sd14.ENV_VAR in repr(box)
    assert sd14_run.tag(standin) == sd14_run.STANDIN_TAG + " " and sd14_run.STANDIN_TAG in sd14_run.model_label(standin)
    assert sd14_run.tag(real) == "" and "STAND-IN" not in sd14_run.banner(real)._repr_html_()
    assert "float16" in repr(sd14_run.banner(real)) and "SD1.4" in sd14_run.model_label(real)


def test_banner_says_when_the_prompts_are_the_kits_examples(standin_dir):
    standin = sd14.load_sd14(standin_dir, device="cpu")
    published = prompts.PromptSet("memorized", ["a"], None, "0" * 64)
    plain, examples = sd14_run.banner(standin, published), sd14_run.banner(standin, published, prompts.example_set("memorized"))
    assert not plain.example_prompts and "example prompts" not in repr(plain)
    assert examples.example_prompts and "EXAMPLE PROMPTS" in repr(examples).splitlines()[0]
    for text in (repr(examples), examples._repr_html_(), examples._repr_markdown_()):
        assert "example prompts" in text and "not the published sets" in text and prompts.ENV_VAR in text


def test_start_names_bad_notebook_parameters_and_loads_the_standin(monkeypatch):
    for bad, name in ((("fake", "cpu", "auto"), "MODE"), (("standin", "tpu", "auto"), "DEVICE"),
                      (("standin", "cpu", "float8"), "DTYPE")):
        with pytest.raises(ParameterError, match=name):
            sd14_run.start(bad[0], None, bad[1], bad[2], 0, 1, {})
    start = sd14_run.start("standin", "", "cpu", "auto", 0, 1, {"memorized": "memorized"})
    assert start.loaded.standin and start.pipe is start.loaded.pipe and start.tag == sd14_run.tag(start.loaded)
    assert list(start.sets) == ["memorized"] and "STAND-IN" in repr(start.banner)


def test_real_mode_settings_are_the_authors():
    """With the real weights, 08 averages Wen et al.'s first step over 4 starting noises (their `detect_mem.py`) and
    09 builds the concept from 50 reference portraits (their `SD_steering.ipynb`); the stand-in keeps a small number."""
    from replib.execute import notebook_parameters

    p08, p09 = notebook_parameters("08", "full"), notebook_parameters("09", "full")
    assert p08["WEN_GENERATIONS"] == 4
    assert p09["N_REFERENCE"] == 50 and p09["STANDIN_REFERENCE"] < 50
    assert (p09["STEPS"], p09["WINDOW"]) == (40, [18, 37])
