"""The paper's detector on a diffusers UNet: noised single pass, pooled activation, std; layer candidates; plots."""
import matplotlib
import numpy as np
import pytest
import torch

from replib import plotting
from replib.models import sd14
from replib.models.unets import small_unet
from replib.params import ParameterError
from replib.probes import detection, metrics

LAYER = "up_blocks.0.resnets.1.nonlinearity"


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    return small_unet(8, (8, 16), norm_groups=4).eval()


def test_candidate_layers_in_data_flow_order(unet):
    layers = detection.resnet_activation_layers(unet)
    assert layers[0].startswith("down_blocks.0") and layers[-1].startswith("up_blocks.1")
    assert any(n.startswith("mid_block") for n in layers) and LAYER in layers
    assert all(n.endswith(".nonlinearity") for n in layers)


def test_scores_shape_deterministic_and_batch_independent(unet):
    x = torch.rand(10, 1, 8, 8) * 2 - 1
    a = detection.representation_std_scores(unet, x, [LAYER, "mid_block.resnets.0.nonlinearity"], seed=3)
    b = detection.representation_std_scores(unet, x, [LAYER, "mid_block.resnets.0.nonlinearity"], seed=3,
                                            batch_size=3)
    assert set(a) == {LAYER, "mid_block.resnets.0.nonlinearity"}
    assert a[LAYER].shape == (10,) and np.isfinite(a[LAYER]).all()
    np.testing.assert_allclose(a[LAYER], b[LAYER], rtol=1e-5, atol=1e-6)
    c = detection.representation_std_scores(unet, x, LAYER, seed=4)
    assert not np.allclose(a[LAYER], c[LAYER]), "the noise seed matters"


def test_per_image_noise_seeds_make_a_score_independent_of_its_batch(unet):
    x = torch.rand(6, 1, 8, 8) * 2 - 1
    seeds = [10, 11, 12, 13, 14, 15]
    whole = detection.representation_std_scores(unet, x, LAYER, seed=seeds)[LAYER]
    tail = detection.representation_std_scores(unet, x[3:], LAYER, seed=seeds[3:])[LAYER]
    np.testing.assert_allclose(whole[3:], tail, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="noise seeds"):
        detection.noise_for((6, 1, 8, 8), seeds[:2])


def test_score_is_std_of_the_spatial_max(unet):
    x = torch.rand(4, 1, 8, 8) * 2 - 1
    reps = detection.noised_representations(unet, x, LAYER, timestep=10, pool="max", seed=0)[LAYER]
    assert reps.shape == (4, 16)
    scores = detection.representation_std_scores(unet, x, LAYER, timestep=10, pool="max", seed=0)[LAYER]
    np.testing.assert_allclose(scores, metrics.representation_std(reps).numpy(), rtol=1e-6)
    mean_reps = detection.noised_representations(unet, x, LAYER, pool="mean", seed=0)[LAYER]
    assert (reps >= mean_reps - 1e-6).all(), "a spatial max is never below the spatial mean"


def test_std_and_spikiness_summarize_one_noised_pass(unet):
    x = torch.rand(12, 1, 8, 8) * 2 - 1
    h = detection.noised_representations(unet, x, LAYER, 10, "max", seed=3)[LAYER]
    got = detection.std_and_spikiness(unet, x, LAYER, 10, "max", seed=3)
    assert got == {"std": metrics.representation_std(h).mean().item(), "spikiness": metrics.spikiness(h).mean().item()}
    assert 0 <= got["spikiness"] <= 1


def test_bad_timestep_is_named(unet):
    with pytest.raises(ParameterError, match="timestep"):
        detection.representation_std_scores(unet, torch.zeros(1, 1, 8, 8), LAYER, timestep=1000)


def test_roc_and_side_by_side_plots():
    matplotlib.use("Agg")
    rng = np.random.default_rng(0)
    labels = np.r_[np.ones(20), np.zeros(80)]
    ax = plotting.plot_roc({"good": labels + rng.normal(0, 0.3, 100), "noise": rng.normal(size=100)}, labels)
    assert len(ax.get_lines()) == 4 and "AUROC" in ax.get_legend().get_texts()[0].get_text()
    fig = plotting.plot_side_by_side(torch.rand(2, 1, 8, 8) * 2 - 1, torch.rand(2, 1, 8, 8) * 2 - 1,
                                     torch.rand(2, 16), titles=["a", "b"])
    assert len(fig.axes) == 6


def test_detector_table():
    labels = np.r_[np.ones(10), np.zeros(90)]
    rng = np.random.default_rng(1)
    table = detection.detector_table({"perfect": {"scores": labels * 10.0, "seconds": 2.0, "unet_calls": 1},
                                      "noise": {"scores": rng.normal(size=100), "seconds": 1.0, "unet_calls": 2}},
                                     labels)
    assert list(table.index) == ["perfect", "noise"]
    assert table.loc["perfect", "AUROC"] == 1.0 and table.loc["perfect", "TPR@1%FPR"] == 1.0
    assert table.loc["perfect", "s / sample"] == 0.02 and table.loc["noise", "UNet calls / sample"] == 2
    assert table.loc["perfect", "AUROC 95% low"] == table.loc["perfect", "AUROC 95% high"] == 1.0
    low, high = table.loc["noise", ["AUROC 95% low", "AUROC 95% high"]]
    assert low < table.loc["noise", "AUROC"] < high and low < 0.5 < high and high - low > 0.15  # 10 positives: wide


def test_auroc_interval_is_seeded_and_narrows_with_more_samples():
    rng = np.random.default_rng(0)
    def draw(n):
        labels = np.r_[np.ones(n), np.zeros(n)]
        return rng.normal(size=2 * n) + labels, labels  # a real but partial separation (AUROC about 0.76)
    small, large = draw(20), draw(2000)
    assert metrics.auroc_interval(*small, seed=3) == metrics.auroc_interval(*small, seed=3)
    (lo_s, hi_s), (lo_l, hi_l) = metrics.auroc_interval(*small), metrics.auroc_interval(*large, n_boot=200)
    assert hi_l - lo_l < 0.5 * (hi_s - lo_s)
    assert lo_l < 0.76 < hi_l


def test_beside_published_keeps_each_source_apart():
    import pandas as pd

    table = pd.DataFrame({"AUROC": [0.9, 0.8], "TPR@1%FPR": [0.5, 0.4], "s / sample": [0.1, 0.2]}, index=["ours", "wen"])
    paper = detection.beside_published(table, {"paper (representation std)": "ours", "Wen et al.": "wen"},
                                       sd14.PUBLISHED["paper"], label="kit")
    assert list(paper.index) == ["paper (representation std)", "Wen et al."]
    assert paper.loc["paper (representation std)", "AUROC published"] == 0.987
    assert paper.loc["Wen et al.", "AUROC published"] == 0.986 and paper.loc["Wen et al.", "s / sample published"] == 0.134
    assert paper.loc["paper (representation std)", "AUROC kit"] == 0.9
    assert "Lexica" in paper.attrs["negatives"] and "2512.20963" in paper.attrs["source"]
    jeon = detection.beside_published(table, {"Wen et al., first step": "wen"}, sd14.PUBLISHED["jeon"])
    assert jeon.loc["Wen et al., first step", "AUROC published"] == 0.976
    assert np.isnan(jeon.loc["Jeon et al. (sharpness)", "AUROC kit"])
    assert "ICML 2025" in jeon.attrs["source"] and "the set the kit uses" in jeon.attrs["negatives"]


def test_layer_pool_table_orders_layers_and_uses_the_mask():
    labels = np.r_[np.ones(20), np.zeros(20)]
    good, noise = np.r_[np.ones(20), np.zeros(20)], np.random.default_rng(0).random(40)
    scores = {("b", "max"): good, ("a", "max"): noise, ("b", "mean"): noise, ("a", "mean"): good}
    table = detection.layer_pool_table(scores, labels)
    assert list(table.index) == ["b", "a"] and table.loc["b", ("AUROC", "max")] == 1.0
    assert table.loc["a", ("AUROC", "mean")] == 1.0
    flipped = good.copy()
    flipped[:10] = 0  # the first half of the positives now look negative
    mask = np.r_[np.zeros(10, bool), np.ones(30, bool)]
    assert detection.layer_pool_table({("b", "max"): flipped}, labels, mask=mask).loc["b", ("AUROC", "max")] == 1.0


def test_show_pairs_interleaves_left_and_right():
    import matplotlib.pyplot as plt

    from replib import plotting

    left, right = torch.zeros(3, 3, 8, 8), torch.ones(3, 3, 8, 8)
    fig = plotting.show_pairs(left, right, (8, 8), per_row=2)
    titles = [ax.get_title() for ax in fig.axes if ax.images]
    assert titles == ["gen", "nearest"] * 3 and len(fig.axes) == 8  # 2 rows of 2 pairs, one slot empty
    assert fig.axes[1].images[0].get_array().min() == 1.0  # the right image sits beside its left one
    plt.close(fig)
    with pytest.raises(ValueError, match="3 images on the left but 2"):
        plotting.show_pairs(left, right[:2], (8, 8))
    plt.close("all")
