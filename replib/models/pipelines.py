"""Generation with any diffusers `StableDiffusionPipeline`: the kit's pixel-space text-to-image model (no VAE) and
Stable Diffusion v1.4 (with its VAE) go through the same few functions.

The *model space* is what the UNet sees: VAE latents for SD1.4 (scaled by `vae.config.scaling_factor`), pixels in
[-1, 1] for a pipeline without a VAE. Detection and steering work in model space; pictures are decoded to pixels.
"""
from __future__ import annotations

import errno
import os
from dataclasses import dataclass

import torch


@dataclass
class Generations:
    """What `generate` returns: model-space samples (the UNet's input space), pixels in [-1, 1] and the prompts."""

    latents: torch.Tensor
    images: torch.Tensor
    prompts: list[str]
    seconds: float


def has_vae(pipe) -> bool:
    return getattr(pipe, "vae", None) is not None


def execution_device(pipe) -> torch.device:
    return next(pipe.unet.parameters()).device


@torch.no_grad()
def decode(pipe, latents: torch.Tensor) -> torch.Tensor:
    """Model space -> pixels (n, C, H, W) in [-1, 1] (the identity without a VAE)."""
    if not has_vae(pipe):
        return latents.float().clamp(-1, 1).cpu()
    vae = pipe.vae
    out = vae.decode(latents.to(vae.device, vae.dtype) / vae.config.scaling_factor, return_dict=False)[0]
    return out.float().clamp(-1, 1).cpu()


@torch.no_grad()
def encode(pipe, images: torch.Tensor, seeds: list[int] | None = None) -> torch.Tensor:
    """Pixels in [-1, 1] -> model space, scaled (the identity without a VAE). With `seeds` (one per image) a sample of
    the VAE posterior drawn with each seed's own generator (`latent_dist.sample()`, as the paper's authors encode);
    without, the posterior's mean."""
    if not has_vae(pipe):
        return images.float()
    vae = pipe.vae
    dist = vae.encode(images.to(vae.device, vae.dtype)).latent_dist
    if seeds is None:
        z = dist.mean
    else:
        if len(seeds) != len(images):
            raise ValueError(f"{len(images)} images but {len(seeds)} encoder seeds")
        z = dist.sample(generator=[torch.Generator().manual_seed(int(s)) for s in seeds])
    return (z * vae.config.scaling_factor).float().cpu()


def to_8bit(images: torch.Tensor) -> torch.Tensor:
    """Pixels in [-1, 1] rounded to the 256 levels an 8-bit PNG stores, still in [-1, 1]: what a saved image keeps
    of a generation (the decoded tensor carries more precision than any file)."""
    return torch.round((images.float().clamp(-1, 1) + 1) * 127.5) / 127.5 - 1


def pixel_shape(pipe) -> tuple[int, int]:
    """(channels, size) of the images the pipeline generates: the VAE's input for SD1.4-like pipelines (size = the
    UNet's sample size times the VAE's downsampling), the UNet's own input without a VAE."""
    if has_vae(pipe):
        return pipe.vae.config.in_channels, pipe.unet.config.sample_size * pipe.vae_scale_factor
    return pipe.unet.config.in_channels, pipe.unet.config.sample_size


class ImageReadError(OSError):
    """A file that cannot be read as an image. `path` says which, `reason` why, in a few words (what `replib.score`
    writes beside a skipped file): not an image, truncated or corrupt, empty, a directory, permission denied, too many
    pixels, a broken or looping symbolic link."""

    def __init__(self, path: str | os.PathLike, reason: str):
        super().__init__(f"cannot read {path} as an image: {reason}")
        self.path, self.reason = str(path), reason

    def __reduce__(self):  # picklable (e.g. raised in a data-loader worker), although __init__ takes two arguments
        return type(self), (self.path, self.reason)


def _read_failure(err: Exception) -> str:
    """The reason, in a few words, why opening or decoding an image file raised `err`."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(err, IsADirectoryError):
        return "a directory"
    if isinstance(err, PermissionError):
        return "permission denied"
    if isinstance(err, FileNotFoundError):
        return "not found (a broken symbolic link?)"
    if isinstance(err, OSError) and err.errno == errno.ELOOP:
        return "a symbolic-link loop"
    if isinstance(err, Image.DecompressionBombError):
        return f"too many pixels, a possible decompression bomb (PIL.Image.MAX_IMAGE_PIXELS): {err}"
    if isinstance(err, UnidentifiedImageError):
        return "not an image (PIL cannot identify it)"
    return f"truncated or corrupt ({type(err).__name__}: {err})"


def _as_mode(img, mode: str):
    """`img` converted to `mode` ("RGB" or "L"). 16-bit greyscale (PIL modes I;16… and I) is scaled to 8 bits first:
    PIL's own conversion clips it at 255, which turns almost every pixel white."""
    import numpy as np
    from PIL import Image

    if img.mode == "I" or img.mode.startswith("I;16"):
        img = Image.fromarray(np.clip(np.round(np.asarray(img, dtype=np.float64) / 257), 0, 255).astype(np.uint8))
    return img.convert(mode)


def read_image(path: str | os.PathLike, mode: str = "RGB"):
    """The image file at `path` as a PIL image in `mode`, fully decoded now (so a truncated file fails here, not later).
    Any failure raises one `ImageReadError` naming the file and the reason: a folder of images from the web always
    holds a few files that are not what their names say."""
    from PIL import Image

    try:
        if os.stat(path).st_size == 0:  # PIL would only say "cannot identify"
            raise ImageReadError(path, "an empty file")
        with Image.open(path) as img:
            img.load()
            return _as_mode(img, mode)
    except ImageReadError:
        raise
    except Exception as err:  # noqa: BLE001 - a decoder may raise anything; the reason keeps its type and message
        raise ImageReadError(path, _read_failure(err)) from None


def to_pixels(images, channels: int = 3, size: int | None = None) -> torch.Tensor:
    """Images as pixels (n, channels, size, size) in [-1, 1], from a tensor (n, C, H, W) already in [-1, 1], a list of
    PIL images, or a list of file paths (any format PIL reads; `read_image`, so a file that cannot be read raises
    `ImageReadError` naming it). PIL images and files are converted to RGB (or to greyscale for 1 channel; 16-bit
    greyscale scaled, not clipped) and resized (bicubic) to size x size; tensors are resized the same way when needed."""
    import numpy as np
    from PIL import Image

    if torch.is_tensor(images):
        x = images.float()
        if x.dim() != 4 or x.shape[1] != channels:
            raise ValueError(f"image tensor of shape {tuple(x.shape)}: expected (n, {channels}, H, W) in [-1, 1]")
        if size is not None and x.shape[-1] != size:
            x = torch.nn.functional.interpolate(x, size=(size, size), mode="bicubic", antialias=True,
                                                align_corners=False)
        return x.clamp(-1, 1)
    mode = "L" if channels == 1 else "RGB"
    arrays = []
    for item in images:
        img = _as_mode(item, mode) if isinstance(item, Image.Image) else read_image(item, mode)
        if size is not None and img.size != (size, size):
            img = img.resize((size, size), Image.BICUBIC)
        a = np.asarray(img, dtype=np.float32) / 127.5 - 1.0
        arrays.append(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))
    if not arrays:
        raise ValueError("no images given")
    return torch.from_numpy(np.stack(arrays))


def encode_images(pipe, images, seeds: list[int] | None = None) -> torch.Tensor:
    """Images in any form `to_pixels` takes -> model space, at the pipeline's own resolution (`pixel_shape`): what
    the paper's detector reads when it starts from an image rather than from the sampler's latent. `seeds`: sample
    the VAE posterior (see `encode`)."""
    channels, size = pixel_shape(pipe)
    return encode(pipe, to_pixels(images, channels, size), seeds)


@torch.no_grad()
def prompt_embeddings(pipe, prompts: list[str]) -> torch.Tensor:
    """Text-encoder hidden states (n, tokens, dim) exactly as the pipeline computes them ("" = the empty prompt)."""
    embeds, _ = pipe.encode_prompt(list(prompts), execution_device(pipe), 1, False)
    return embeds


def per_prompt_seeds(prompts: list[str], seeds: list[int] | int) -> list[int]:
    """One seed per prompt: `seeds`, seeds + 1, ... for an int, else the list itself (its length must match)."""
    seeds = [seeds + i for i in range(len(prompts))] if isinstance(seeds, int) else list(seeds)
    if len(seeds) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
    return seeds


def starting_noise(pipe, seeds: list[int]) -> torch.Tensor:
    """The latents (n, C, size, size) that `generate` starts sampling from for `seeds` (before the scheduler's
    `init_noise_sigma`): one `randn` per seed from its own generator, as diffusers' `randn_tensor` draws them for a
    list of generators."""
    unet = pipe.unet
    size = unet.config.sample_size
    return torch.cat([torch.randn((1, unet.config.in_channels, size, size), generator=torch.Generator().manual_seed(int(s)))
                      for s in seeds])


@torch.no_grad()
def generate(pipe, prompts: list[str], seeds: list[int] | int = 0, steps: int = 50, guidance_scale: float = 7.5,
             batch_size: int = 16, progress: bool = True, **kwargs) -> Generations:
    """One image per prompt, each from its own seeded generator (so a prompt's image does not depend on the batch it
    ran in). Extra keyword arguments go to the pipeline call (e.g. `callback_on_step_end`)."""
    import time

    from ..widgets import progress as bar

    prompts = list(prompts)
    seeds = per_prompt_seeds(prompts, seeds)
    latents, t0 = [], time.perf_counter()
    for start in bar(range(0, len(prompts), batch_size), desc="generating", disable=not progress,
                     total=(len(prompts) + batch_size - 1) // batch_size):
        chunk = slice(start, start + batch_size)
        gens = [torch.Generator().manual_seed(int(s)) for s in seeds[chunk]]
        out = pipe(prompts[chunk], num_inference_steps=steps, guidance_scale=guidance_scale, generator=gens,
                   output_type="latent", **kwargs)
        latents.append(out.images.float().cpu())
    latents = torch.cat(latents)
    return Generations(latents, decode(pipe, latents), prompts, time.perf_counter() - t0)
