"""capture_features on a plain module and on a small diffusers UNet; memorization metrics for generations."""
import pytest
import torch
from torch import nn

from replib.probes import metrics
from replib.probes.representations import capture_features, pool_features


def test_pooling():
    x = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2)
    assert torch.equal(pool_features(x, "max"), x.flatten(2).max(2).values)
    assert torch.allclose(pool_features(x, "mean"), x.flatten(2).mean(2))
    assert pool_features(x, "none").shape == (2, 12)
    with pytest.raises(ValueError, match="pool"):
        pool_features(x, "median")


def test_capture_plain_module_and_hooks_removed_on_error():
    net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    x = torch.randn(5, 4)
    with capture_features(net, ["1"], pool="none") as feats:
        net(x)
    assert torch.allclose(feats["1"], torch.relu(net[0](x)))
    with pytest.raises(RuntimeError):
        with capture_features(net, ["0", "2"]):
            raise RuntimeError("boom")
    assert not net[0]._forward_hooks and not net[2]._forward_hooks, "hooks must be removed even on error"
    with pytest.raises(KeyError, match="no submodule"):
        with capture_features(net, ["3"]):
            pass


def test_capture_diffusers_unet_nonlinearity_last_call():
    from diffusers import UNet2DModel

    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       norm_num_groups=4)
    name = "up_blocks.0.resnets.1.nonlinearity"
    resnet = unet.get_submodule("up_blocks.0.resnets.1")
    seen = {}
    resnet.norm2.register_forward_hook(lambda m, i, o: seen.setdefault("norm2", o))
    with torch.no_grad(), capture_features(unet, [name], pool="max") as feats:
        unet(torch.randn(2, 1, 8, 8), 10)
    expected = torch.nn.functional.silu(seen["norm2"]).amax(dim=(2, 3))
    assert torch.allclose(feats[name], expected, atol=1e-6), "default = last call = the SiLU after norm2"
    assert len(feats.all_calls[name]) >= 2


def test_generation_memorization_metrics():
    g = torch.Generator().manual_seed(0)
    train = torch.rand(20, 1, 6, 6, generator=g)
    copies = train[:4] + 1e-3 * torch.randn(4, 1, 6, 6, generator=g)
    novel = torch.rand(6, 1, 6, 6, generator=g)
    samples = torch.cat([copies, novel])
    ratio, idx = metrics.nn_distance_ratio(samples, train)
    assert torch.equal(idx[:4], torch.arange(4))
    assert (ratio[:4] < 1 / 3).all() and (ratio[4:] > 1 / 3).all()
    assert float((metrics.nn_distance_ratio(samples, train)[0] < metrics.COPY_RATIO).float().mean()) == pytest.approx(0.4)


def test_detection_summary_threshold_is_99th_percentile_of_negatives():
    neg = list(range(100))  # 99th percentile = 98.01
    out = metrics.detection_summary(neg + [98.5, 99.5, 50], [0] * 100 + [1, 1, 1])
    assert out["threshold"] == pytest.approx(98.01)
    assert out["TPR@1%FPR"] == pytest.approx(2 / 3)
