"""Figures the notebooks share: weight columns as images, representation bar plots, spikiness distributions."""
from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch

from .probes.metrics import best_column_cosine


def _img(v: torch.Tensor, shape: tuple[int, int]) -> np.ndarray:
    return v.detach().float().reshape(shape).numpy()


def _show(ax, image: torch.Tensor, shape: tuple[int, int] | None, rgb: bool) -> None:
    """One image on `ax`: a colour image (3, H, W) in [-1, 1] as it is, or a flattened grey one scaled to its range."""
    if rgb:
        ax.imshow(((image.detach().float().permute(1, 2, 0) + 1) / 2).clamp(0, 1).numpy())
    else:
        ax.imshow(_img(image, shape), cmap="gray")
    ax.axis("off")


def plot_images_and_representation(images: Sequence[torch.Tensor], titles: Sequence[str], h: torch.Tensor,
                                   h_title: str, shape: tuple[int, int] | None = None):
    """A few images side by side (an input, its output, its nearest column ...; grey flattened with `shape`, or
    colour (3, H, W) in [-1, 1]) and then one representation `h` as a bar plot: what an explorer shows per step."""
    fig, axes = plt.subplots(1, len(images) + 1, figsize=(2.4 * len(images) + 4, 2.5),
                             gridspec_kw={"width_ratios": [1] * len(images) + [2.5]})
    for ax, image, title in zip(axes, images, titles):
        _show(ax, image, shape, image.dim() == 3 and image.shape[0] == 3)
        ax.set_title(title, fontsize=8)
    h = h.detach().float().flatten()
    axes[-1].bar(np.arange(len(h)), h.numpy(), width=1.0, color="C0")
    axes[-1].set_xticks([])
    axes[-1].set_title(h_title, fontsize=8)
    fig.tight_layout()
    return fig


def plot_against_groups(samples: torch.Tensor, nearest: torch.Tensor, scores: np.ndarray,
                        groups: dict[str, np.ndarray], titles: Sequence[str], xlabel: str = "detector score"):
    """One row per sample: the sample, its nearest training image, and where its score falls (a vertical line)
    against the score distributions of reference `groups` (e.g. memorized vs other captions)."""
    n = len(samples)
    fig, axes = plt.subplots(n, 3, figsize=(8.5, 1.9 * n), squeeze=False, gridspec_kw={"width_ratios": [1, 1, 3.5]})
    bins = np.histogram_bin_edges(np.concatenate([*groups.values(), np.asarray(scores, dtype=float)]), bins=30)
    for i in range(n):
        for j, image in enumerate((samples[i], nearest[i])):
            _show(axes[i, j], image, None, True)
        for k, (name, values) in enumerate(groups.items()):
            axes[i, 2].hist(values, bins=bins, alpha=0.5, color=f"C{k}", label=name, density=True)
        axes[i, 2].axvline(float(scores[i]), color="k", lw=2, label="this caption")
        axes[i, 2].set_title(titles[i], fontsize=8)
        axes[i, 2].tick_params(labelsize=6)
    axes[0, 0].set_title("generated", fontsize=8)
    axes[0, 1].set_title("nearest training", fontsize=8)
    axes[0, 2].legend(fontsize=7)
    axes[-1, 2].set_xlabel(xlabel, fontsize=8)
    fig.tight_layout()
    return fig


def show_images(images: torch.Tensor, shape: tuple[int, int], titles: Sequence[str] | None = None, ncols: int = 10,
                size: float = 1.1, suptitle: str | None = None):
    """A grid of images: flattened grey images (n, d), each scaled to its own range, or colour images (n, 3, H, W)
    in [-1, 1], shown as they are."""
    n = len(images)
    rgb = images.dim() == 4 and images.shape[1] == 3
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows * 1.15), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            _show(ax, images[i], shape, rgb)
            if titles is not None:
                ax.set_title(titles[i], fontsize=7)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    return fig


def show_pairs(left: torch.Tensor, right: torch.Tensor, shape: tuple[int, int], titles: Sequence[str] | None = None,
               names: tuple[str, str] = ("gen", "nearest"), per_row: int | None = None, size: float = 0.8,
               suptitle: str | None = None):
    """Each left[i] beside right[i] (a generation beside its nearest training image): the picture of "is it a copy?".
    Images as `show_images` takes them; `titles`: one per image (two per pair), default `names` repeated;
    `per_row`: pairs per row (default: all in one row)."""
    if len(left) != len(right):
        raise ValueError(f"{len(left)} images on the left but {len(right)} on the right")
    pair = torch.stack([left, right], 1).flatten(0, 1)
    if not (pair.dim() == 4 and pair.shape[1] == 3):
        pair = pair.flatten(1)
    return show_images(pair, shape, titles=list(titles) if titles is not None else list(names) * len(left),
                       ncols=2 * (per_row or len(left)), size=size, suptitle=suptitle)


def plot_loss(losses: Sequence[float], title: str | None = None, window: int = 100, ax=None):
    """A training-loss curve: every step faint, a running mean over `window` steps on top, log scale."""
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 2.6))
    y = np.asarray(losses, dtype=float)
    ax.plot(y, color="C0", alpha=0.25, lw=0.5)
    if len(y) >= window:
        ax.plot(np.arange(window - 1, len(y)), np.convolve(y, np.ones(window) / window, mode="valid"), color="C0")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if title:
        ax.set_title(title, fontsize=10)
    return ax


def plot_weight_columns(weights: torch.Tensor, shape: tuple[int, int], train: torch.Tensor | None = None,
                        k: int = 20, ncols: int = 10, suptitle: str | None = None):
    """The k largest-norm weight columns (weights: (d, p)) as images, sorted by norm, each annotated with its norm
    and, when training images are given, its best cosine to any of them (1.00 = a stored copy)."""
    norms = weights.norm(dim=0)
    order = torch.argsort(norms, descending=True)[:k]
    titles = []
    for j in order:
        t = f"|w|={norms[j]:.2f}"
        if train is not None:
            t += f"\ncos={best_column_cosine(weights[:, j][None], train.T)[0].item():.2f}"
        titles.append(t)
    return show_images(weights[:, order].T, shape, titles, ncols=ncols, suptitle=suptitle)


def plot_representations(h: torch.Tensor, labels: Sequence[str] | None = None, ncols: int = 5, sort: bool = False,
                         suptitle: str | None = None, size: tuple[float, float] = (2.6, 1.7)):
    """One bar plot per representation vector (rows of h): spiky = one tall bar, balanced = many small ones."""
    h = h.detach().float()
    n = len(h)
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows), squeeze=False, sharey=False)
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.axis("off")
            continue
        v = torch.sort(h[i], descending=True).values if sort else h[i]
        ax.bar(np.arange(len(v)), v.numpy(), width=1.0, color="C0")
        ax.set_xticks([])
        ax.tick_params(labelsize=6)
        if labels is not None:
            ax.set_title(labels[i], fontsize=8)
    axes.flat[0].set_ylabel("activation", fontsize=8)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    return fig


def plot_distributions(values: dict[str, torch.Tensor | np.ndarray], xlabel: str = "spikiness",
                       title: str | None = None, ax=None):
    """Overlaid seaborn distributions (histogram + KDE) of one score for several groups."""
    frame = pd.concat([pd.DataFrame({xlabel: np.asarray(v, dtype=float), "group": k}) for k, v in values.items()])
    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 3.2))
    sns.histplot(frame, x=xlabel, hue="group", stat="density", common_norm=False, kde=True, element="step", ax=ax)
    if title:
        ax.set_title(title)
    return ax


def plot_model_overview(weights: torch.Tensor, shape: tuple[int, int], train: torch.Tensor, h: torch.Tensor,
                        title: str = "", k: int = 8, n_rep: int = 4):
    """One figure per model: its k longest weight columns (with best cosine to a training image) above the
    representations of n_rep training images. Used by the explorers that slide over trained models."""
    norms = weights.norm(dim=0)
    order = torch.argsort(norms, descending=True)[:k]
    cos, _ = best_column_cosine(weights[:, order].T, train.T)
    fig = plt.figure(figsize=(1.3 * k, 3.6))
    grid = fig.add_gridspec(2, max(k, n_rep))
    for i, j in enumerate(order):
        ax = fig.add_subplot(grid[0, i])
        ax.imshow(_img(weights[:, j], shape), cmap="gray")
        ax.set_title(f"cos={cos[i]:.2f}", fontsize=7)
        ax.axis("off")
    width = max(k, n_rep) // n_rep
    for i in range(min(n_rep, len(h))):
        ax = fig.add_subplot(grid[1, i * width : (i + 1) * width])
        ax.bar(np.arange(h.shape[1]), h[i].detach().numpy(), width=1.0)
        ax.set_xticks([])
        ax.tick_params(labelsize=6)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_roc(scores: dict[str, np.ndarray], labels, title: str | None = None, ax=None):
    """ROC curves (scikit-learn's `roc_curve`) of several detectors on the same labels (1 = memorized), with the
    AUROC in the legend and the 1% false-positive rate marked."""
    from sklearn.metrics import roc_auc_score, roc_curve

    labels = np.asarray(labels).astype(int)
    if ax is None:
        _, ax = plt.subplots(figsize=(4.2, 3.8))
    for name, s in scores.items():
        fpr, tpr, _ = roc_curve(labels, np.asarray(s, dtype=float))
        ax.plot(fpr, tpr, label=f"{name} (AUROC {roc_auc_score(labels, s):.3f})")
    ax.plot([0, 1], [0, 1], color="0.7", lw=0.8, ls="--")
    ax.axvline(0.01, color="0.5", lw=0.8, ls=":")
    ax.set_xlabel("false-positive rate")
    ax.set_ylabel("true-positive rate")
    ax.legend(fontsize=7, loc="lower right")
    if title:
        ax.set_title(title, fontsize=10)
    return ax


def plot_side_by_side(samples: torch.Tensor, nearest: torch.Tensor, reps: torch.Tensor,
                      titles: Sequence[str] | None = None, suptitle: str | None = None):
    """One row per generation: the generated image, its nearest training image, and its representation as a bar plot
    (one bar per channel). Images are (n, C, H, W) or (n, H, W) in [-1, 1]; reps is (n, channels)."""
    n = len(samples)
    fig, axes = plt.subplots(n, 3, figsize=(6.4, 1.45 * n), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 1, 3]})
    top = float(reps.max())
    for i in range(n):
        for j, img in enumerate((samples[i], nearest[i])):
            img = img.detach().float()
            img = img.permute(1, 2, 0) if img.dim() == 3 and img.shape[0] == 3 else img.reshape(img.shape[-2:])
            axes[i, j].imshow(((img + 1) / 2).clamp(0, 1).numpy(), cmap="gray", vmin=0, vmax=1)
            axes[i, j].axis("off")
        axes[i, 2].bar(np.arange(reps.shape[1]), reps[i].detach().float().numpy(), width=1.0, color="C0")
        axes[i, 2].set_ylim(0, top * 1.05)
        axes[i, 2].set_xticks([])
        axes[i, 2].tick_params(labelsize=6)
        if titles is not None:
            axes[i, 2].set_title(titles[i], fontsize=7)
    axes[0, 0].set_title("generated", fontsize=8)
    axes[0, 1].set_title("nearest training", fontsize=8)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    return fig


def plot_iterations(tables: dict[str, pd.DataFrame], columns: Sequence[str], suptitle: str | None = None,
                    logy: Sequence[str] = ()):
    """One panel per column: its value over the iterations of every run in `tables` ({label: table indexed by
    iteration}), the model-collapse curves of notebook 10."""
    fig, axes = plt.subplots(1, len(columns), figsize=(3.1 * len(columns), 2.8), squeeze=False)
    for ax, col in zip(axes[0], columns):
        for i, (label, table) in enumerate(tables.items()):
            ax.plot(table.index, table[col], "o-", color=f"C{i}", label=label)
        ax.set_xlabel("iteration")
        ax.set_title(col, fontsize=10)
        ax.set_xticks(list(next(iter(tables.values())).index))
        if col in logy:
            ax.set_yscale("log")
    axes[0, 0].legend(fontsize=8)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    return fig
