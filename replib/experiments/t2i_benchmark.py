"""The memorization-detection benchmark of notebook 06 on a glyph text-to-image pipeline.

Two groups of generations with the same sampler: captions of the duplicated (caption, image) pairs, several seeds each
(label 1), and captions seen once in training, one seed each (label 0). Gu et al.'s d1/d2 rule says which generations
copy their caption's training image; every detector scores the same generations; a control of crisp rendered glyphs
the model never saw checks that the paper's detector reads memorization and not sharpness. The notebook runs it on
main training mix (duplicated pairs most of the rows); notebook 11 runs it on two web-like mixes (at most 10% of the
rows duplicated) beside it and tabulates all three.

The kit's measurements of other web-like mixes (full profile, 2 CPU threads, one seed each; not re-run by the
notebooks): 7,200 distinct pairs + 8 x 100 copies, 16,000 steps of 128 (each duplicated pair seen about 25,600 times,
57 minutes) copied 70% of the duplicated captions' generations and the paper's detector scored AUROC 0.43 (best of
11 layers 0.74); 1,800 + 8 x 25 (each pair seen once about 1,024 times) copied 77% of the captions seen once too;
1,800 + 2 x 100, 16,000 steps of 32, copied none of the duplicated ones; 2,000 + 8 x 25 (9%) after 8,000 steps of 32
(about 2,900 exposures per pair) copied none. `WEB_MIX` (3,600 + 2 x 200, 8,000 steps of 128) trained with seed 1
instead of 0 gave AUROC 1.00. 2 pairs x 200 copies in 8,000 rows (7,600 distinct, 16,000 steps of 128) gave 0.929 at
notebook 06's layer (best layer 0.990): at an equal share per pair, the number of pairs seems to matter more than
the share (one seed, a lead rather than a result).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ..data.glyphs import GlyphSet, make_glyph_set, with_duplicates
from ..models import pipelines
from ..params import ParameterError, check_int
from ..probes import detection, metrics

PAPER_DETECTOR = "paper (std, empty prompt)"  # the paper's detector's row of `detection.detector_table`
NEAREST_NEIGHBOUR = "nearest neighbour (1 - d1/d2)"  # the oracle's row (it needs the training set)
GENERATION_SEED_OFFSET = 1000  # the benchmark's generations start from seed + 1000 (`generation_seeds`)
MIX_KEYS = ("n_distinct", "n_duplicated", "copies", "steps", "batch_size")


@dataclass(frozen=True)
class Mix:
    """A training mix: `n_distinct` pairs seen once plus `n_duplicated` pairs repeated `copies` times, trained for
    `steps` steps of `batch_size` rows."""

    n_distinct: int
    n_duplicated: int
    copies: int
    steps: int
    batch_size: int = 32

    @classmethod
    def from_parameter(cls, name: str, value: dict, max_share: float = 1.0) -> Mix:
        """A mix from a notebook parameter (a dict with the keys MIX_KEYS), every value checked and named, and its
        duplicated share at most `max_share`."""
        if not isinstance(value, dict) or set(value) != set(MIX_KEYS):
            raise ParameterError(f"parameter {name}={value!r} is not allowed: it must be a dict with the keys "
                                 + ", ".join(MIX_KEYS))
        lows = {"n_distinct": 20, "n_duplicated": 1, "copies": 2, "steps": 1, "batch_size": 1}
        mix = cls(**{k: check_int(f"{name}[{k!r}]", value[k], lows[k]) for k in MIX_KEYS})
        if mix.share > max_share:
            raise ParameterError(f"parameter {name}={value!r} is not allowed: its duplicated rows are {mix.share:.1%} "
                                 f"of the training set; at most {max_share:.0%} is allowed")
        return mix

    @property
    def rows(self) -> int:
        return self.n_distinct + self.n_duplicated * self.copies

    @property
    def share(self) -> float:
        """The duplicated pairs' share of the training rows."""
        return self.n_duplicated * self.copies / self.rows

    @property
    def exposures(self) -> float:
        """How often training sees each duplicated pair (in expectation): steps x batch x copies / rows."""
        return self.steps * self.batch_size * self.copies / self.rows

    @property
    def exposures_once(self) -> float:
        """How often training sees each pair that appears once (in expectation): steps x batch / rows. When this is
        large too, the model stores every pair and no caption is left that it generalizes on."""
        return self.steps * self.batch_size / self.rows

    def glyphs(self, size: int, seed: int) -> tuple[GlyphSet, GlyphSet, torch.Tensor]:
        """(the distinct pairs, the training set with the first `n_duplicated` pairs repeated, is_duplicated over the
        distinct pairs)."""
        distinct = make_glyph_set(self.n_distinct + self.n_duplicated, size, seed=seed)
        return (distinct, *with_duplicates(distinct, self.n_duplicated, self.copies))


@dataclass
class Groups:
    """The benchmark's generations: `rows[i]` is the distinct pair whose caption `prompts[i]` is; `labels[i]` = 1 for
    a duplicated pair. Wen et al.'s guidance norm is recorded during generation (first step, mean of all steps)."""

    prompts: list[str]
    rows: np.ndarray
    labels: np.ndarray
    seeds: list[int]
    gen: pipelines.Generations
    wen_first: np.ndarray
    wen_all: np.ndarray
    ratio: torch.Tensor
    nearest: torch.Tensor
    steps: int

    @property
    def copied(self) -> np.ndarray:
        """Gu et al.'s rule with identity: d1/d2 < 1/3 and the nearest distinct training image is the caption's own."""
        return ((self.ratio < metrics.COPY_RATIO) & (self.nearest == torch.as_tensor(self.rows))).numpy()

    def copy_table(self) -> pd.DataFrame:
        """Per group: share of copies, share whose nearest training image is the caption's own, median d1/d2."""
        frame = pd.DataFrame({"group": np.where(self.labels == 1, "memorized", "other"), "copied": self.copied,
                              "own": (self.nearest == torch.as_tensor(self.rows)).numpy(), "d1/d2": self.ratio.numpy()})
        return frame.groupby("group").agg(**{"generations": ("copied", "size"),
                                             "copies its training image": ("copied", "mean"),
                                             "nearest is its training image": ("own", "mean"),
                                             "median d1/d2": ("d1/d2", "median")})


def train_model(mix: Mix, train: GlyphSet, lr: float, seed: int, tokenizer, name: str, device="cpu"):
    """The glyph text-to-image model trained on `train` (the training set of `mix`) for `mix.steps` steps of
    `mix.batch_size` rows, cosine learning rate from `lr`, on `device`: loaded from the checkpoint cache when trained
    before (on any device)."""
    from ..training.diffusion import T2ITraining, train_text2image

    cfg = T2ITraining(steps=mix.steps, lr=lr, seed=seed, batch_size=mix.batch_size)
    return train_text2image(name, train.images, train.captions, cfg, tokenizer, device=device)


def benchmark_settings(p06: dict) -> dict:
    """The keyword arguments of `run` that notebook 06's parameters fix (`execute.notebook_parameters("06", ...)`):
    negatives, sampler, guidance, detector layer, timestep and pooling, seed, Wen's generations and the control's
    size. Notebook 11 measures its web-like mixes with them, so all three mixes are scored the same way."""
    return {"n_negatives": p06["N_NEGATIVES"], "steps": p06["SAMPLER_STEPS"], "guidance": p06["GUIDANCE"],
            "layer": p06["LAYER"], "timestep": p06["T_DETECT"], "pool": p06["POOL"], "seed": p06["SEED"],
            "wen_generations": p06["WEN_GENERATIONS"], "n_control": p06["N_CONTROL"]}


def notebook06_model(profile: str, tokenizer, device="cpu"):
    """Notebook 06's main model at `profile` ("full" or "quick"), built from 06's own parameters cell, so notebook 07
    steers the very model 06 trained (the same checkpoint) and a change to 06's model needs no edit in 07.
    Returns (distinct pairs, training set, is_duplicated, model)."""
    from ..execute import notebook_parameters

    p = notebook_parameters("06", profile)
    mix = Mix(p["N_DISTINCT"], p["N_DUPLICATED"], p["COPIES"], p["STEPS"])
    distinct, train, is_dup = mix.glyphs(p["IMAGE_SIZE"], p["SEED"])
    model = train_model(mix, train, p["LR"], p["SEED"], tokenizer, f"06-t2i-glyphs{p['IMAGE_SIZE']}", device)
    return distinct, train, is_dup, model


def prompt_groups(is_dup, seeds_per_prompt: int, n_negatives: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, labels) of the benchmark's generations: every duplicated pair's row `seeds_per_prompt` times (label 1),
    then the first `n_negatives` rows of pairs seen once, one each (label 0). `rows[i]` indexes the distinct pairs."""
    is_dup = np.asarray(is_dup, dtype=bool)
    dup_rows, once = np.flatnonzero(is_dup), np.flatnonzero(~is_dup)
    check_int("seeds_per_prompt", seeds_per_prompt, 1)
    if not 1 <= n_negatives <= len(once):
        raise ParameterError(f"parameter n_negatives={n_negatives!r} is not allowed: it must be between 1 and the "
                             f"{len(once)} captions seen once")
    rows = np.r_[np.tile(dup_rows, seeds_per_prompt), once[:n_negatives]]
    labels = np.r_[np.ones(len(dup_rows) * seeds_per_prompt), np.zeros(n_negatives)].astype(int)
    return rows, labels


def generation_seeds(prompts: list[str], seed: int) -> list[int]:
    """One seed per generation: seed + 1000, + 1001, ... in order (apart from the seeds training used)."""
    return pipelines.per_prompt_seeds(prompts, seed + GENERATION_SEED_OFFSET)


def generate_recording_guidance(pipe, prompts: list[str], seeds: list[int], steps: int, guidance: float
                                ) -> tuple[pipelines.Generations, np.ndarray, np.ndarray]:
    """(generations, Wen et al.'s norm at the first step, the norm averaged over all steps): one image per prompt,
    with `detection.record_guidance` listening to every UNet call of the sampler."""
    with detection.record_guidance(pipe) as recorder:
        gen = pipelines.generate(pipe, prompts, seeds=seeds, steps=steps, guidance_scale=guidance)
    wen_first, wen_all = recorder.scores(steps)
    return gen, wen_first, wen_all


def generate_groups(pipe, distinct: GlyphSet, is_dup, seeds_per_prompt: int, n_negatives: int, steps: int,
                    guidance: float, seed: int) -> Groups:
    """Generate the two groups: every duplicated caption with `seeds_per_prompt` seeds, then the first `n_negatives`
    captions seen once with one seed each (seeds seed + 1000, + 1001, ... in that order). The steps, which notebook 06
    writes out: `prompt_groups`, `generation_seeds`, `generate_recording_guidance`, `metrics.nn_distance_ratio`."""
    rows, labels = prompt_groups(is_dup, seeds_per_prompt, n_negatives)
    prompts = [distinct.captions[i] for i in rows]
    seeds = generation_seeds(prompts, seed)
    gen, wen_first, wen_all = generate_recording_guidance(pipe, prompts, seeds, steps, guidance)
    ratio, nearest = metrics.nn_distance_ratio(gen.images, distinct.images)
    return Groups(prompts, rows, labels, seeds, gen, wen_first, wen_all, ratio, nearest, steps)


def unconditional_copies(pipe, distinct: GlyphSet, is_dup, n: int, steps: int, seed: int) -> float:
    """The share of `n` generations with the empty prompt and no guidance (seeds seed + 5000, + 5001, ...) that copy a
    duplicated training pair's image (Gu et al.'s rule against the distinct training images, nearest one duplicated):
    whether the model stores the duplicated images without their captions. The paper's detector makes its one UNet
    pass with the empty prompt, so this is the memorization it might read; notebook 11 measures whether it does."""
    check_int("n", n, 1)
    gen = pipelines.generate(pipe, [""] * n, seeds=list(range(seed + 5000, seed + 5000 + n)), steps=steps,
                             guidance_scale=1.0)
    ratio, nearest = metrics.nn_distance_ratio(gen.images, distinct.images)
    is_dup = torch.as_tensor(np.asarray(is_dup, dtype=bool))
    return float(((ratio < metrics.COPY_RATIO) & is_dup[nearest]).float().mean())


def wen_scores(pipe, groups: Groups, generations: int) -> np.ndarray:
    """Wen et al.'s first-step norm averaged over `generations` starting noises per prompt
    (`detection.wen_first_step_averaged`), starting from each generation's own seed."""
    return detection.wen_first_step_averaged(pipe, groups.prompts, groups.seeds, groups.steps, generations)


def timed(unet_calls: int, detector, *args, **kwargs) -> dict:
    """Run one detector, `detector(*args, **kwargs)` -> a score per generation, and time it: {"scores", "seconds",
    "unet_calls"} (its UNet evaluations per generation), a row of `detection.detector_table`."""
    t0 = time.perf_counter()
    scores = np.asarray(detector(*args, **kwargs))
    return {"scores": scores, "seconds": time.perf_counter() - t0, "unet_calls": unet_calls}


def recorded_wen(groups: Groups) -> dict:
    """Wen et al.'s norm averaged over every sampling step, recorded while the groups were generated: its cost is the
    whole generation (2 UNet calls per step), in `timed`'s form."""
    return {"scores": groups.wen_all, "seconds": groups.gen.seconds, "unet_calls": 2 * groups.steps}


def nearest_neighbour_scores(images: torch.Tensor, train_images: torch.Tensor) -> np.ndarray:
    """The oracle that needs the training set: 1 - d1/d2 of each image against `train_images`."""
    return 1 - metrics.nn_distance_ratio(images, train_images)[0].numpy()


def check_first_step(wen_first_scores: np.ndarray, groups: Groups) -> None:
    """Wen et al.'s one-step score, recomputed on its own (`wen_scores(pipe, groups, 1)`), must equal the first step
    recorded during generation: a check that the two code paths measure the same thing."""
    if not np.allclose(wen_first_scores, groups.wen_first, rtol=1e-4, atol=1e-5):
        raise RuntimeError("Wen et al.'s one-step score differs from the first step recorded during generation")


def compare_detectors(pipe, groups: Groups, train_images: torch.Tensor, layer: str, timestep: int, pool: str,
                      seed: int, wen_generations: int = 4) -> dict[str, dict]:
    """Every detector on the same generations, timed (`timed`): {name: {"scores", "seconds", "unet_calls"}} for
    `detection.detector_table`, in the order notebook 06 writes them out. The one-step Wen score is checked against
    the first step recorded during generation (`check_first_step`)."""
    results = {PAPER_DETECTOR: timed(1, detection.paper_scores, pipe, groups.gen.latents, layer, timestep=timestep,
                                     pool=pool, seed=seed),
               "Wen et al., first step": timed(2, wen_scores, pipe, groups, 1)}
    check_first_step(results["Wen et al., first step"]["scores"], groups)
    if wen_generations > 1:
        results[f"Wen et al., first step, {wen_generations} generations"] = timed(
            2 * wen_generations, wen_scores, pipe, groups, wen_generations)
    results["Wen et al., all steps"] = recorded_wen(groups)
    results[NEAREST_NEIGHBOUR] = timed(0, nearest_neighbour_scores, groups.gen.images, train_images)
    return results


def caption_halves(groups: Groups, seed: int) -> np.ndarray:
    """A calibration mask that splits the generations **by caption**: half of the duplicated captions and half of the
    others (chosen with `seed`) are for calibration, so a layer chosen there is tested on captions it never saw."""
    rng = np.random.default_rng(seed)
    calib_rows = set()
    for label in (1, 0):
        rows = np.unique(groups.rows[groups.labels == label])
        calib_rows |= set(rng.permutation(rows)[: max(1, len(rows) // 2)].tolist())
    return np.isin(groups.rows, list(calib_rows))


def layer_scores(pipe, groups: Groups, layers: list[str], timestep: int, pool: str, seed: int
                 ) -> dict[str, np.ndarray]:
    """The paper's score of every generation at every layer of `layers` (one UNet pass for all of them)."""
    reps = detection.paper_representations(pipe, groups.gen.latents, layers, timestep, pool, seed=seed)
    return {name: metrics.representation_std(h).numpy() for name, h in reps.items()}


def calibrated_layer(groups: Groups, scores: dict[str, np.ndarray], fixed_layer: str, seed: int) -> dict:
    """Choose the paper detector's layer among `scores` ({layer: the generations' scores}, `layer_scores`) on a
    calibration half (`caption_halves`) by AUROC, then score the other half: {"layer", "calibration AUROC",
    "test AUROC", "test interval", "fixed layer test AUROC", "test generations"}."""
    calib = caption_halves(groups, seed)
    test = ~calib
    on_calib = {name: metrics.auroc(s[calib], groups.labels[calib]) for name, s in scores.items()}
    best = max(on_calib, key=on_calib.get)
    return {"layer": best, "calibration AUROC": on_calib[best],
            "test AUROC": metrics.auroc(scores[best][test], groups.labels[test]),
            "test interval": metrics.auroc_interval(scores[best][test], groups.labels[test]),
            "fixed layer test AUROC": metrics.auroc(scores[fixed_layer][test], groups.labels[test]),
            "test generations": int(test.sum())}


def control_summary(scores: np.ndarray, labels: np.ndarray, control_scores: np.ndarray) -> dict[str, float]:
    """The crisp-image control: with the threshold at the 99th percentile of the captions-seen-once scores (1% FPR),
    the share of never-trained images flagged, beside the share of memorized generations flagged, and the AUROC of
    memorized generations against the control images (near 1: the detector does not mistake crispness for
    memorization)."""
    scores, labels = np.asarray(scores), np.asarray(labels).astype(int)
    threshold = np.percentile(scores[labels == 0], 99)
    memorized = scores[labels == 1]
    return {"control flagged": float((control_scores > threshold).mean()),
            "memorized flagged": float((memorized > threshold).mean()),
            "AUROC memorized vs control": metrics.auroc(np.r_[memorized, control_scores],
                                                        np.r_[np.ones(len(memorized)), np.zeros(len(control_scores))])}


def crisp_sets(groups: Groups, distinct: GlyphSet, n_control: int, seed: int) -> dict[str, torch.Tensor]:
    """The control's two sets of crisp images: `n_control` rendered glyphs whose captions the model never saw
    (`glyphs.unseen`, seed + 1) and the training images of the negatives' captions (seen once)."""
    from ..data.glyphs import unseen

    return {"never trained on": unseen(n_control, distinct.image_size, distinct.captions, seed + 1).images,
            "trained on once": distinct.images[groups.rows[groups.labels == 0]]}


def control_scorers(pipe, layer: str, timestep: int, pool: str, seed: int) -> dict:
    """The two scores of the control, each a function of decoded images: the paper's detector from images, as the
    paper runs it (`detection.paper_scores_from_images`), and cleanliness alone (`glyphs.off_palette`, negated), the
    confound the control must catch."""
    from ..data.glyphs import off_palette

    return {"paper's detector": lambda x: detection.paper_scores_from_images(pipe, x, layer, timestep, pool, seed),
            "cleanliness (a confound)": lambda x: -off_palette(x).numpy()}


def control_table(scorers: dict, groups: Groups, crisp: dict[str, torch.Tensor]) -> pd.DataFrame:
    """`control_summary` of every score in `scorers` against every crisp set in `crisp`. Generations are scored from
    their decoded images too, so both sides of every comparison went through the same path. Index: (score, crisp
    images)."""
    rows = []
    for score_name, score in scorers.items():
        on_generations = score(groups.gen.images)
        for crisp_name, images in crisp.items():
            rows.append({"score": score_name, "crisp images": crisp_name,
                         "AUROC memorized vs other": metrics.auroc(on_generations, groups.labels),
                         **control_summary(on_generations, groups.labels, score(images))})
    return pd.DataFrame(rows).set_index(["score", "crisp images"])


def crisp_controls(pipe, groups: Groups, distinct: GlyphSet, n_control: int, layer: str, timestep: int, pool: str,
                   seed: int) -> pd.DataFrame:
    """The crisp-image control (`control_table` of `control_scorers` on `crisp_sets`), the steps notebook 06 writes
    out: two crisp image sets, each scored by the paper's detector and by cleanliness alone."""
    return control_table(control_scorers(pipe, layer, timestep, pool, seed), groups,
                         crisp_sets(groups, distinct, n_control, seed))


def paper_control(controls: pd.DataFrame) -> pd.Series:
    """The row of `crisp_controls` that the notebook's claim is about: the paper's detector against the crisp glyphs
    the model never saw."""
    return controls.loc[("paper's detector", "never trained on")]


def mix_row(mix: Mix, groups: Groups, table: pd.DataFrame, unconditional: float) -> dict:
    """One row of the share -> memorized -> AUROC table: the training mix, the share of the rows and the exposures of
    each duplicated pair, the share of copies per group and among empty-prompt generations (`unconditional`, from
    `unconditional_copies`), and each detector's AUROC from `table`."""
    copied = groups.copied
    return {"duplicated share of rows": mix.share, "pairs x copies": f"{mix.n_duplicated} x {mix.copies}",
            "rows": mix.rows, "share of rows / duplicated pair": mix.copies / mix.rows,
            "exposures / duplicated pair": mix.exposures, "exposures / pair seen once": mix.exposures_once,
            "memorized captions copied": copied[groups.labels == 1].mean(),
            "others copied": copied[groups.labels == 0].mean(),
            "empty prompt copies a duplicated pair": unconditional,
            **{f"AUROC {name}": table.loc[name, "AUROC"] for name in table.index}}


@dataclass
class Benchmark:
    """Everything the benchmark measures on one model: the groups, each detector's scores and table, the crisp-image
    controls (`crisp_controls`), the layer chosen on a calibration half and the share of empty-prompt generations
    that copy a duplicated pair (`unconditional_copies`)."""

    groups: Groups
    results: dict[str, dict]
    table: pd.DataFrame
    controls: pd.DataFrame
    calibrated: dict
    unconditional: float

    @property
    def control(self) -> pd.Series:
        return paper_control(self.controls)


VERDICTS = ("not memorized", "others memorized too", "holds", "does not hold")


def verdict(mix: Mix, bench: Benchmark, min_copied: float, min_auroc: float, max_others: float = 0.1
            ) -> tuple[str, str]:
    """Which case a benchmark run is in (one of VERDICTS) and a sentence with its numbers. The claim "the paper's
    detector finds memorized captions at this mix" is tested only when there is something to test: the duplicated
    captions are memorized (at least `min_copied` of their generations copy) and the captions seen once are not (at
    most `max_others` copy). Then it "holds" when the detector's AUROC reaches `min_auroc`."""
    copied = bench.groups.copied
    memorized, others = copied[bench.groups.labels == 1].mean(), copied[bench.groups.labels == 0].mean()
    auroc = bench.table.loc[PAPER_DETECTOR, "AUROC"]
    if memorized < min_copied:
        return VERDICTS[0], (f"at {mix.share:.0%} the duplicated captions were not memorized ({memorized:.0%} of their "
                             "generations copy): there is nothing to detect, and the AUROCs measure noise")
    if others > max_others:
        return VERDICTS[1], (f"the captions seen once were memorized too ({others:.0%} of their generations copy; each "
                             f"was seen {mix.exposures_once:,.0f} times): the model stored its whole training set, there "
                             "are no generalized captions to compare with, and the AUROCs do not test the claim")
    if auroc >= min_auroc:
        return VERDICTS[2], (f"the paper's detector holds at a {mix.share:.0%} share: AUROC {auroc:.3f} >= {min_auroc}, "
                             f"with {memorized:.0%} of the memorized captions' generations copying and {others:.0%} "
                             "of the others")
    return VERDICTS[3], (f"the paper's detector does NOT reach {min_auroc} at a {mix.share:.0%} share: AUROC {auroc:.3f} "
                         f"with {memorized:.0%} of the memorized captions' generations copying and {others:.0%} of "
                         "the others")


def run(pipe, distinct: GlyphSet, is_dup, *, seeds_per_prompt: int, n_negatives: int, steps: int, guidance: float,
        layer: str, timestep: int, pool: str, seed: int, wen_generations: int, n_control: int, n_unconditional: int
        ) -> Benchmark:
    """The whole benchmark on one model, in the order notebook 06 shows its steps (`generate_groups`,
    `compare_detectors`, `crisp_controls`, `layer_scores`, `calibrated_layer`), then `unconditional_copies`, which
    notebook 11 adds."""
    groups = generate_groups(pipe, distinct, is_dup, seeds_per_prompt, n_negatives, steps, guidance, seed)
    results = compare_detectors(pipe, groups, distinct.images, layer, timestep, pool, seed, wen_generations)
    controls = crisp_controls(pipe, groups, distinct, n_control, layer, timestep, pool, seed)
    scores = layer_scores(pipe, groups, detection.resnet_activation_layers(pipe.unet), timestep, pool, seed)
    calibrated = calibrated_layer(groups, scores, layer, seed)
    unconditional = unconditional_copies(pipe, distinct, is_dup, n_unconditional, steps, seed)
    return Benchmark(groups, results, detection.detector_table(results, groups.labels), controls, calibrated,
                     unconditional)


def web_share_summary(runs: dict[str, tuple[Mix, Benchmark]], verdicts: dict[str, str]) -> str:
    """Notebook 11's "What we saw", as Markdown written from this run's numbers: per mix its share, copies and the
    paper's AUROC with its interval, how often the empty prompt draws a duplicated pair, Wen et al.'s scores, and the
    verdict of each web-like mix (`verdict`'s sentence)."""
    lines = []
    for label, (mix, b) in runs.items():
        copied, labels = b.groups.copied, b.groups.labels
        row = b.table.loc[PAPER_DETECTOR]
        wen = [name for name in b.table.index if name.startswith("Wen")]
        lines.append(f"- **{label}** ({mix.n_duplicated} pairs x {mix.copies} copies, {mix.share:.0%} of "
                     f"{mix.rows:,} rows, each duplicated pair seen {mix.exposures:,.0f} times): "
                     f"{copied[labels == 1].mean():.0%} of the duplicated captions' generations copy, "
                     f"{copied[labels == 0].mean():.0%} of the others; the paper's detector AUROC {row['AUROC']:.3f} "
                     f"[{row['AUROC 95% low']:.3f}, {row['AUROC 95% high']:.3f}], TPR at 1% FPR "
                     f"{row['TPR@1%FPR']:.2f}; the empty prompt draws a duplicated pair in {b.unconditional:.1%} of "
                     "generations; Wen et al. " + ", ".join(f"{b.table.loc[n, 'AUROC']:.2f}" for n in wen)
                     + f" ({'; '.join(wen)}).")
        if label in verdicts:
            lines.append(f"  Verdict: {verdicts[label]}.")
    return "\n".join(lines)
