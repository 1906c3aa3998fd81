"""The paper's closed-form predictions for the two-layer tied ReLU DAE, in one stated convention.

Objective (ours):  J(W) = E_x E_eps || W relu(W^T (x + sigma eps)) - x ||_2^2  +  lambda ||W||_F^2,
with E_x the average over the n training samples (or the data distribution). torch's coupled weight decay `wd`
minimises this with lambda = wd / 2 (see `training.penalty_lambda`).

If the neurons split into groups, group k firing (linearly) on a part of the data of probability mass rho_k with second
moment S_k and silent elsewhere, then A_k = W_k W_k^T minimises  rho_k [tr((A-I) S_k (A-I)) + sigma^2 tr(A^2)]
+ lambda tr(A), whose solution shares the eigenvectors of S_k with eigenvalues
        a = (s - lambda / (2 rho_k)) / (s + sigma^2),   kept where positive, at most p_k of them.   (*)
- Memorization: each training sample is its own group, rho = 1/n, S = x x^T (one eigenvalue ||x||^2), W = r x:
        r^2 = (||x||_2^2 - n lambda / 2) / (||x||_2^4 + sigma^2 ||x||_2^2).
- Generalization on a Gaussian mixture: S_k = mu_k mu_k^T + Sigma_k, and (*) is the rank-p_k part of
  (S_k - lambda/(2 rho_k) I)(S_k + sigma^2 I)^(-1).
Written with n*lambda and lambda/rho_k instead, the same results hold for an objective whose penalty is twice ours (a
convention). An alternative form of the memorization scale, with ||x_i||_4^4 (the sum of the entries' fourth powers)
in place of ||x_i||_2^4, is kept as `memorization_scales_alternative` only to show numerically that the learned
weights do not follow it. Both are checked in notebooks 01 and 02.

The solutions are stationary only if each group is silent on the others' data: for memorization, x_j^T (x_i + sigma
eps) < 0 for every i != j, see `separation_margin`.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.linalg import subspace_angles


def memorization_scales(x: torch.Tensor, sigma: float, lam: float, n: int | None = None) -> torch.Tensor:
    """r_i of the memorization solution W = (r_1 x_1, ..., r_n x_n, 0, ...) for samples x (n, d); 0 where the penalty
    wins (||x||^2 < n lambda / 2)."""
    n = len(x) if n is None else n
    sq = x.float().pow(2).sum(-1)
    return ((sq - n * lam / 2).clamp_min(0) / (sq**2 + sigma**2 * sq)).sqrt()


def memorization_scales_alternative(x: torch.Tensor, sigma: float, lam: float) -> torch.Tensor:
    """An alternative form, r_i = sqrt((||x||_2^2 - n lambda) / (||x||_4^4 + sigma^2 ||x||_2^2)) with the entries'
    fourth powers in the denominator, kept only to show numerically that the learned weights do not follow it (it
    predicts columns many times too long)."""
    n, x = len(x), x.float()
    sq, q4 = x.pow(2).sum(-1), x.pow(4).sum(-1)
    return ((sq - n * lam).clamp_min(0) / (q4 + sigma**2 * sq)).sqrt()


def separation_margin(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """m_ij = x_j^T x_i / (sigma ||x_j||) for i != j (diagonal set to -inf): how many noise standard deviations
    sample i sits inside the half-space where neuron j (a copy of x_j) is silent. The memorization solution is a
    stationary point when max m_ij is well below 0 (about -2 or less)."""
    x = x.float()
    g = x @ x.T / (sigma * x.norm(dim=1)[None, :]).clamp_min(1e-12)
    g.fill_diagonal_(-float("inf"))
    return g


def linear_dae_solution(second_moment: torch.Tensor, sigma: float, lam: float, rho: float = 1.0,
                        rank: int | None = None) -> torch.Tensor:
    """A = W W^T predicted by (*) for one group of neurons: eigenvalues (s - lam/(2 rho)) / (s + sigma^2) of the
    second moment S, negatives set to 0, only the `rank` largest kept."""
    s, u = torch.linalg.eigh(second_moment.double())
    a = ((s - lam / (2 * rho)) / (s + sigma**2)).clamp_min(0)
    if rank is not None and rank < len(a):
        a[torch.argsort(a, descending=True)[rank:]] = 0
    return (u @ torch.diag(a) @ u.T).float()


def subspace_cosines(a: torch.Tensor, b: torch.Tensor, k: int) -> np.ndarray:
    """Cosines of the principal angles between the top-k eigenspaces of the symmetric matrices a and b (1 = aligned)."""
    ua = torch.linalg.eigh(a.double()).eigenvectors[:, -k:].numpy()
    ub = torch.linalg.eigh(b.double()).eigenvectors[:, -k:].numpy()
    return np.sort(np.cos(subspace_angles(ua, ub)))


def find_separable_subset(x: torch.Tensor, n: int, sigma: float, separable: bool = True, seed: int = 0,
                          tries: int = 1000) -> tuple[torch.Tensor, int, float]:
    """Draw random n-subsets of x (seeded), centre each by its own mean, and return the first whose separation
    margin is below -2 noise std for every pair (`separable=True`) or has some pair with a positive inner product
    (`separable=False`). Returns (indices, draws needed, fraction of draws that were separable)."""
    g = torch.Generator().manual_seed(seed)
    found, hits = None, 0
    for t in range(1, tries + 1):
        idx = torch.randperm(len(x), generator=g)[:n]
        xc = x[idx] - x[idx].mean(0)
        margin = float(separation_margin(xc, sigma).max())
        hits += margin < -2.0
        if found is None and (margin < -2.0 if separable else margin > 0.0):
            found = (idx, t)
        if found is not None and t >= 100:
            break
    if found is None:
        raise ValueError(f"no {'separable' if separable else 'non-separable'} subset of size {n} in {tries} draws")
    return found[0], found[1], hits / t


def stored_scales(weights: torch.Tensor, x: torch.Tensor, threshold: float = 0.9) -> torch.Tensor:
    """The learned r_i: sqrt(sum ||w_j||^2 over the columns w_j with cosine > threshold to x_i) / ||x_i||.
    Summing squares makes it indifferent to a sample's copy being split over several neurons (W W^T is the same)."""
    from .metrics import cosine_matrix

    cos = cosine_matrix(x, weights.T)  # (n, p)
    energy = (weights.pow(2).sum(0)[None, :] * (cos > threshold)).sum(1)
    return energy.sqrt() / x.float().norm(dim=1)
