"""Prompt-free memorization detection from a diffusion UNet's intermediate representation (the paper's detector).

Recipe (the paper, Stable Diffusion v1.4): take a generated image x0 (its latent when the model has a VAE), add noise
at a small timestep t (10 of 1000), run the UNet once, capture one block's activation, pool its spatial maximum over
H x W into a vector with one entry per channel, and score = the standard deviation of that vector. A memorized
generation lights up a few channels strongly (spiky, high std); a novel one spreads its activation (balanced, low
std). The same function accepts any diffusers UNet: extra inputs (e.g. `encoder_hidden_states` of the empty prompt
for a text-conditioned UNet) go through `unet_kwargs`.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch

from ..models.sd14 import DETECTOR_LAYER, DETECTOR_TIMESTEP, PublishedTable
from ..params import check_int
from .hooks import attached
from .metrics import representation_std, spikiness
from .representations import capture_features


DETECTOR_STREAM = 0xDE7EC7  # spawn key of the detector's seed stream (`detector_seed`)


def detector_seed(seed: int) -> int:
    """The seed the detector's noise is drawn with for `seed`: a separate stream (numpy's `SeedSequence` with its own
    spawn key), so the detector never adds the very noise a generation with the same seed started from. The authors
    draw fresh noise (`randn_like`); reusing the starting noise would put a memorized sample's noised input almost on
    its own sampling path (notebook 06 measures the difference)."""
    return _stream_seed(seed, (DETECTOR_STREAM,))


def encoder_seed(seed: int) -> int:
    """The seed of the VAE posterior sample for `seed` (`pipelines.encode`): a third stream, apart from the
    generation's and the detector's noise."""
    return _stream_seed(seed, (DETECTOR_STREAM, 1))


def _stream_seed(seed: int, key: tuple[int, ...]) -> int:
    """A torch seed (62 bits) for `seed` in the stream `key` (numpy `SeedSequence` spawn key)."""
    state = np.random.SeedSequence(int(seed), spawn_key=key).generate_state(2, np.uint32)
    return int(state[0]) << 31 | int(state[1]) >> 1


def noise_for(shape: torch.Size | tuple[int, ...], seed: int | list[int]) -> torch.Tensor:
    """The detector's Gaussian noise of `shape` (n, ...), from the detector's own stream (`detector_seed`): one
    generator for an int `seed`, or, for a list of n seeds, row i from its own generator for seed[i] (so row i does
    not depend on which other rows share the batch)."""
    if isinstance(seed, (int, np.integer)):
        return torch.randn(shape, generator=torch.Generator().manual_seed(detector_seed(seed)))
    seeds = list(seed)
    if len(seeds) != shape[0]:
        raise ValueError(f"{shape[0]} samples but {len(seeds)} noise seeds")
    return torch.stack([torch.randn(shape[1:], generator=torch.Generator().manual_seed(detector_seed(s)))
                        for s in seeds])


@torch.no_grad()
def noised_representations(unet: torch.nn.Module, x0: torch.Tensor, layers: list[str] | str, timestep: int = 10,
                           pool: str = "max", seed: int | list[int] = 0, num_train_timesteps: int = 1000,
                           unet_kwargs: dict | None = None, batch_size: int = 128, scheduler=None,
                           noise: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Pooled activations (n, channels) of `layers` for one UNet pass on x0 noised to `timestep` (DDPM forward
    process, `scheduler.add_noise`, noise seeded by `seed` so the same image always gets the same score; a list of
    seeds, one per image, makes each image's noise independent of the batch it is scored in, see `noise_for`).
    `noise` (same shape as x0) replaces the seeded draw: e.g. each sample's own starting noise, for a control.

    `scheduler` sets the noise schedule (default: diffusers' `DDPMScheduler` with its default linear betas; pass the
    pipeline's scheduler for Stable Diffusion). Tensors in `unet_kwargs` with batch size 1 (e.g. the empty prompt's
    `encoder_hidden_states`) are broadcast to the batch."""
    from diffusers import DDPMScheduler

    if scheduler is not None:
        num_train_timesteps = scheduler.config.num_train_timesteps
    check_int("timestep", timestep, 0, num_train_timesteps - 1)
    layers = [layers] if isinstance(layers, str) else list(layers)
    scheduler = scheduler or DDPMScheduler(num_train_timesteps=num_train_timesteps)
    if noise is None:
        noise = noise_for(x0.shape, seed)
    elif noise.shape != x0.shape:
        raise ValueError(f"noise has shape {tuple(noise.shape)}, the samples {tuple(x0.shape)}")
    param = next(unet.parameters())
    out: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    for start in range(0, len(x0), batch_size):
        x = x0[start:start + batch_size].float()
        t = torch.full((len(x),), timestep, dtype=torch.long)
        xt = scheduler.add_noise(x, noise[start:start + batch_size], t)
        extra = {k: v.expand(len(x), *v.shape[1:]) if torch.is_tensor(v) and v.shape[0] == 1 else v
                 for k, v in (unet_kwargs or {}).items()}
        with capture_features(unet, layers, pool=pool) as feats:
            unet(xt.to(param.device, param.dtype), t.to(param.device), **extra)
        for name in layers:
            out[name].append(feats[name].float().cpu())
    return {name: torch.cat(v) for name, v in out.items()}


def representation_std_scores(unet: torch.nn.Module, x0: torch.Tensor, layers: list[str] | str, timestep: int = 10,
                              pool: str = "max", seed: int = 0, **kwargs) -> dict[str, np.ndarray]:
    """The paper's memorization score of every image in x0 at every layer: std of the pooled activation vector.
    Higher = more likely memorized."""
    reps = noised_representations(unet, x0, layers, timestep, pool, seed, **kwargs)
    return {name: representation_std(v).numpy() for name, v in reps.items()}


def std_and_spikiness(unet: torch.nn.Module, x0: torch.Tensor, layer: str, timestep: int = 10, pool: str = "max",
                      seed: int = 0) -> dict[str, float]:
    """Two summaries of how spiky `layer` is on the images x0 after one noised UNet pass (`noised_representations`):
    the mean detector score ("std": the paper's memorization score, the std over channels of the pooled activation)
    and the mean scale-free spikiness ("spikiness": std / (mean * sqrt(p - 1)), in [0, 1]), which does not carry the
    model's activation level."""
    h = noised_representations(unet, x0, layer, timestep, pool, seed=seed)[layer]
    return {"std": representation_std(h).mean().item(), "spikiness": spikiness(h).mean().item()}


def resnet_activation_layers(unet: torch.nn.Module) -> list[str]:
    """Every ResNet block's `nonlinearity` module in a diffusers UNet, in the order data flows (down, mid, up): the
    candidates for the detector's layer. The paper's SD1.4 choice, `up_blocks.0.resnets.2.nonlinearity`, is one."""
    names = [n for n, _ in unet.named_modules() if ".resnets." in n and n.endswith(".nonlinearity")]
    rank = {"down_blocks": 0, "mid_block": 1, "up_blocks": 2}
    return sorted(names, key=lambda n: (rank.get(n.split(".")[0], 3), [int(p) if p.isdigit() else 0 for p in n.split(".")]))


# --- Detectors for any StableDiffusionPipeline (the kit's glyph model or SD1.4) ---------------------------------------

def paper_representations(pipe, latents: torch.Tensor, layers: list[str] | str, timestep: int = 10, pool: str = "max",
                          seed: int | list[int] = 0, batch_size: int = 32, noise: torch.Tensor | None = None
                          ) -> dict[str, torch.Tensor]:
    """What the paper's detector looks at: the pooled activations (n, channels) of `layers` for model-space samples
    (`Generations.latents`; use `pipelines.encode` for images from elsewhere) noised to `timestep` with the
    pipeline's own noise schedule, in one UNet pass with the **empty** prompt."""
    from diffusers import DDPMScheduler

    from ..models.pipelines import prompt_embeddings

    empty = prompt_embeddings(pipe, [""])
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    return noised_representations(pipe.unet, latents, layers, timestep, pool, seed, batch_size=batch_size,
                                  scheduler=scheduler, unet_kwargs={"encoder_hidden_states": empty}, noise=noise)


def paper_scores(pipe, latents: torch.Tensor, layer: str = DETECTOR_LAYER, timestep: int = DETECTOR_TIMESTEP,
                 pool: str = "max", seed: int | list[int] = 0, batch_size: int = 32,
                 noise: torch.Tensor | None = None) -> np.ndarray:
    """The paper's prompt-free detector on a pipeline: score = std of `paper_representations` at `layer` (spatial
    `pool`). One UNet evaluation per sample; higher = more likely memorized. `noise` replaces the detector's own
    seeded noise (see `noised_representations`)."""
    reps = paper_representations(pipe, latents, layer, timestep, pool, seed, batch_size, noise)[layer]
    return representation_std(reps).numpy()


def image_latents(pipe, images, seed: int | list[int] = 0) -> torch.Tensor:
    """What the paper's detector scores when it starts from images: tensors (n, C, H, W) in [-1, 1], PIL images or
    file paths, brought to the pipeline's resolution and encoded with its VAE as the authors encode (a sample of the
    posterior, seeded per image by `encoder_seed`; pixels as they are without a VAE). `seed`: one per image, or an
    int for seed, seed + 1, ..."""
    from ..models.pipelines import encode_images

    n = len(images)
    seeds = [int(seed) + i for i in range(n)] if isinstance(seed, (int, np.integer)) else list(seed)
    return encode_images(pipe, images, [encoder_seed(s) for s in seeds])


def paper_scores_from_images(pipe, images, layer: str = DETECTOR_LAYER, timestep: int = DETECTOR_TIMESTEP,
                             pool: str = "max", seed: int | list[int] = 0, batch_size: int = 32) -> np.ndarray:
    """The paper's detector as the paper runs it, from images (`image_latents`), noised to `timestep` and scored in
    one UNet pass with the empty prompt. Needs no prompt, no seed of the generation and no training data. A path
    that cannot be read raises `pipelines.ImageReadError`, which names the file and the reason."""
    return paper_scores(pipe, image_latents(pipe, images, seed), layer, timestep, pool, seed, batch_size)


class GuidanceRecorder:
    """Records, at every UNet call of a classifier-free-guidance pipeline, ||eps(x_t, c) - eps(x_t, empty)||_2 per
    sample: Wen et al.'s (ICLR 2024) memorization signal. Diffusers stacks the batch as [unconditional, conditional]."""

    def __init__(self):
        self.calls: list[torch.Tensor] = []

    def hook(self, _module, _inputs, output):
        eps = output[0] if isinstance(output, (tuple, list)) else output.sample
        self.calls.append(guidance_norms(eps).cpu())

    def scores(self, steps: int) -> tuple[np.ndarray, np.ndarray]:
        """(first-step norms, norms averaged over all steps) for generations run in batches of `steps` calls each."""
        if len(self.calls) % steps:
            raise ValueError(f"recorded {len(self.calls)} UNet calls, not a multiple of steps={steps}")
        blocks = [torch.stack(self.calls[i:i + steps]) for i in range(0, len(self.calls), steps)]
        per_step = torch.cat(blocks, dim=1)  # (steps, n)
        return per_step[0].numpy(), per_step.mean(0).numpy()


def guidance_norms(eps: torch.Tensor) -> torch.Tensor:
    """Wen et al.'s quantity for one guided UNet call: eps is the noise prediction of the batch
    [unconditional; conditional] (2n, ...), the result ||eps_cond - eps_uncond||_2 per prompt (n,). Not scaled by
    the guidance: the text's pull on the prediction, whatever the sampler does with it."""
    uncond, cond = eps.float().chunk(2)
    return (cond - uncond).flatten(1).norm(dim=1)


@contextmanager
def record_guidance(pipe) -> Iterator[GuidanceRecorder]:
    """`with record_guidance(pipe) as rec: generate(pipe, ...)`, then `rec.scores(steps)`. The hook is removed on exit,
    also on error."""
    rec = GuidanceRecorder()
    with attached([(pipe.unet, rec.hook)]):
        yield rec


@torch.no_grad()
def first_step_prediction(pipe, prompts: list[str], seeds: list[int] | int = 0, steps: int = 50) -> torch.Tensor:
    """The UNet's noise prediction at the first sampling step of a guided generation, both halves: (2n, C, H, W),
    the first n rows without the prompts (unconditional), the last n with them. The input is the noise each seed
    starts generation from (`pipelines.starting_noise`, scaled by the scheduler's `init_noise_sigma`)."""
    from ..models.pipelines import execution_device, per_prompt_seeds, starting_noise

    prompts = list(prompts)
    seeds = per_prompt_seeds(prompts, seeds)
    unet, device = pipe.unet, execution_device(pipe)
    pipe.scheduler.set_timesteps(steps, device=device)
    t = pipe.scheduler.timesteps[0]
    x = starting_noise(pipe, seeds).to(device, unet.dtype) * pipe.scheduler.init_noise_sigma
    cond, uncond = pipe.encode_prompt(prompts, device, 1, True)
    return unet(torch.cat([x, x]), t, encoder_hidden_states=torch.cat([uncond, cond])).sample.float()


def wen_first_step_scores(pipe, prompts: list[str], seeds: list[int] | int = 0, steps: int = 50,
                          batch_size: int = 32) -> np.ndarray:
    """Wen et al.'s one-step detector on its own: the UNet's guided prediction at the first sampling step from the
    noise each seed would start generation from (`first_step_prediction`, two evaluations: with and without the
    prompt), score = ||eps_c - eps_empty||_2 (`guidance_norms`). Equals the first step that `record_guidance` sees
    during a full generation with the same seeds."""
    from ..models.pipelines import per_prompt_seeds

    prompts = list(prompts)
    seeds = per_prompt_seeds(prompts, seeds)
    return torch.cat([guidance_norms(first_step_prediction(pipe, prompts[i:i + batch_size], seeds[i:i + batch_size],
                                                           steps)).cpu()
                      for i in range(0, len(prompts), batch_size)]).numpy()


WEN_SEED_STRIDE = 100_000  # extra generation j of a k-generation Wen score starts from seed + j * WEN_SEED_STRIDE


def wen_first_step_averaged(pipe, prompts: list[str], seeds: list[int] | int = 0, steps: int = 50,
                            generations: int = 4, batch_size: int = 32) -> np.ndarray:
    """Wen et al.'s first-step norm averaged over `generations` starting noises per prompt, as their `detect_mem.py`
    does (they report 1 and 4): the prompt's own seed, then seed + j * WEN_SEED_STRIDE. 2 x `generations` UNet
    evaluations per prompt."""
    from ..models.pipelines import per_prompt_seeds

    check_int("generations", generations, 1)
    seeds = per_prompt_seeds(list(prompts), seeds)
    runs = [wen_first_step_scores(pipe, prompts, [s + j * WEN_SEED_STRIDE for s in seeds], steps, batch_size)
            for j in range(generations)]
    return np.mean(runs, axis=0)


def layer_pool_table(scores: dict[tuple[str, str], np.ndarray], labels, mask=None) -> "pd.DataFrame":
    """AUROC and TPR@1%FPR (`metrics.detection_summary`) of each (layer, pool) score, on the samples in `mask` (all by
    default): rows = layers in the order given, columns = (metric, pool). For choosing or exploring the detector's
    layer; choose on a calibration half, not on the samples you report."""
    import pandas as pd

    from .metrics import detection_summary

    labels = np.asarray(labels)
    mask = np.ones(len(labels), dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    rows = [{"layer": layer, "pool": pool, **detection_summary(np.asarray(s)[mask], labels[mask])}
            for (layer, pool), s in scores.items()]
    layers = list(dict.fromkeys(layer for layer, _ in scores))
    return pd.DataFrame(rows).drop(columns="threshold").pivot(index="layer", columns="pool").reindex(layers)


def detector_table(results: dict[str, dict], labels) -> "pd.DataFrame":
    """One row per detector: AUROC with its bootstrap 95% interval (`metrics.auroc_interval`), TPR@1%FPR (threshold =
    99th percentile of the negatives' scores, see `metrics.detection_summary`), seconds per sample and UNet
    evaluations per sample.

    results: {name: {"scores": (n,), "seconds": total wall seconds for the n samples, "unet_calls": per sample}}."""
    import pandas as pd

    from .metrics import auroc_interval, detection_summary

    rows = []
    for name, r in results.items():
        summary = detection_summary(r["scores"], labels)
        low, high = auroc_interval(r["scores"], labels)
        rows.append({"detector": name, "AUROC": summary["AUROC"], "AUROC 95% low": low, "AUROC 95% high": high,
                     "TPR@1%FPR": summary["TPR@1%FPR"],
                     "s / sample": r["seconds"] / len(r["scores"]), "UNet calls / sample": r["unet_calls"]})
    return pd.DataFrame(rows).set_index("detector")


KIT_TPR_DEFINITION = ("kit: threshold = the 99th percentile of the non-memorized prompts' scores; TPR = the share of "
                      "memorized prompts scoring strictly above it (`metrics.detection_summary`)")

def beside_published(table: "pd.DataFrame", names: dict[str, str], published: PublishedTable,
                     label: str = "kit") -> "pd.DataFrame":
    """One source's published rows with the kit's measured AUROC, TPR@1%FPR and seconds per sample next to them.
    `names` maps a published detector to its row in `table` (a `detector_table`); a published detector the kit does
    not run gets NaN. The table's `attrs` carry the source, its negative prompt set and its TPR definition."""
    import pandas as pd

    rows = []
    for name, (auroc_pub, tpr_pub, seconds_pub) in published.rows.items():
        ours = table.loc[names[name]] if name in names else None
        nan = float("nan")
        rows.append({"detector": name, "AUROC published": auroc_pub,
                     f"AUROC {label}": nan if ours is None else ours["AUROC"],
                     "TPR@1%FPR published": tpr_pub,
                     f"TPR@1%FPR {label}": nan if ours is None else ours["TPR@1%FPR"],
                     "s / sample published": nan if seconds_pub is None else seconds_pub,
                     f"s / sample {label}": nan if ours is None else ours["s / sample"]})
    out = pd.DataFrame(rows).set_index("detector")
    out.attrs.update(source=published.source, negatives=published.negatives, tpr=published.tpr_definition)
    return out
