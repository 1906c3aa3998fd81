"""The pixel-space text-to-image model: trained (cached, resumable) with caption dropout, frozen random CLIP text
encoder, and sampled through a real `StableDiffusionPipeline` without a VAE."""
import numpy as np
import torch

from replib.data import glyphs
from replib.models import pipelines
from replib.models.text import clip_tokenizer
from replib.models.unets import as_pipeline, small_cond_unet
from replib.training.diffusion import T2ITraining, train_text2image


def test_cond_unet_attention_levels():
    unet = small_cond_unet(16, (8, 16, 16), cross_attention_dim=16, attention_levels=1, norm_groups=4)
    kinds = [type(b).__name__ for b in unet.down_blocks] + [type(b).__name__ for b in unet.up_blocks]
    assert kinds == ["DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"]
    out = unet(torch.randn(2, 3, 16, 16), torch.tensor([3, 900]), encoder_hidden_states=torch.randn(2, 77, 16)).sample
    assert out.shape == (2, 3, 16, 16)
    pooled = small_cond_unet(16, (8, 16, 16), cross_attention_dim=16, norm_groups=4, text_time_embedding=True)
    assert pooled.config.addition_embed_type == "text"
    assert pooled(torch.randn(1, 3, 16, 16), 5, encoder_hidden_states=torch.randn(1, 77, 16)).sample.shape == (1, 3, 16, 16)


def test_train_cached_and_sample_through_stable_diffusion_pipeline(tmp_path, monkeypatch):
    monkeypatch.setenv("REPLIB_CACHE", str(tmp_path))
    data = glyphs.make_glyph_set(12, 16, seed=0)
    tok = clip_tokenizer()
    cfg = T2ITraining(steps=4, batch_size=4, channels=(8, 16), text_hidden=16, text_layers=1, save_every=2)
    model = train_text2image("t", data.images, data.captions, cfg, tok, progress=False)
    assert len(model.losses) == 4 and np.isfinite(model.losses).all()
    assert not any(p.requires_grad for p in model.text_encoder.parameters()), "the text encoder is frozen"
    again = train_text2image("t", data.images, data.captions, cfg, tok, progress=False)
    for a, b in zip(model.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)
    pipe = as_pipeline(again, tok)
    assert type(pipe).__name__ == "StableDiffusionPipeline" and pipe.vae is None
    g1 = pipelines.generate(pipe, data.captions[:2], seeds=0, steps=3, progress=False)
    g2 = pipelines.generate(pipe, data.captions[:2], seeds=0, steps=3, progress=False)
    assert g1.images.shape == (2, 3, 16, 16) and torch.equal(g1.images, g2.images)
    assert g1.images.min() >= -1 and g1.images.max() <= 1


def test_caption_count_must_match(tmp_path, monkeypatch):
    import pytest

    monkeypatch.setenv("REPLIB_CACHE", str(tmp_path))
    data = glyphs.make_glyph_set(4, 16, seed=0)
    with pytest.raises(ValueError, match="captions"):
        train_text2image("t", data.images, data.captions[:3], T2ITraining(steps=1), clip_tokenizer(), progress=False)


def test_cosine_schedule_and_prediction_type():
    import pytest

    from replib.params import ParameterError

    from replib.training.loop import lr_factor

    cfg = T2ITraining(steps=100, lr=1e-3)  # the rate of step i is cfg.lr * lr_factor(cfg.lr_schedule, i, cfg.steps)
    rate = [cfg.lr * lr_factor(cfg.lr_schedule, i, cfg.steps) for i in (0, 50, 100)]
    assert rate[0] == pytest.approx(1e-3) and rate[1] == pytest.approx(5e-4) and rate[2] == 0
    assert lr_factor(T2ITraining(lr_schedule="constant").lr_schedule, 99, 100) == 1.0
    assert cfg.prediction_type == "v_prediction"
    with pytest.raises(ParameterError, match="prediction_type"):
        T2ITraining(prediction_type="x0")
    with pytest.raises(ParameterError, match="lr_schedule"):
        T2ITraining(lr_schedule="linear")
    with pytest.raises(ParameterError, match="p_uncond"):
        T2ITraining(p_uncond=1.5)
    assert T2ITraining(channels=[8, 16]).channels == (8, 16)


def test_resumed_training_equals_uninterrupted(tmp_path, monkeypatch):
    """The learning-rate schedule follows the loop's step, which a resume restores, so a resumed run continues the
    schedule exactly."""
    import pytest

    monkeypatch.setenv("REPLIB_CACHE", str(tmp_path))
    data = glyphs.make_glyph_set(6, 16, seed=1)
    tok = clip_tokenizer()
    kw = dict(steps=6, batch_size=4, channels=(8, 16), text_hidden=16, text_layers=1, save_every=3)
    whole = train_text2image("whole", data.images, data.captions, T2ITraining(**kw), tok, progress=False)

    import replib.checkpoints as ck
    real_save = ck.save_atomic

    def save_then_stop(obj, path):
        real_save(obj, path)
        if str(path).endswith(".partial.pt"):
            raise KeyboardInterrupt
    monkeypatch.setattr(ck, "save_atomic", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        train_text2image("cut", data.images, data.captions, T2ITraining(**kw), tok, progress=False)
    monkeypatch.setattr(ck, "save_atomic", real_save)
    resumed = train_text2image("cut", data.images, data.captions, T2ITraining(**kw), tok, progress=False)
    assert np.allclose(whole.losses, resumed.losses)
    for a, b in zip(whole.unet.state_dict().values(), resumed.unet.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6)
    pipe = as_pipeline(resumed, tok)
    assert pipe.scheduler.config.prediction_type == "v_prediction"
