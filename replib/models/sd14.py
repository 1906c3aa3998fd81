"""Stable Diffusion v1.4 for the kit: the real pipeline when its weights are here, an honest stand-in when not.

`load_sd14` loads `CompVis/stable-diffusion-v1-4` at a pinned revision with diffusers'
`StableDiffusionPipeline.from_pretrained`, from a local folder or the user's Hugging Face cache, with a DDIM scheduler
built from the pipeline's own config, no safety checker, fp16 on CUDA and fp32 on a CPU. It never waits on a network:
the cache is tried with `local_files_only=True`, and a hub download is tried only when the hub answers a 3-second
connection test (`hub.load_local_first`, shared with `clipscore`). When the weights are out of reach it raises `WeightsUnavailable` within seconds, with the one
command that fetches them and the variable that points the kit at a local copy. Measured here (offline): diffusers
itself fails in 0.1 s, but `CLIPTokenizer.from_pretrained(hub id)` returns a 2-token tokenizer without an error, so
the loaded tokenizer is checked (`text.check_tokenizer`).

`build_standin` writes a pipeline with SD1.4's *architecture shape* (a VAE with 4 latent channels and 8x
downsampling, a UNet with SD1.4's block types and 2 ResNets per down level, so `up_blocks.0.resnets.2` exists, a CLIP
text encoder, CLIP's real tokenizer, SD1.4's scheduler config) but small random weights, with `save_pretrained`;
`load_sd14(path)` then loads it through the same `from_pretrained` path as the real weights. Scores computed with it
say nothing about memorization: it exists so that the notebooks and the command line run end to end anywhere.

Every fact about SD1.4 that the kit uses lives here: the model id and revision, the scheduler config, the paper's
detector layer and timestep, the paper's steering blocks, the modes and dtypes of the CLI and notebooks 08-09, and
the published detection numbers (`PUBLISHED`, each with its source).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..hub import STANDIN_MARK, load_local_first, quiet_loading
from ..params import check_choice
from ..session import DEVICES  # noqa: F401  (the CLI's and the notebooks' choices, with MODES and DTYPES)
from ..session import choose_device as choose_torch_device

MODEL_ID = "CompVis/stable-diffusion-v1-4"
REVISION = "133a221b8aa7292a167afc5127cb63fb5005638b"  # the diffusers-format main branch of the model repo
ENV_VAR = "REPLIB_SD14"  # a local folder with the pipeline (model_index.json, unet/, vae/, ...)
MODES = ("auto", "real", "standin")  # real: SD1.4 or an error; standin: the stand-in; auto: real when it loads
DTYPES = ("auto", "float32", "float16")

# The paper's detector on SD1.4: the first up block's last ResNet (its SiLU after norm2), one pass at t = 10 of 1000.
DETECTOR_LAYER = "up_blocks.0.resnets.2.nonlinearity"
DETECTOR_TIMESTEP = 10

# The paper's steering blocks on SD1.4: up_blocks.0 resnets 0-2 and up_blocks.1 resnets 0-1.
STEERING_LAYERS = ["up_blocks.0.resnets.0", "up_blocks.0.resnets.1", "up_blocks.0.resnets.2",
                   "up_blocks.1.resnets.0", "up_blocks.1.resnets.1"]

SD14_SCHEDULER = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
                  "beta_schedule": "scaled_linear", "clip_sample": False, "set_alpha_to_one": False,
                  "steps_offset": 1}


class WeightsUnavailable(RuntimeError):
    """The SD1.4 weights cannot be loaded from here; the message says how to get them."""


@dataclass
class LoadedPipeline:
    """A loaded pipeline and how: `standin` is True for small random components (scores are not meaningful)."""

    pipe: object
    source: str
    standin: bool
    device: str
    dtype: torch.dtype
    seconds: float


def how_to_get_weights() -> str:
    return (f"Stable Diffusion v1.4 weights are not available here. Get them once (about 5 GB) with\n"
            f"    hf download {MODEL_ID} --revision {REVISION} --local-dir sd-v1-4\n"
            f"then point the kit at the folder: export {ENV_VAR}=$PWD/sd-v1-4 (or pass path=...). "
            f"Without them, use the stand-in (mode 'standin'): same code, small random weights, scores not meaningful.")


def choose_device(device: str = "auto", dtype: str = "auto") -> tuple[str, torch.dtype]:
    """'auto': CUDA with fp16 when a GPU is present, else CPU with fp32. Either can be forced."""
    device = choose_torch_device(device, parameter="device").type
    check_choice("dtype", dtype, DTYPES)
    if dtype == "auto":
        dtype = "float16" if device == "cuda" else "float32"
    return device, getattr(torch, dtype)


def _from_pretrained(source: str, device: str, dtype: torch.dtype, **kwargs):
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    from .text import check_tokenizer

    with quiet_loading():
        pipe = StableDiffusionPipeline.from_pretrained(source, dtype=dtype, safety_checker=None,
                                                       requires_safety_checker=False, **kwargs)
    check_tokenizer(pipe.tokenizer)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def load_sd14(path: str | os.PathLike | None = None, device: str = "auto", dtype: str = "auto",
              revision: str = REVISION, allow_download: bool = True) -> LoadedPipeline:
    """The SD1.4 pipeline from `path` (a local folder; default: $REPLIB_SD14), else from the Hugging Face cache at
    `revision`, else downloaded (when `allow_download` and the hub answers). Raises `WeightsUnavailable` otherwise."""
    device, torch_dtype = choose_device(device, dtype)
    t0 = time.perf_counter()
    pipe, source, standin = load_local_first(
        lambda src, **kw: _from_pretrained(src, device, torch_dtype, **kw), MODEL_ID, f"{MODEL_ID}@{revision[:8]}",
        path, ENV_VAR, "model_index.json", how_to_get_weights(), WeightsUnavailable, allow_download, revision=revision)
    return LoadedPipeline(pipe, source, standin, device, torch_dtype, time.perf_counter() - t0)


def build_standin(folder: str | os.PathLike, seed: int = 0, sample_size: int = 16) -> Path:
    """Write a small random pipeline with SD1.4's shape into `folder` (`save_pretrained`) and return the folder.

    Shape kept from SD1.4: VAE with 4 latent channels and 4 levels (8x downsampling, scaling factor 0.18215); UNet with
    down blocks CrossAttn x3 + plain, up blocks plain + CrossAttn x3, 2 ResNets per down level (3 per up level), so
    the paper's layer `up_blocks.0.resnets.2.nonlinearity` and steering blocks exist; CLIP text encoder with 77
    positions and CLIP's tokenizer; SD1.4's DDIM scheduler config. Sizes are small (channels 32-64, width 32), and
    `sample_size` latents (16 -> 128x128 pixels) keep a CPU run to seconds."""
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )

    from .text import clip_tokenizer, small_text_encoder

    folder = Path(folder)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
            sample_size=sample_size, in_channels=4, out_channels=4, layers_per_block=2,
            block_out_channels=(32, 32, 64, 64), norm_num_groups=8, cross_attention_dim=32, attention_head_dim=4,
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
        vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 16, 32, 32),
                            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                            norm_num_groups=8, sample_size=sample_size * 8, scaling_factor=0.18215)
    text_encoder = small_text_encoder(hidden=32, layers=2, heads=2, seed=seed)
    pipe = StableDiffusionPipeline(vae=vae.eval(), text_encoder=text_encoder.eval(), tokenizer=clip_tokenizer(),
                                   unet=unet.eval(), scheduler=DDIMScheduler(**SD14_SCHEDULER), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(folder)
    (folder / STANDIN_MARK).write_text("Small random components with Stable Diffusion v1.4's architecture shape, made "
                                       "by replib.models.sd14.build_standin. Scores computed with it are not meaningful.\n")
    return folder


def load_or_standin(mode: str = "auto", path: str | os.PathLike | None = None, device: str = "auto",
                    dtype: str = "auto", standin_dir: str | os.PathLike | None = None) -> LoadedPipeline:
    """mode 'real': SD1.4 or `WeightsUnavailable`; 'standin': the stand-in (built once under the checkpoint cache);
    'auto': the real weights when they load, else the stand-in (the caller should say so loudly)."""
    check_choice("mode", mode, MODES)
    if mode != "standin":
        try:
            return load_sd14(path, device, dtype)
        except WeightsUnavailable:
            if mode == "real":
                raise
    from ..files import cache_dir

    folder = Path(standin_dir) if standin_dir else cache_dir() / "sd14-standin"
    if not (folder / STANDIN_MARK).exists():
        build_standin(folder)
    loaded = load_sd14(folder, device, dtype)
    loaded.standin = True
    return loaded


@dataclass(frozen=True)
class PublishedTable:
    """Published SD1.4 detection numbers from one source, with what they were measured on."""

    source: str
    negatives: str  # the non-memorized prompt set the source compared against
    tpr_definition: str
    rows: dict[str, tuple[float, float, float | None]]  # detector -> (AUROC, TPR@1%FPR, seconds per sample or None)


# Webster's 500 memorized prompts against 500 non-memorized ones on Stable Diffusion v1.4, from two sources that used
# different negative sets: keep them apart. Notebook 08 puts the kit's numbers beside each.
PUBLISHED = {
    "paper": PublishedTable(
        source="the paper (arXiv 2512.20963), its SD1.4 detection table",
        negatives="non-memorized prompts from Lexica",
        tpr_definition="TPR at 1% FPR as the paper reports it (its threshold rule is not restated here)",
        rows={"paper (representation std)": (0.987, 0.961, 0.067), "Wen et al.": (0.986, 0.961, 0.134)}),
    "jeon": PublishedTable(
        source="Jeon et al. (ICML 2025), Table 1",
        negatives="Jeon et al.'s 500 non-memorized prompts (COCO, Lexica, Tuxemon, GPT-4): the set the kit uses",
        tpr_definition="TPR at 1% FPR as Jeon et al. report it (their threshold rule is not restated here)",
        rows={"Wen et al., first step": (0.976, 0.896, None), "Jeon et al. (sharpness)": (0.987, 0.908, None)}),
}
