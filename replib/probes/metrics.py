"""Numbers that tell memorization from generalization.

Representation metrics take hidden vectors h of shape (..., p) (one per sample) and reduce the last axis:
a memorizing DAE gives *spiky* h (one neuron per training sample), a generalizing one *balanced* h.
Memorization metrics compare training samples with the model's weight columns or with generated samples.
"""
from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

_EPS = 1e-12


def representation_std(h: torch.Tensor) -> torch.Tensor:
    """The paper's spikiness score: the standard deviation of the representation's entries (population std).

    Scale-dependent: compare it across samples of one model (as the detector does), not across models."""
    return h.float().std(dim=-1, unbiased=False)


def spikiness(h: torch.Tensor) -> torch.Tensor:
    """Scale-free spikiness in [0, 1]: std(h) / (mean(h) sqrt(p - 1)) for non-negative h of length p.

    0 when every neuron carries the same activation, 1 when a single neuron carries it all. Dividing the paper's std
    by the mean activation makes models of different weight scale comparable (std / ||h||_2 would not do: for sparse
    ReLU codes it stays near 1/sqrt(p) whatever the spread)."""
    h = h.float()
    p = h.shape[-1]
    return representation_std(h) / (h.mean(-1).clamp_min(_EPS) * (p - 1) ** 0.5)


def l4_l2_ratio(h: torch.Tensor) -> torch.Tensor:
    """||h||_4 / ||h||_2, between p^(-1/4) (even) and 1 (one-hot)."""
    h = h.float()
    return h.norm(p=4, dim=-1) / h.norm(dim=-1).clamp_min(_EPS)


def top1_share(h: torch.Tensor) -> torch.Tensor:
    """Share of the representation's energy ||h||_2^2 held by its largest entry: 1 when one neuron carries it all."""
    e = h.float().pow(2)
    return e.max(dim=-1).values / e.sum(dim=-1).clamp_min(_EPS)


def participation_ratio(h: torch.Tensor) -> torch.Tensor:
    """(sum h^2)^2 / sum h^4: the effective number of active neurons, between 1 (spiky) and p (even)."""
    e = h.float().pow(2)
    return e.sum(-1).pow(2) / e.pow(2).sum(-1).clamp_min(_EPS)


def representation_summary(h: torch.Tensor) -> dict[str, float]:
    """Mean of every representation metric over the samples in h (rows)."""
    return {
        "std": float(representation_std(h).mean()),
        "spikiness": float(spikiness(h).mean()),
        "l4/l2": float(l4_l2_ratio(h).mean()),
        "top-1 share": float(top1_share(h).mean()),
        "participation ratio": float(participation_ratio(h).mean()),
    }


def _unit(x: torch.Tensor) -> torch.Tensor:
    """Rows (flattened per sample) scaled to norm 1."""
    flat = x.float().flatten(1)
    return flat / flat.norm(dim=1, keepdim=True).clamp_min(_EPS)


def cosine_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity between every row of a (n, d) and every row of b (m, d): shape (n, m)."""
    return _unit(a) @ _unit(b).T


def best_column_cosine(x: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For each sample (row of x, shape (n, d)) the largest cosine to any weight column (weights: (d, p)) and which
    column it is. Near 1: the weights hold a copy of that sample."""
    best = cosine_matrix(x, weights.T).max(dim=1)
    return best.values, best.indices


def nearest_neighbor(queries: torch.Tensor, reference: torch.Tensor, k: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Euclidean distances (n, k) from each query row to its k nearest reference rows, and their indices."""
    d = torch.cdist(queries.float().flatten(1), reference.float().flatten(1))
    out = d.topk(k, dim=1, largest=False)
    return out.values, out.indices


def first_below(values, threshold: float):
    """The first index label of `values` (a pandas Series, e.g. a measure per training-set size n) whose value is
    below `threshold`; None when none is."""
    below = values[values < threshold]
    return None if below.empty else below.index[0]


def auroc(scores, labels) -> float:
    """Area under the ROC curve of `scores` for the binary `labels` (1 = positive), via scikit-learn."""
    return float(roc_auc_score(np.asarray(labels).astype(int), np.asarray(scores, dtype=float)))


def auroc_interval(scores, labels, n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the AUROC: positives and negatives resampled separately (so every resample
    has both), `n_boot` times, seeded. How much an AUROC measured on a few dozen generations can be trusted."""
    scores, labels = np.asarray(scores, dtype=float), np.asarray(labels).astype(int)
    pos, neg = scores[labels == 1], scores[labels == 0]
    rng = np.random.default_rng(seed)
    y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    stats = [roc_auc_score(y, np.r_[rng.choice(pos, len(pos)), rng.choice(neg, len(neg))]) for _ in range(n_boot)]
    low, high = np.quantile(stats, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def trend(x, y) -> float:
    """Spearman rank correlation of y with x: -1 when y falls monotonically as x grows."""
    from scipy.stats import spearmanr

    return float(spearmanr(np.asarray(x, dtype=float), np.asarray(y, dtype=float)).statistic)


COPY_RATIO = 1 / 3  # Gu et al.'s rule: a generation is a copy when d1/d2 < 1/3 (`nn_distance_ratio`)


def nn_distance_ratio(samples: torch.Tensor, train: torch.Tensor, unit_norm: bool = False
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """d1/d2 of each generated sample: the distance to its nearest training image over the distance to the second
    nearest, both in pixel L2 divided by sqrt(H*W*C) (Gu et al.'s normalisation; it cancels in the ratio but keeps
    the distances readable). unit_norm=True compares images scaled to norm 1 (a copy up to brightness counts).
    Returns (ratio, index of the nearest training image)."""
    if unit_norm:
        samples, train = _unit(samples), _unit(train)
    scale = float(samples[0].numel()) ** 0.5
    dist, idx = nearest_neighbor(samples, train, k=2)
    dist = dist / scale
    return dist[:, 0] / dist[:, 1].clamp_min(_EPS), idx[:, 0]


def detection_summary(scores, labels) -> dict[str, float]:
    """AUROC and TPR at 1% FPR of a detector whose higher scores mean 'memorized' (labels: 1 = memorized).

    TPR@1%FPR: the threshold is the 99th percentile of the negative (label 0) scores; the TPR is the share of positive
    scores strictly above it. With fewer than 100 negatives this is the best a 1% FPR can be resolved."""
    scores, labels = np.asarray(scores, dtype=float), np.asarray(labels).astype(int)
    threshold = np.percentile(scores[labels == 0], 99)
    return {"AUROC": auroc(scores, labels), "TPR@1%FPR": float((scores[labels == 1] > threshold).mean()),
            "threshold": float(threshold)}


def heldout_table(errors: dict[str, tuple[float, float]], baseline: float | dict[str, float], max_ratio: float,
                  max_share: float) -> "pd.DataFrame":
    """Generalization measured positively: one row per model, its training objective on training images and on
    held-out images (the same noise draws), their ratio, and the held-out error as a share of `baseline`, the error
    of a denoiser that learnt nothing about the images (the mean image for a DAE, zero noise for a noise predictor;
    one number, or one per model).

    A generalizing model denoises images it never saw about as well as its own (ratio near 1) *and* well (a small
    share of the baseline); a memorizing one fails the first (its held-out error is many times its training error),
    an untrained or barely trained one the second. The column "generalizes" says which rows pass both bars
    (`generalization_failures`)."""
    import pandas as pd

    table = pd.DataFrame(errors, index=["train error", "held-out error"]).T
    table["held-out / train"] = table["held-out error"] / table["train error"]
    table["held-out / baseline"] = table["held-out error"] / (pd.Series(baseline) if isinstance(baseline, dict)
                                                              else baseline)
    table["generalizes"] = [not generalization_failures(row, max_ratio, max_share) for _, row in table.iterrows()]
    return table


def generalization_failures(row, max_ratio: float, max_share: float) -> list[str]:
    """Why one row of `heldout_table` does not show generalization (an empty list: it does)."""
    out = []
    if not row["held-out / train"] <= max_ratio:
        out.append(f"held-out error {row['held-out / train']:.2f}x the training error (allowed {max_ratio})")
    if not row["held-out / baseline"] <= max_share:
        out.append(f"held-out error {row['held-out / baseline']:.2f} of the baseline's (allowed {max_share})")
    return out
