"""The library path: a small diffusers UNet trained with DDPM noise (cached) and sampled with DDIM."""
import pytest
import torch

from replib.data import digits
from replib.models.unets import sample_ddim, small_unet
from replib.probes.representations import capture_features
from replib.training.diffusion import UNetTraining, train_unet


def test_small_unet_shapes():
    unet = small_unet(8, (8, 16), norm_groups=4)
    out = unet(torch.randn(2, 1, 8, 8), torch.tensor([1, 500])).sample
    assert out.shape == (2, 1, 8, 8)


def test_train_cached_and_sample(tmp_path, monkeypatch):
    monkeypatch.setenv("REPLIB_CACHE", str(tmp_path))
    x, _ = digits.load_images("digits", n=6)
    imgs = digits.as_image_batch(x, digits.IMAGE_SHAPES["digits"])
    assert imgs.shape == (6, 1, 8, 8) and imgs.min() >= -1 and imgs.max() <= 1
    cfg = UNetTraining(steps=6, batch_size=4, save_every=3)
    unet = train_unet("u", imgs, cfg, progress=False, channels=(8, 16), norm_groups=4)
    assert len(unet.losses) == 6
    again = train_unet("u", imgs, cfg, progress=False, channels=(8, 16), norm_groups=4)
    assert again.losses == unet.losses, "the loaded checkpoint carries its loss curve"
    assert again.train_seconds == unet.train_seconds > 0, "and how long the cold training took"
    for a, b in zip(unet.parameters(), again.parameters()):
        assert torch.equal(a, b)
    s1 = sample_ddim(again, 3, steps=4, seed=0)
    s2 = sample_ddim(again, 3, steps=4, seed=0)
    assert s1.shape == (3, 1, 8, 8) and torch.equal(s1, s2) and s1.min() >= -1 and s1.max() <= 1
    with capture_features(again, ["up_blocks.0.resnets.1.nonlinearity"]) as feats:
        sample_ddim(again, 2, steps=3, seed=0)
    assert len(feats.all_calls["up_blocks.0.resnets.1.nonlinearity"]) >= 3, "hooks fire at every sampling step"


def test_resize_keeps_range():
    x, _ = digits.load_images("mnist", n=3)
    imgs = digits.as_image_batch(x, (28, 28), 16)
    assert imgs.shape == (3, 1, 16, 16) and imgs.min() >= -1 and imgs.max() <= 1


def test_pad_to_32_uses_background():
    x, _ = digits.load_images("mnist", n=2)
    imgs = digits.as_image_batch(x, (28, 28), 32)
    assert imgs.shape == (2, 1, 32, 32)
    assert torch.equal(imgs[:, :, 2:30, 2:30], x.reshape(2, 1, 28, 28))
    assert (imgs[:, :, :2] == -1).all() and (imgs[:, :, :, 30:] == -1).all()


def test_unet_denoising_error_scores_zero_noise_as_one():
    """Predicting zero noise scores the mean squared noise, about 1; the same seed gives the same number, in batches
    of any size."""
    from replib.training.diffusion import unet_denoising_error

    class Zero(torch.nn.Module):
        def forward(self, x, t):
            return type("Out", (), {"sample": torch.zeros_like(x)})()

    imgs = torch.rand(300, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert unet_denoising_error(Zero(), imgs) == pytest.approx(1.0, abs=0.02)
    unet = small_unet(8, channels=(8, 16), norm_groups=4).eval()
    assert unet_denoising_error(unet, imgs[:40], seed=1) == pytest.approx(
        unet_denoising_error(unet, imgs[:40], seed=1, batch_size=7), rel=1e-5)
