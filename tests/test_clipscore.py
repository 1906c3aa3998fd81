"""CLIP image-text similarity: the tiny stand-in loads through the same `from_pretrained` path as the real model,
similarities are well-formed and deterministic, an offline machine fails fast with instructions, and a half-empty
tokenizer is refused."""
import json
import shutil
import time
from pathlib import Path

import huggingface_hub.constants
import numpy as np
import pytest
import torch

from replib.probes import clipscore


@pytest.fixture(scope="module")
def standin_dir(tmp_path_factory):
    return clipscore.build_standin_clip(tmp_path_factory.mktemp("clip") / "standin")


@pytest.fixture(scope="module")
def scorer(standin_dir):
    return clipscore.load_clip_scorer(standin_dir)


def _images(n: int, size: int | tuple[int, int], seed: int = 0) -> torch.Tensor:
    h, w = (size, size) if isinstance(size, int) else size
    return torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """No hub, no $REPLIB_CLIP, and an empty Hugging Face cache (transformers reads the cache folder from
    huggingface_hub.constants at call time, so a real cached copy on this machine does not leak in)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv(clipscore.ENV_VAR, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))


def test_standin_loads_from_a_path_and_from_the_env_var(standin_dir, scorer, monkeypatch):
    assert scorer.standin and scorer.source == str(standin_dir) and scorer.device == "cpu"
    assert type(scorer.model).__name__ == "CLIPModel" and len(scorer.tokenizer) == 49_408
    assert scorer.processor.crop_size["height"] == 32
    monkeypatch.setenv(clipscore.ENV_VAR, str(standin_dir))
    again = clipscore.load_clip_scorer()
    assert again.standin and again.source == str(standin_dir)
    loaded, why = clipscore.try_load_clip_scorer()
    assert loaded is not None and loaded.standin and why == ""


def test_similarity_is_well_formed_and_deterministic(scorer):
    images = _images(5, 64)
    sims = scorer.similarity(images, "an elderly person")
    assert sims.shape == (5,) and np.isfinite(sims).all() and (np.abs(sims) <= 1).all()
    assert np.array_equal(sims, scorer.similarity(images, ["an elderly person"] * 5))
    assert np.array_equal(sims, scorer.similarity(images.clone(), "an elderly person"))
    own = scorer.similarity(images, ["an elderly person", "a cat", "a dog", "a tree", "a car"])
    # the same (image, text) pair scores the same in a batch of other texts, up to float rounding: texts of other
    # lengths change the batch's padding, and matmul kernels may round differently (seen: 6e-8 apart)
    assert np.isclose(own[0], sims[0], rtol=1e-5, atol=1e-6) and not np.allclose(own, sims, rtol=1e-5, atol=1e-6)
    emb = scorer.image_embeddings(images)
    assert emb.shape == (5, 16) and torch.allclose(emb.norm(dim=-1), torch.ones(5), atol=1e-5)
    assert torch.allclose(scorer.image_embeddings(images, batch_size=2), emb, atol=1e-6)  # batching changes nothing
    text = scorer.text_embeddings(["an elderly person", "a cat"])
    assert text.shape == (2, 16) and torch.allclose(text.norm(dim=-1), torch.ones(2), atol=1e-5)


def test_images_of_any_size_are_resized_by_the_processor(scorer):
    for size in (64, 128, (96, 128)):
        images = _images(2, size, seed=1)
        assert scorer.pixel_values(images).shape == (2, 3, 32, 32)
        sims = scorer.similarity(images, "an elderly person")
        assert sims.shape == (2,) and np.isfinite(sims).all()


def test_bad_inputs_are_refused(scorer):
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        scorer.similarity(_images(2, 64) * 127.5 + 127.5, "a cat")  # 0..255 pixels
    with pytest.raises(ValueError, match="n, 3, H, W"):
        scorer.similarity(_images(2, 64)[:, 0], "a cat")
    with pytest.raises(ValueError, match="one per image"):
        scorer.similarity(_images(3, 64), ["a cat", "a dog"])


def test_same_seed_same_weights(tmp_path, standin_dir):
    again = clipscore.build_standin_clip(tmp_path / "again", seed=0)
    assert (again / "model.safetensors").read_bytes() == (standin_dir / "model.safetensors").read_bytes()


def test_offline_without_the_model_fails_fast_with_instructions(offline):
    t0 = time.perf_counter()
    with pytest.raises(clipscore.ScorerUnavailable, match="hf download openai/clip-vit-large-patch14") \
            as err:
        clipscore.load_clip_scorer(model_id="openai/clip-vit-large-patch14")
    assert time.perf_counter() - t0 < 10
    assert clipscore.ENV_VAR in str(err.value)
    scorer, why = clipscore.try_load_clip_scorer()
    assert scorer is None and "hf download" in why and clipscore.ENV_VAR in why


def test_not_a_model_folder(tmp_path):
    with pytest.raises(clipscore.ScorerUnavailable, match="config.json"):
        clipscore.load_clip_scorer(tmp_path)
    scorer, why = clipscore.try_load_clip_scorer(tmp_path)
    assert scorer is None and "config.json" in why


def test_two_token_tokenizer_is_refused(tmp_path, standin_dir):
    broken = tmp_path / "broken"
    shutil.copytree(standin_dir, broken)
    (broken / "vocab.json").write_text(json.dumps({"<|startoftext|>": 0, "<|endoftext|>": 1}))
    (broken / "merges.txt").write_text("#version: 0.2\n")
    (broken / "tokenizer.json").unlink(missing_ok=True)
    with pytest.raises(RuntimeError, match="only 2 tokens"):
        clipscore.load_clip_scorer(broken)
    scorer, why = clipscore.try_load_clip_scorer(broken)
    assert scorer is None and "only 2 tokens" in why


def test_standin_scorer_is_built_once_in_the_cache():
    first = clipscore.standin_scorer()
    mtime = (Path(first.source) / "config.json").stat().st_mtime_ns
    second = clipscore.standin_scorer()
    assert first.standin and second.source == first.source
    assert (Path(second.source) / "config.json").stat().st_mtime_ns == mtime, "the stand-in should not be rebuilt"
