"""CLIP image-text similarity: how close generated images are to a text, for the steering notebooks.

The steering notebook pushes Stable Diffusion v1.4 toward a concept ("an elderly person") and reports *steerability*:
how much the CLIP similarity of the generated images to the concept text rises as the steering strength grows.
`load_clip_scorer` loads `openai/clip-vit-large-patch14` (whose text tower is SD1.4's text encoder; its image tower
scores the images) with transformers' `CLIPModel`, its image processor and `CLIPTokenizer`, in the same order as
`sd14.load_sd14`: a local folder (`path=` or $REPLIB_CLIP), else the Hugging Face cache with `local_files_only=True`,
else a download only when the hub answers (`hub.load_local_first`). Otherwise it raises `ScorerUnavailable` within
seconds, with the one command that fetches the model and the variable that points the kit at it;
`try_load_clip_scorer` returns (None, that message) instead, so a notebook can say why it shows grids only.

Images go in as the kit's pipelines return them: (n, 3, H, W) floats in [-1, 1]. They are turned into 8-bit RGB
arrays (rounded, as `diffusers` does when it makes PIL images) and handed to the model's own image processor, which
resizes, centre-crops and normalises them from its config. Why 8-bit and not floats in [0, 1] with
`do_rescale=False`: transformers' PIL-backed processor resizes through PIL, so it casts a float image to uint8 anyway
(x * 255, truncated, not rounded), and it takes a float image whose values all happen to be whole numbers (e.g. only
0.0 and 1.0) for a 0..255 image; 8-bit input gives the same pixels as scoring saved PNGs, on either processor
backend (PIL or torchvision).

`build_standin_clip` writes a tiny random CLIP (CLIP's real tokenizer, two small towers) with `save_pretrained`, which
loads back through the same path; its similarities are deterministic numbers that say nothing about the images.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..hub import STANDIN_MARK
from ..params import ParameterError

MODEL_ID = "openai/clip-vit-large-patch14"  # SD1.4's text encoder is this model's text tower
ENV_VAR = "REPLIB_CLIP"  # a local folder with the model (config.json, weights, tokenizer and preprocessor files)
BATCH_SIZE = 16  # images per forward pass: bounds memory for ViT-L/14 on a CPU


class ScorerUnavailable(RuntimeError):
    """No CLIP model can be loaded from here; the message says how to get one."""


def how_to_get_clip() -> str:
    return (f"The CLIP model {MODEL_ID} is not available here. Get it once (about 1.7 GB) with\n"
            f"    hf download {MODEL_ID} --local-dir clip-vit-large-patch14\n"
            f"then point the kit at the folder: export {ENV_VAR}=$PWD/clip-vit-large-patch14 (or pass path=...).")


def _image_processor_class():
    """transformers' CLIP image processor class. From transformers 5 on, `CLIPImageProcessor` is the torchvision
    backend and, without torchvision, falls back to `CLIPImageProcessorPil` with a warning; import that one directly
    then (same config files, no warning). transformers 4's `CLIPImageProcessor` is the PIL one."""
    try:
        import torchvision  # noqa: F401
    except ImportError:
        try:
            from transformers import CLIPImageProcessorPil

            return CLIPImageProcessorPil
        except ImportError:
            pass
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor


@dataclass
class ClipScorer:
    """A loaded CLIP model with its image processor and tokenizer, and where it came from: `standin` is True for the
    tiny random stand-in (similarities are not meaningful). Embeddings are L2-normalised, so a dot product is a cosine
    similarity."""

    model: object
    processor: object
    tokenizer: object
    source: str
    standin: bool
    device: str

    def pixel_values(self, images: torch.Tensor) -> torch.Tensor:
        """(n, 3, H, W) images in [-1, 1] -> the model's input (n, 3, S, S): rounded to 8-bit RGB, then resized,
        centre-cropped and normalised by the processor as its config says. Values outside [-1, 1] are clamped; values
        beyond +-1.5 raise ValueError (they are most likely 0..255 pixels)."""
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3 or not len(images):
            raise ValueError(f"images must be a (n, 3, H, W) tensor with n >= 1, got "
                             f"{tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__}")
        x = images.detach().float().cpu()
        if not torch.isfinite(x).all() or x.abs().max() > 1.5:
            raise ValueError(f"images must be finite floats in [-1, 1] (as the kit's pipelines return them), got "
                             f"values in [{x.min().item():.3g}, {x.max().item():.3g}]")
        pixels = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        out = self.processor(images=list(pixels), return_tensors="pt")
        return out["pixel_values"].to(self.device, torch.float32)

    @torch.no_grad()
    def image_embeddings(self, images: torch.Tensor, batch_size: int = BATCH_SIZE) -> torch.Tensor:
        """(n, 3, H, W) images in [-1, 1] -> L2-normalised image embeddings (n, d) on the CPU, `batch_size` images
        per forward pass. Any H, W: the processor resizes and crops to the model's input size."""
        model = self.model
        out = []
        for i in range(0, len(images), batch_size):
            pooled = model.vision_model(pixel_values=self.pixel_values(images[i:i + batch_size])).pooler_output
            out.append(model.visual_projection(pooled).float().cpu())
        return torch.nn.functional.normalize(torch.cat(out), dim=-1)

    @torch.no_grad()
    def text_embeddings(self, texts: list[str]) -> torch.Tensor:
        """Texts -> L2-normalised text embeddings (n, d) on the CPU (truncated to the tokenizer's 77 positions)."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts or not all(isinstance(t, str) for t in texts):
            raise ValueError("texts must be a non-empty list of strings")
        tok = self.tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
        pooled = self.model.text_model(input_ids=tok.input_ids.to(self.device),
                                       attention_mask=tok.attention_mask.to(self.device)).pooler_output
        return torch.nn.functional.normalize(self.model.text_projection(pooled).float().cpu(), dim=-1)

    def similarity(self, images: torch.Tensor, texts: str | list[str]) -> np.ndarray:
        """Cosine similarity (n,) of each image to one text (a str) or to its own text (a list of n strings)."""
        n = len(images)
        texts = [texts] * n if isinstance(texts, str) else list(texts)
        if len(texts) != n:
            raise ValueError(f"texts has {len(texts)} entries for {n} images: pass one string, or one per image")
        image_emb = self.image_embeddings(images)
        # Each distinct text is encoded once, so a str and a list repeating it give equal numbers (a batch of
        # different size changes float rounding in the text tower).
        unique = list(dict.fromkeys(texts))
        text_emb = self.text_embeddings(unique)[[unique.index(t) for t in texts]]
        return (image_emb * text_emb).sum(-1).clamp(-1, 1).numpy().astype(np.float64)


def _from_pretrained(source: str, device: str, **kwargs) -> tuple[object, object, object]:
    from transformers import CLIPModel, CLIPTokenizer

    from ..hub import quiet_loading
    from ..models.text import check_tokenizer

    with quiet_loading():
        model = CLIPModel.from_pretrained(source, **kwargs)
        processor = _image_processor_class().from_pretrained(source, **kwargs)
        tokenizer = CLIPTokenizer.from_pretrained(source, **kwargs)
    check_tokenizer(tokenizer)
    return model.eval().to(device), processor, tokenizer


def load_clip_scorer(path: str | os.PathLike | None = None, model_id: str = MODEL_ID, device: str = "cpu",
                     allow_download: bool = True) -> ClipScorer:
    """A `ClipScorer` from `path` (a local folder; default: $REPLIB_CLIP), else `model_id` from the Hugging Face
    cache, else downloaded (when `allow_download` and the hub answers). Raises `ScorerUnavailable` otherwise, and
    RuntimeError when the loaded tokenizer is not CLIP's (`text.check_tokenizer`). `device`: 'cpu', 'cuda' or
    'auto'; the model runs in float32."""
    from ..hub import load_local_first
    from ..models.sd14 import choose_device

    device, _ = choose_device(device, "float32")
    how_to = how_to_get_clip() if model_id == MODEL_ID else (
        f"{model_id} is not in the Hugging Face cache and cannot be downloaded from here.\n" + how_to_get_clip())
    (model, processor, tokenizer), source, standin = load_local_first(
        lambda src, **kw: _from_pretrained(src, device, **kw), model_id, model_id, path, ENV_VAR, "config.json",
        how_to, ScorerUnavailable, allow_download)
    return ClipScorer(model, processor, tokenizer, source, standin, device)


def try_load_clip_scorer(path: str | os.PathLike | None = None, model_id: str = MODEL_ID, device: str = "cpu",
                         allow_download: bool = True) -> tuple[ClipScorer | None, str]:
    """(scorer, '') when `load_clip_scorer` succeeds, else (None, why): the reason is `ScorerUnavailable`'s message,
    or the error's type and message when a folder or cache copy is broken (e.g. a tokenizer that is not CLIP's).
    Lets a notebook print "no CLIP image model could be loaded: <why>" without a try/except. A bad parameter
    (`ParameterError`) is still raised."""
    try:
        return load_clip_scorer(path, model_id, device, allow_download), ""
    except ParameterError:
        raise
    except ScorerUnavailable as err:
        return None, str(err)
    except (RuntimeError, OSError, ValueError) as err:
        return None, f"{type(err).__name__}: {err}"


def build_standin_clip(folder: str | os.PathLike, seed: int = 0, image_size: int = 32) -> Path:
    """Write a tiny random `CLIPModel` into `folder` (`save_pretrained`) and return the folder, so that
    `load_clip_scorer(folder)` loads it like the real model.

    Text tower: CLIP's vocabulary (49,408) and 77 positions, width 32, 2 layers, 2 heads, with CLIP's real tokenizer
    (`text.clip_tokenizer`). Vision tower: `image_size` pixels, 8-pixel patches, width 32, 2 layers. Projection to
    16 dimensions. Image processor: CLIP's mean/std and bicubic resize of the shortest edge to `image_size`, then a
    centre crop. The same `seed` gives the same weights; the caller's torch RNG is left untouched."""
    from transformers import CLIPConfig, CLIPModel

    from ..hub import quiet_loading
    from ..models.text import KNOWN_IDS, MAX_LENGTH, VOCAB_SIZE, clip_tokenizer

    folder = Path(folder)
    bos, eos = KNOWN_IDS[0], KNOWN_IDS[-1]
    config = CLIPConfig(
        text_config=dict(vocab_size=VOCAB_SIZE, max_position_embeddings=MAX_LENGTH, hidden_size=32,
                         intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, bos_token_id=bos,
                         eos_token_id=eos, pad_token_id=eos),
        vision_config=dict(image_size=image_size, patch_size=8, hidden_size=32, intermediate_size=64,
                           num_hidden_layers=2, num_attention_heads=2),
        projection_dim=16)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPModel(config).eval()
    processor = _image_processor_class()(size={"shortest_edge": image_size},
                                         crop_size={"height": image_size, "width": image_size})
    with quiet_loading():  # no 'Writing model shards' bar
        model.save_pretrained(folder)
    processor.save_pretrained(folder)
    clip_tokenizer().save_pretrained(folder)
    (folder / STANDIN_MARK).write_text("A tiny random CLIP model made by replib.probes.clipscore.build_standin_clip. "
                                       "Similarities computed with it are not meaningful.\n")
    return folder


def standin_scorer(device: str = "cpu") -> ClipScorer:
    """The random stand-in CLIP, built once under the checkpoint cache (`clip-standin/`) and loaded through
    `load_clip_scorer`: for running the scoring code end to end when no CLIP model is here (numbers not meaningful)."""
    from ..files import cache_dir

    folder = cache_dir() / "clip-standin"
    if not (folder / STANDIN_MARK).exists():
        build_standin_clip(folder)
    return load_clip_scorer(folder, device=device)
