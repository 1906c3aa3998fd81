import itertools
import math

import numpy as np
import pytest
import torch

from replib.probes.metrics import (
    auroc,
    best_column_cosine,
    cosine_matrix,
    l4_l2_ratio,
    nearest_neighbor,
    participation_ratio,
    representation_std,
    representation_summary,
    spikiness,
    top1_share,
    trend,
)


@pytest.mark.parametrize("p", [2, 5, 16])
def test_one_hot_is_maximally_spiky(p):
    h = torch.zeros(p)
    h[p // 2] = 3.7  # scale must not matter
    assert float(spikiness(h)) == pytest.approx(1.0, abs=1e-6)
    assert float(top1_share(h)) == pytest.approx(1.0, abs=1e-6)
    assert float(participation_ratio(h)) == pytest.approx(1.0, abs=1e-6)
    assert float(l4_l2_ratio(h)) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("p", [2, 5, 16])
def test_constant_vector_is_balanced(p):
    h = torch.full((p,), 0.4)
    assert float(spikiness(h)) == pytest.approx(0.0, abs=1e-6)
    assert float(top1_share(h)) == pytest.approx(1 / p, rel=1e-6)
    assert float(participation_ratio(h)) == pytest.approx(p, rel=1e-6)
    assert float(l4_l2_ratio(h)) == pytest.approx(p**-0.25, rel=1e-6)


def test_metrics_reduce_last_axis_only():
    h = torch.tensor([[0.0, 0.0, 2.0, 0.0], [1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 0.0, 0.0]])
    pr = participation_ratio(h)
    assert pr.shape == (3,)
    # two equal active entries out of four: PR = 2, top-1 share 1/2, l4/l2 = 2^(-1/4)
    assert torch.allclose(pr, torch.tensor([1.0, 4.0, 2.0]))
    assert torch.allclose(top1_share(h), torch.tensor([1.0, 0.25, 0.5]))
    assert torch.allclose(l4_l2_ratio(h)[2], torch.tensor(2**-0.25))
    # spikiness of [1,1,0,0]: std 0.5, mean 0.5, sqrt(p-1)=sqrt(3) -> 1/sqrt(3)
    assert torch.allclose(spikiness(h)[2], torch.tensor(1 / math.sqrt(3)))
    s = representation_summary(h)
    assert s["participation ratio"] == pytest.approx(7 / 3, rel=1e-6)


def test_representation_std_is_population_std():
    rng = np.random.default_rng(0)
    h = rng.random((4, 9)).astype(np.float32)
    got = representation_std(torch.from_numpy(h)).numpy()
    np.testing.assert_allclose(got, h.std(axis=-1, ddof=0), rtol=1e-5)
    assert not np.allclose(got, h.std(axis=-1, ddof=1), rtol=1e-3)


def test_cosine_matrix_by_hand():
    a = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    b = torch.tensor([[0.0, 2.0], [-3.0, 0.0], [2.0, 2.0]])
    expected = torch.tensor([[0.0, -1.0, 1 / math.sqrt(2)], [1 / math.sqrt(2), -1 / math.sqrt(2), 1.0]])
    assert torch.allclose(cosine_matrix(a, b), expected, atol=1e-6)


def test_best_column_cosine_finds_planted_column():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 10, generator=g)
    w = torch.randn(10, 6, generator=g) * 0.1
    w[:, 3] = 4.2 * x[0]
    values, idx = best_column_cosine(x, w)
    assert values.shape == (3,) and idx.shape == (3,)
    assert int(idx[0]) == 3
    assert float(values[0]) == pytest.approx(1.0, abs=1e-5)
    # the other samples: brute-force maximum over columns
    for i in (1, 2):
        cos = [float(x[i] @ w[:, j] / (x[i].norm() * w[:, j].norm())) for j in range(6)]
        assert int(idx[i]) == int(np.argmax(cos))
        assert float(values[i]) == pytest.approx(max(cos), abs=1e-5)


def test_best_column_cosine_negative_copy_is_not_a_copy():
    x = torch.tensor([[1.0, 2.0, 3.0]])
    w = torch.stack([-x[0], torch.tensor([1.0, 0.0, 0.0])], dim=1)
    values, idx = best_column_cosine(x, w)
    assert int(idx[0]) == 1 and float(values[0]) < 0.5


@pytest.mark.parametrize("k", [1, 3])
def test_nearest_neighbor_brute_force(k):
    g = torch.Generator().manual_seed(1)
    q = torch.randn(5, 2, 3, generator=g)  # flattened to 6 features
    ref = torch.randn(8, 2, 3, generator=g)
    dist, idx = nearest_neighbor(q, ref, k=k)
    assert dist.shape == (5, k) and idx.shape == (5, k)
    for i in range(5):
        d = [math.sqrt(sum((a - b) ** 2 for a, b in zip(q[i].flatten().tolist(), r.flatten().tolist()))) for r in ref]
        order = np.argsort(d)[:k]
        assert idx[i].tolist() == order.tolist()
        np.testing.assert_allclose(dist[i].numpy(), np.asarray(d)[order], rtol=1e-4, atol=1e-5)


def test_nearest_neighbor_of_itself_is_zero():
    ref = torch.tensor([[0.0, 0.0], [3.0, 4.0], [1.0, 1.0]])
    dist, idx = nearest_neighbor(ref[[1]], ref)
    assert int(idx[0, 0]) == 1 and float(dist[0, 0]) == pytest.approx(0.0, abs=1e-5)


def _auroc_brute(scores, labels):
    pos = [s for s, l in zip(scores, labels) if l]
    neg = [s for s, l in zip(scores, labels) if not l]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def test_auroc_perfect_separation():
    assert auroc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == pytest.approx(1.0)
    assert auroc([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]) == pytest.approx(0.0)


def test_auroc_identical_scores():
    assert auroc([0.5] * 6, [0, 1, 0, 1, 1, 0]) == pytest.approx(0.5)


def test_auroc_matches_pair_counting():
    rng = np.random.default_rng(3)
    scores = np.round(rng.normal(size=40), 1)  # rounding creates ties
    labels = rng.random(40) < 0.4
    assert auroc(scores, labels) == pytest.approx(_auroc_brute(scores.tolist(), labels.tolist()), abs=1e-12)
    assert auroc(torch.tensor(scores), torch.tensor(labels)) == pytest.approx(auroc(scores, labels))


def test_trend_sign():
    assert trend([1, 2, 3, 4], [9, 7, 4, 0]) == pytest.approx(-1.0)
    assert trend([1, 2, 3, 4], [0, 1, 5, 6]) == pytest.approx(1.0)

