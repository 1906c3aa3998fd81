"""The toy time-conditioned ReLU DAE: its form, training cache, and sampler."""
import pytest
import torch

from replib.models.toy import ToyDiffusionDAE, sample_toy
from replib.params import ParameterError
from replib.probes import metrics
from replib.training.diffusion import ToyTraining, train_toy


def test_form_and_skip_starts_at_zero():
    m = ToyDiffusionDAE(6, 4, seed=0)
    assert m.skip.item() == 0.0
    x = torch.randn(3, 6)
    sigma = torch.tensor([0.1, 0.5, 1.0])
    h = m.hidden(x, sigma)
    assert h.shape == (3, 4) and (h >= 0).all()
    gain = torch.exp(m.mlp(torch.log(sigma)[:, None]))  # one scalar gain per noise level
    expected = (h * gain) @ m.W.T
    assert torch.allclose(m(x, sigma), expected, atol=1e-6)


def test_settings_are_checked():
    with pytest.raises(ParameterError, match="weighting"):
        ToyTraining(weighting="snr")
    with pytest.raises(ParameterError, match="sigma_max"):
        ToyTraining(sigma_min=1.0, sigma_max=0.5)


def test_train_is_cached_and_sampler_is_seeded(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("REPLIB_CACHE", str(tmp_path))
    x = torch.nn.functional.normalize(torch.randn(3, 8), dim=1)
    cfg = ToyTraining(steps=60, batch_size=16, save_every=20)
    m1 = train_toy("t", x, cfg, width=6, progress=False)
    assert len(m1.losses) == 60
    capsys.readouterr()
    m2 = train_toy("t", x, cfg, width=6, progress=False)
    assert "loaded checkpoint" in capsys.readouterr().out, "the second call must load the checkpoint, not train"
    assert m2.losses == m1.losses and m2.train_seconds == m1.train_seconds
    assert torch.equal(m1.W, m2.W)
    a, ha = sample_toy(m1, 5, steps=10, seed=3)
    b, _ = sample_toy(m1, 5, steps=10, seed=3)
    assert torch.equal(a, b) and a.shape == (5, 8) and len(ha) == 10
    with pytest.raises(ValueError, match="method"):
        sample_toy(m1, 2, method="heun")


def test_unit_norm_copy_rule_counts_dim_copies():
    g = torch.Generator().manual_seed(0)
    train = torch.randn(10, 16, generator=g)
    dim_copies = 0.3 * train[:4]
    assert float((metrics.nn_distance_ratio(dim_copies, train, unit_norm=True)[0] < metrics.COPY_RATIO).float().mean()) == 1.0
    assert float((metrics.nn_distance_ratio(dim_copies, train)[0] < metrics.COPY_RATIO).float().mean()) < 1.0


def test_toy_denoising_error_is_the_objective_on_given_images():
    """Every image once at a seeded sigma: the same seed gives the same number, and a model that outputs zero scores
    the images' mean squared norm (the mean-image baseline of notebook 04)."""
    from replib.training.diffusion import toy_denoising_error

    x = torch.randn(50, 12, generator=torch.Generator().manual_seed(0))
    cfg = ToyTraining(steps=1)
    model = ToyDiffusionDAE(12, 8, seed=0)
    assert toy_denoising_error(model, x, cfg, seed=3) == toy_denoising_error(model, x, cfg, seed=3)
    assert toy_denoising_error(model, x, cfg, seed=3) != toy_denoising_error(model, x, cfg, seed=4)
    with torch.no_grad():
        model.W.zero_()
    assert toy_denoising_error(model, x, cfg) == pytest.approx(float(x.pow(2).sum(1).mean()), rel=1e-5)
