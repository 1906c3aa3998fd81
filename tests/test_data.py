import pytest
import torch

from replib.checkpoints import data_fingerprint
from replib.data.digits import (
    IMAGE_SHAPES,
    GaussianMixture,
    center,
    duplicate,
    imbalanced,
    load_images,
    make_gaussian_mixture,
    simplex_samples,
    subsample_indices,
)
from replib.params import ParameterError


def test_load_digits_shapes_and_range():
    x, y = load_images("digits")
    h, w = IMAGE_SHAPES["digits"]
    assert x.dtype == torch.float32 and x.shape == (1797, h * w)
    assert y.shape == (1797,) and y.dtype == torch.long
    assert set(y.tolist()) == set(range(10))
    assert float(x.min()) == -1.0 and float(x.max()) == 1.0  # the full pixel range is used, scaled to [-1, 1]


def test_load_mnist_subset_offline():
    x, y = load_images("mnist", n=10, seed=1)
    assert x.shape == (10, 28 * 28) and y.shape == (10,)
    assert float(x.min()) >= -1.0 and float(x.max()) <= 1.0
    assert float(x.min()) == -1.0  # background pixels are 0 -> -1
    assert ((y >= 0) & (y <= 9)).all()
    # the images are distinct rows of the data set
    assert len({tuple(r.tolist()) for r in x}) == 10
    everything, all_labels = load_images("mnist")
    idx = subsample_indices(5000, 10, seed=1)  # the draw is the seeded subsample of the full set, labels aligned
    assert torch.equal(x, everything[idx]) and torch.equal(y, all_labels[idx])
    assert everything.shape == (5000, 784) and torch.bincount(all_labels).tolist() == [500] * 10
    assert float(everything.min()) == -1.0 and float(everything.max()) == 1.0  # pixels 0..255 -> -1..1


def test_load_images_unknown_dataset():
    with pytest.raises(ParameterError) as err:
        load_images("cifar10")
    msg = str(err.value)
    assert "dataset" in msg and "'mnist'" in msg and "'digits'" in msg


def test_subsample_indices_distinct_and_in_range():
    idx = subsample_indices(50, 20, seed=4)
    assert idx.shape == (20,) and len(set(idx.tolist())) == 20
    assert int(idx.min()) >= 0 and int(idx.max()) < 50
    assert sorted(subsample_indices(7, 7).tolist()) == list(range(7))


def test_subsample_indices_too_many():
    with pytest.raises(ParameterError) as err:
        subsample_indices(10, 11)
    msg = str(err.value)
    assert "n=11" in msg and "<= 10" in msg


@pytest.mark.parametrize("m", [1, 3, 9])
def test_subsample_indices_nested(m):
    big = subsample_indices(100, 10, seed=3)
    assert torch.equal(subsample_indices(100, m, seed=3), big[:m])
    assert not torch.equal(subsample_indices(100, 10, seed=4), big)


def test_center_zero_mean_and_reusable_mean():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 4, generator=g) + torch.tensor([3.0, -2.0, 0.5, 10.0])
    xc, mean = center(x)
    assert torch.allclose(xc.mean(0), torch.zeros(4), atol=1e-5)
    assert torch.allclose(mean, x.mean(0))
    held_out = torch.randn(3, 4, generator=g)
    hc, mean2 = center(held_out, mean)
    assert mean2 is mean
    assert torch.allclose(hc, held_out - x.mean(0))


def test_duplicate_length_counts_and_mask():
    x = torch.arange(15, dtype=torch.float32).reshape(5, 3)
    out, mask = duplicate(x, [1, 3], k=3)
    assert out.shape == (5 + 2 * 2, 3)
    assert torch.equal(out[:5], x)
    rows = [tuple(r.tolist()) for r in out]
    for i in range(5):
        assert rows.count(tuple(x[i].tolist())) == (3 if i in (1, 3) else 1)
    assert mask.tolist() == [False, True, False, True, False]
    same, mask1 = duplicate(x, [2], k=1)
    assert torch.equal(same, x) and mask1.tolist() == [False, False, True, False, False]


def test_duplicate_bad_index():
    with pytest.raises(ParameterError):
        duplicate(torch.zeros(4, 2), [4], k=2)
    with pytest.raises(ParameterError) as err:
        duplicate(torch.zeros(4, 2), [0], k=0)
    assert "k" in str(err.value)


def test_imbalanced_counts():
    labels = torch.tensor([0, 1, 2, 0, 1, 0, 2, 0, 1, 1])
    idx = imbalanced(labels, {0: 3, 2: 1, 1: 4}, seed=2)
    assert len(set(idx.tolist())) == len(idx) == 8
    picked = labels[idx].tolist()
    assert picked.count(0) == 3 and picked.count(2) == 1 and picked.count(1) == 4


def test_imbalanced_too_few():
    labels = torch.tensor([0, 1, 2, 0, 1, 0, 2, 0, 1, 1])
    with pytest.raises(ParameterError) as err:
        imbalanced(labels, {0: 2, 2: 3})
    msg = str(err.value)
    assert "counts[2]" in msg and "only 2" in msg


@pytest.mark.parametrize("n,dim,norm", [(2, 3, 1.0), (5, 12, 2.5), (7, 7, 0.3)])
def test_simplex_samples_geometry(n, dim, norm):
    x = simplex_samples(n, dim, norm=norm, seed=1)
    assert x.shape == (n, dim)
    gram = x.double() @ x.double().T
    expected = torch.full((n, n), -norm**2 / (n - 1), dtype=torch.float64)
    expected.fill_diagonal_(norm**2)
    assert torch.allclose(gram, expected, atol=1e-5 * max(1.0, norm**2))


def test_simplex_samples_needs_n_at_most_dim():
    with pytest.raises(ParameterError):
        simplex_samples(6, 5)


def test_gaussian_mixture_sample_statistics():
    means = torch.tensor([[1.0, 2.0], [-1.0, 0.0]])
    covs = torch.tensor([[[0.5, 0.0], [0.0, 2.0]], [[1.0, 0.5], [0.5, 1.0]]])
    gm = GaussianMixture(means, covs, torch.tensor([0.25, 0.75]))
    # second moments mu mu^T + Sigma, by hand
    s0 = torch.tensor([[1.5, 2.0], [2.0, 6.0]])
    s1 = torch.tensor([[2.0, 0.5], [0.5, 1.0]])
    assert torch.allclose(gm.second_moments, torch.stack([s0, s1]))

    x, comp = gm.sample(40_000, seed=3)
    assert x.shape == (40_000, 2) and comp.shape == (40_000,)
    assert set(comp.unique().tolist()) == {0, 1}
    assert abs(float((comp == 0).float().mean()) - 0.25) < 0.015
    for k, s in enumerate((s0, s1)):
        xk = x[comp == k].double()
        emp = xk.T @ xk / len(xk)
        assert torch.allclose(emp.float(), s, atol=0.08), (k, emp)
        assert torch.allclose(xk.mean(0).float(), means[k], atol=0.05)
    # same seed, same draw
    x2, comp2 = gm.sample(40_000, seed=3)
    assert torch.equal(x, x2) and torch.equal(comp, comp2)


def test_make_gaussian_mixture_structure():
    gm = make_gaussian_mixture(dim=16, k=3, rank=2, mean_norm=4.0, spread=1.0, noise=0.1, seed=1)
    assert gm.means.shape == (3, 16) and gm.covs.shape == (3, 16, 16)
    assert torch.allclose(gm.means.norm(dim=1), torch.full((3,), 4.0), atol=1e-4)
    gram = gm.means @ gm.means.T
    assert (gram[~torch.eye(3, dtype=torch.bool)] < 0).all()
    for k in range(3):
        # the spread is orthogonal to every mean: Sigma mu = noise^2 mu
        assert torch.allclose(gm.covs[k] @ gm.means.T, 0.01 * gm.means.T, atol=1e-4)
        ev = torch.linalg.eigvalsh(gm.covs[k])
        assert torch.allclose(ev[-2:], torch.tensor([0.25 + 0.01, 1.0 + 0.01]), atol=1e-4)


def test_data_fingerprint_sensitive_to_values():
    x = torch.linspace(-1, 1, 12).reshape(4, 3)
    fp = data_fingerprint(x)
    assert fp == data_fingerprint(x.clone())
    y = x.clone()
    y[2, 1] += 1e-3
    assert data_fingerprint(y) != fp
    assert data_fingerprint([x, y]) != data_fingerprint([x, x])


def test_data_fingerprint_distinguishes_how_values_are_split_into_sets():
    # train_dae_cached keys a bank of data sets by this fingerprint (plus dim and the number of sets): two banks
    # holding the same rows split differently between the models are different training sets.
    x = torch.linspace(-1, 1, 15).reshape(5, 3)
    assert data_fingerprint([x[:2], x[2:]]) != data_fingerprint([x[:3], x[3:]])
