"""Generation, detection and steering run unchanged on a real `StableDiffusionPipeline` (with a VAE, like SD1.4)
assembled from small random components, and on the kit's pixel-space pipeline (no VAE)."""
import json

import numpy as np
import pytest
import torch

from replib.models import pipelines
from replib.probes import detection, steering

LAYER = "up_blocks.0.resnets.1.nonlinearity"
BLOCKS = ["up_blocks.0.resnets.0", "up_blocks.0.resnets.1"]


def _tokenizer(tmp_path):
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for w in ["a", "red", "blue", "letter", "k", "on", "background", "photo", "cat"]:
        vocab[w + "</w>"] = len(vocab)
    for ch in "abcdefghijklmnopqrstuvwxyz":
        vocab.setdefault(ch, len(vocab))
        vocab.setdefault(ch + "</w>", len(vocab))
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    (tmp_path / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt"), model_max_length=12)


def _pipe(tmp_path, with_vae: bool):
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    tok = _tokenizer(tmp_path)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                        num_attention_heads=2, max_position_embeddings=12, projection_dim=16)).eval()
    channels = 4 if with_vae else 3
    unet = UNet2DConditionModel(sample_size=8, in_channels=channels, out_channels=channels, block_out_channels=(8, 16),
                                layers_per_block=1, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=16,
                                attention_head_dim=4, norm_num_groups=4).eval()
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8),
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        norm_num_groups=4, sample_size=16).eval() if with_vae else None
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tok, unet=unet,
                                   scheduler=DDIMScheduler(clip_sample=False, steps_offset=1), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module", params=[True, False], ids=["sd-like-with-vae", "pixel-no-vae"])
def pipe(request, tmp_path_factory):
    return _pipe(tmp_path_factory.mktemp("tok"), request.param)


PROMPTS = ["a red letter k", "a blue cat", "a photo"]


def test_generate_is_seeded_per_prompt(pipe):
    g = pipelines.generate(pipe, PROMPTS, seeds=[5, 6, 7], steps=3, progress=False)
    side = 8 * (pipe.vae_scale_factor if pipelines.has_vae(pipe) else 1)
    assert g.latents.shape == (3, pipe.unet.config.in_channels, 8, 8)
    assert g.images.shape == (3, 3, side, side) and g.images.abs().max() <= 1
    one = pipelines.generate(pipe, PROMPTS[1:2], seeds=[6], steps=3, progress=False)
    torch.testing.assert_close(one.latents[0], g.latents[1], rtol=1e-3, atol=2e-4)  # batch size changes float order


def test_paper_detector_runs_on_the_pipeline(pipe):
    g = pipelines.generate(pipe, PROMPTS, seeds=0, steps=3, progress=False)
    s1 = detection.paper_scores(pipe, g.latents, LAYER, timestep=10, seed=0)
    s2 = detection.paper_scores(pipe, g.latents, LAYER, timestep=10, seed=0, batch_size=1)
    assert s1.shape == (3,) and np.isfinite(s1).all()
    np.testing.assert_allclose(s1, s2, rtol=1e-4, atol=1e-6)
    if pipelines.has_vae(pipe):
        z = pipelines.encode(pipe, g.images)
        assert z.shape == g.latents.shape


def test_wen_first_step_matches_the_recorded_generation(pipe):
    with detection.record_guidance(pipe) as rec:
        pipelines.generate(pipe, PROMPTS, seeds=[1, 2, 3], steps=4, batch_size=2, progress=False)
    first, mean = rec.scores(4)
    assert first.shape == mean.shape == (3,) and (first > 0).all()
    standalone = detection.wen_first_step_scores(pipe, PROMPTS, seeds=[1, 2, 3], steps=4)
    np.testing.assert_allclose(standalone, first, rtol=1e-4)
    assert not pipe.unet._forward_hooks, "the recorder removes its hook"


def test_steering_moves_only_inside_the_window_and_cleans_up(pipe):
    g = pipelines.generate(pipe, PROMPTS, seeds=0, steps=3, progress=False)
    vecs = steering.concept_vectors(pipe, g.latents, PROMPTS, BLOCKS, timestep=10)
    assert set(vecs) == set(BLOCKS) and vecs[BLOCKS[0]].dim() == 1
    base = pipelines.generate(pipe, PROMPTS[:1], seeds=[9], steps=4, progress=False).latents
    with steering.steer(pipe, vecs, 0.0, (1, 2)):
        same = pipelines.generate(pipe, PROMPTS[:1], seeds=[9], steps=4, progress=False).latents
    torch.testing.assert_close(same, base)
    with steering.steer(pipe, vecs, 5.0, (1, 2)) as state:
        pushed = pipelines.generate(pipe, PROMPTS[:1], seeds=[9], steps=4, progress=False,
                                    callback_on_step_end=state["callback"]).latents
    assert state["calls"] == 4 and state["steps_ended"] == 4 and state["step"] == 0  # ready for the next call
    assert not torch.allclose(pushed, base)
    with steering.steer(pipe, vecs, 5.0, (3, 3)) as state:  # the last step only: by step, not by UNet call
        last = pipelines.generate(pipe, PROMPTS[:1], seeds=[9], steps=4, progress=False,
                                  callback_on_step_end=state["callback"]).latents
    assert not torch.allclose(last, base) and not torch.allclose(last, pushed)
    with steering.steer(pipe, vecs, 5.0, (10, 20)) as state:
        outside = pipelines.generate(pipe, PROMPTS[:1], seeds=[9], steps=4, progress=False,
                                     callback_on_step_end=state["callback"]).latents
    torch.testing.assert_close(outside, base)
    with pytest.raises(RuntimeError, match="callback_on_step_end"):
        with steering.steer(pipe, vecs, 5.0, (1, 2)):
            pipelines.generate(pipe, PROMPTS[:1], seeds=[9], steps=4, progress=False)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in pipe.unet.modules())


def test_steering_hooks_removed_on_error(pipe):
    vecs = {BLOCKS[0]: torch.ones(pipe.unet.get_submodule(BLOCKS[0]).conv2.out_channels)}
    with pytest.raises(RuntimeError):
        with steering.steer(pipe, vecs, 1.0):
            raise RuntimeError("boom")
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in pipe.unet.modules())
    with pytest.raises(KeyError):
        with steering.steer(pipe, {"no.such.block": torch.ones(3)}, 1.0):
            pass


def test_alpha_sweep_and_steerability(pipe):
    g = pipelines.generate(pipe, PROMPTS, seeds=0, steps=3, progress=False)
    vecs = steering.concept_vectors(pipe, g.latents, PROMPTS, BLOCKS)
    out = steering.alpha_sweep(pipe, PROMPTS[:2], vecs, [0.0, 3.0], window=(1, 2), seeds=4, steps=4, progress=False)
    assert set(out) == {0.0, 3.0}
    base = pipelines.generate(pipe, PROMPTS[:2], seeds=4, steps=4, progress=False)
    torch.testing.assert_close(out[0.0].latents, base.latents)
    moved = steering.steerability({a: gen.images.mean(dim=(1, 2, 3)).numpy() for a, gen in out.items()})
    assert moved.shape == (2,) and np.isfinite(moved).all() and np.abs(moved).sum() > 0
    change = steering.movement(out)
    assert (change[0.0] == 0).all() and (change[3.0] > 0).all()


def test_guidance_recorder_needs_whole_generations(pipe):
    with detection.record_guidance(pipe) as rec:
        pipelines.generate(pipe, PROMPTS[:1], seeds=0, steps=3, progress=False)
    with pytest.raises(ValueError, match="multiple of steps"):
        rec.scores(2)


def test_concept_direction_subtracts_the_baseline():
    a = {"x": torch.tensor([3.0, 1.0]), "y": torch.tensor([1.0])}
    b = {"x": torch.tensor([1.0, 1.0]), "y": torch.tensor([2.0])}
    d = steering.concept_direction(a, b)
    assert torch.equal(d["x"], torch.tensor([2.0, 0.0])) and torch.equal(d["y"], torch.tensor([-1.0]))
    with pytest.raises(KeyError, match="layers differ"):
        steering.concept_direction(a, {"x": b["x"]})


def test_scoring_image_files_ranks_like_scoring_latents(pipe, tmp_path, write_pngs):
    """The paper's detector from images (8-bit PNG files, re-encoded by the pipeline) ranks generations as it ranks
    their model-space samples. These components are random, so their raw samples fall far outside [-1, 1]; a trained
    pixel-space model's stay inside, which the clamped samples stand for. With the random VAE the decode-encode round
    trip does not return the latent, so there only the files-vs-tensors agreement is checked."""
    from scipy.stats import spearmanr

    prompts = PROMPTS * 4
    seeds = list(range(len(prompts)))
    gen = pipelines.generate(pipe, prompts, seeds, steps=4, guidance_scale=3.0, progress=False)
    files = write_pngs(gen.images, tmp_path / "png")
    from_files = detection.paper_scores_from_images(pipe, files, LAYER, seed=seeds)
    from_tensor = detection.paper_scores_from_images(pipe, gen.images, LAYER, seed=seeds)
    assert from_files.shape == (len(prompts),) and np.isfinite(from_files).all()
    assert spearmanr(from_tensor, from_files).statistic >= 0.9  # only 8-bit rounding between the two
    if not pipelines.has_vae(pipe):
        in_range = detection.paper_scores(pipe, gen.latents.clamp(-1, 1), LAYER, seed=seeds)
        assert spearmanr(in_range, from_files).statistic >= 0.9


def test_to_pixels_takes_tensors_pil_and_paths(tmp_path, write_pngs):
    from PIL import Image

    x = torch.rand(2, 3, 16, 16) * 2 - 1
    paths = write_pngs(x, tmp_path)
    from_paths = pipelines.to_pixels(paths, 3, 16)
    assert from_paths.shape == (2, 3, 16, 16) and (from_paths - x).abs().max() <= 1 / 127.5 + 1e-6
    pil = [Image.open(p) for p in paths]
    assert torch.equal(pipelines.to_pixels(pil, 3, 16), from_paths)
    assert pipelines.to_pixels(paths, 3, 8).shape == (2, 3, 8, 8)
    assert pipelines.to_pixels(paths, 1, 16).shape == (2, 1, 16, 16)
    with pytest.raises(ValueError, match="expected"):
        pipelines.to_pixels(x, 1, 16)


def test_abruptness_tells_a_jump_from_a_smooth_move():
    """An image that moves by equal amounts at each alpha scores 1/(steps); one that stays and then jumps scores 1;
    one that never moves, NaN."""
    base = torch.zeros(3, 3, 4, 4)
    alphas = [0.0, 0.25, 0.5, 0.75, 1.0]
    moves = {  # per prompt, how far the image has moved at each alpha
        0: [0, 0.1, 0.2, 0.3, 0.4],   # smooth
        1: [0, 0, 0, 0, 0.8],        # resists, then jumps
        2: [0, 0, 0, 0, 0],          # never moves
    }
    sweep = {a: pipelines.Generations(None, base + torch.tensor([moves[p][k] for p in range(3)])[:, None, None, None],
                                      [], 0.0) for k, a in enumerate(alphas)}
    shape = steering.abruptness(sweep)
    assert shape[0] == pytest.approx(0.25) and shape[1] == pytest.approx(1.0) and np.isnan(shape[2])


def test_detector_noise_is_not_the_generations_starting_noise(pipe, monkeypatch):
    """The detector draws its own noise (`detection.detector_seed`), never the noise a generation with the same seed
    started from, whether it scores latents or images; the starting noise itself is what `generate` uses (the Wen
    first-step check ties the two). The coupled draw (the seed's own generator) is what this test would catch."""
    seeds = [0, 1, 2]
    start = pipelines.starting_noise(pipe, seeds)
    coupled = torch.stack([torch.randn(start.shape[1:], generator=torch.Generator().manual_seed(s)) for s in seeds])
    assert torch.equal(coupled, start)  # the draw this test rejects: row for row the starting noise
    used = []
    real = detection.noise_for
    monkeypatch.setattr(detection, "noise_for", lambda shape, seed: used.append(real(shape, seed)) or used[-1])
    gen = pipelines.generate(pipe, PROMPTS, seeds, steps=2, guidance_scale=3.0, progress=False)
    detection.paper_scores(pipe, gen.latents, LAYER, seed=seeds)
    detection.paper_scores_from_images(pipe, gen.images, LAYER, seed=seeds)
    assert len(used) == 2
    for noise in used:
        assert noise.shape == start.shape
        for i in range(len(seeds)):
            assert not torch.allclose(noise[i], start[i]), f"seed {seeds[i]}: detector noise equals the starting noise"
            assert abs(torch.corrcoef(torch.stack([noise[i].flatten(), start[i].flatten()]))[0, 1]) < 0.2
    assert detection.detector_seed(0) != 0 and len({detection.detector_seed(s) for s in range(1000)}) == 1000
    # the first-step Wen score, computed from `starting_noise`, equals the step generation recorded
    with detection.record_guidance(pipe) as rec:
        pipelines.generate(pipe, PROMPTS, seeds, steps=2, guidance_scale=3.0, progress=False)
    assert np.allclose(detection.wen_first_step_scores(pipe, PROMPTS, seeds, steps=2), rec.scores(2)[0], rtol=1e-4)


def test_explicit_detector_noise_must_match_the_samples(pipe):
    gen = pipelines.generate(pipe, PROMPTS, [0, 1, 2], steps=2, guidance_scale=3.0, progress=False)
    own = pipelines.starting_noise(pipe, [0, 1, 2])
    assert np.isfinite(detection.paper_scores(pipe, gen.latents, LAYER, noise=own)).all()
    with pytest.raises(ValueError, match="noise has shape"):
        detection.paper_scores(pipe, gen.latents, LAYER, noise=own[:2])
