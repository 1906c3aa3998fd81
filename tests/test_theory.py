import math

import numpy as np
import pytest
import torch

from replib.data.digits import simplex_samples
from replib.probes.theory import (
    find_separable_subset,
    linear_dae_solution,
    memorization_scales,
    memorization_scales_alternative,
    separation_margin,
    stored_scales,
    subspace_cosines,
)


# ---------------------------------------------------------------- memorization scales, brute force in one dimension
def _brute_force_scale(x: np.ndarray, n: int, sigma: float, lam: float) -> float:
    """argmin over r >= 0 of sample x's share of the objective when its own neuron is w = r x and no other neuron
    fires on it:  (1/n) E_eps ||w relu(w^T (x + sigma eps)) - x||^2 + lam ||w||^2.

    With z = x^T (x + sigma eps) ~ N(s, sigma^2 s), s = ||x||^2, the error is x (r^2 relu(z) - 1), so the expectation is
    s E[(r^2 relu(z) - 1)^2]; it is integrated numerically over z (the ReLU kept), then r is scanned on a fine grid."""
    s = float(x @ x)
    sd = sigma * math.sqrt(s)
    z = np.linspace(s - 12 * sd, s + 12 * sd, 20001)
    pz = np.exp(-0.5 * ((z - s) / sd) ** 2)
    pz /= pz.sum()
    rz = np.maximum(z, 0.0)
    m1, m2 = float((rz * pz).sum()), float((rz**2 * pz).sum())  # E relu(z), E relu(z)^2

    def objective(r):
        a = r**2  # E (a relu(z) - 1)^2 = a^2 m2 - 2 a m1 + 1
        return s * (a**2 * m2 - 2 * a * m1 + 1) / n + lam * r**2 * s

    r = np.linspace(0.0, 3.0 / math.sqrt(s), 300_001)
    return float(r[np.argmin(objective(r))])


@pytest.mark.parametrize("n,sigma,lam", [(1, 0.3, 0.0), (4, 0.3, 0.05), (10, 0.1, 0.2), (3, 0.35, 0.3)])
def test_memorization_scales_single_sample_brute_force(n, sigma, lam):
    x = 0.3 * torch.tensor([[1.0, -2.0, 0.5, 0.0, 3.0, -1.0]])  # d = 6, ||x||^2 = 1.3725
    r = float(memorization_scales(x, sigma, lam, n=n)[0])
    expected = _brute_force_scale(x[0].double().numpy(), n, sigma, lam)
    assert expected > 0
    assert r == pytest.approx(expected, rel=2e-3)


def test_memorization_scales_rows_are_independent_and_use_len_x():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(3, 6, generator=g) * torch.tensor([[0.5], [1.0], [2.0]])
    sigma, lam = 0.2, 0.1
    r = memorization_scales(x, sigma, lam)
    assert r.shape == (3,)
    for i in range(3):
        assert float(r[i]) == pytest.approx(_brute_force_scale(x[i].double().numpy(), 3, sigma, lam), rel=2e-3)


def test_memorization_scales_zero_when_penalty_wins():
    x = 0.3 * torch.tensor([[1.0, -2.0, 0.5, 0.0, 3.0, -1.0]])  # ||x||^2 = 1.3725 < n lam / 2 = 2
    r = memorization_scales(x, 0.3, 1.0, n=4)
    assert float(r[0]) == 0.0
    assert _brute_force_scale(x[0].double().numpy(), 4, 0.3, 1.0) == 0.0


# ---------------------------------------------------------------- memorization solution, Monte-Carlo stationarity
def _mc_objective(w, x, sigma, lam, eps):
    """(1/n) sum_i mean_draws ||W relu(W^T (x_i + sigma eps)) - x_i||^2 + lam ||W||_F^2 with fixed antithetic draws."""
    y = x[None] + sigma * eps  # (draws, n, d)
    out = torch.relu(y @ w) @ w.T
    return (out - x[None]).pow(2).sum(-1).mean() + lam * w.pow(2).sum()


def test_memorization_weights_are_stationary_monte_carlo():
    n, d, width, sigma, lam = 4, 16, 6, 0.2, 0.2
    x = simplex_samples(n, d, norm=2.0, seed=0).double()
    assert float(separation_margin(x, sigma).max()) < -3  # well separated: every sample silences the others' neurons
    g = torch.Generator().manual_seed(0)
    e = torch.randn(20_000, n, d, generator=g, dtype=torch.float64)
    eps = torch.cat([e, -e])

    def grad_at(w):
        w = w.clone().double().requires_grad_(True)
        _mc_objective(w, x, sigma, lam, eps).backward()
        return w.grad

    w_star = memorization_weights(x.float(), width, sigma, lam).double()
    g_star = grad_at(w_star).norm()
    for factor in (1.2, 0.8):
        g_off = grad_at(w_star * factor).norm()
        assert g_star < 0.03 * g_off, (float(g_star), factor, float(g_off))
    # lambda / 2 is the right convention for this objective: the solution for a penalty twice as large is not stationary
    assert g_star < 0.03 * grad_at(memorization_weights(x.float(), width, sigma, 2 * lam).double()).norm()
    # the alternative form (||x||_4^4, n lambda) is far from stationary
    w_stated = torch.zeros(d, width, dtype=torch.float64)
    w_stated[:, :n] = (x * memorization_scales_alternative(x, sigma, lam)[:, None].double()).T
    assert g_star < 0.03 * grad_at(w_stated).norm()


# ---------------------------------------------------------------- linear DAE solution
def _group_objective(w, s, sigma, lam, rho):
    """rho E||A(x + sigma eps) - x||^2 + lam ||W||_F^2 over data of second moment s, with A = W W^T."""
    a = w @ w.T
    eye = torch.eye(len(s), dtype=w.dtype)
    return rho * (torch.trace((a - eye).T @ s @ (a - eye)) + sigma**2 * a.pow(2).sum()) + lam * torch.trace(a)


def _fit_w(s, p, sigma, lam, rho, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = (0.5 * torch.randn(len(s), p, generator=g, dtype=torch.float64)).requires_grad_(True)
    opt = torch.optim.LBFGS([w], lr=1, max_iter=5000, tolerance_grad=1e-12, tolerance_change=1e-15,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = _group_objective(w, s, sigma, lam, rho)
        loss.backward()
        return loss

    for _ in range(3):
        opt.step(closure)
    return (w @ w.T).detach()


def test_linear_dae_solution_diagonal_per_direction_scalar_optimum():
    eig = [3.0, 1.5, 0.6, 0.05]
    sigma, lam, rho = 0.3, 0.2, 0.5
    a = linear_dae_solution(torch.diag(torch.tensor(eig)), sigma, lam, rho)
    assert torch.allclose(a, torch.diag(torch.diagonal(a)), atol=1e-6)
    grid = np.linspace(0.0, 2.0, 200_001)
    for k, s in enumerate(eig):
        f = rho * ((grid - 1) ** 2 * s + sigma**2 * grid**2) + lam * grid
        assert float(a[k, k]) == pytest.approx(grid[np.argmin(f)], abs=2e-5)
    assert float(a[3, 3]) == 0.0  # s < lam / (2 rho): the penalty wins


@pytest.mark.parametrize("rank", [None, 2])
def test_linear_dae_solution_matches_gradient_descent(rank):
    g = torch.Generator().manual_seed(2)
    q, _ = torch.linalg.qr(torch.randn(4, 4, generator=g, dtype=torch.float64))
    s = q @ torch.diag(torch.tensor([3.0, 1.5, 0.6, 0.05], dtype=torch.float64)) @ q.T
    sigma, lam, rho = 0.3, 0.2, 0.5
    predicted = linear_dae_solution(s.float(), sigma, lam, rho, rank=rank).double()
    fitted = _fit_w(s, 4 if rank is None else rank, sigma, lam, rho)
    assert torch.allclose(predicted, fitted, atol=1e-4), (predicted, fitted)


def test_linear_dae_solution_rank_keeps_largest():
    s = torch.diag(torch.tensor([0.6, 3.0, 0.05, 1.5]))
    full = linear_dae_solution(s, 0.3, 0.2, 0.5)
    one = linear_dae_solution(s, 0.3, 0.2, 0.5, rank=1)
    two = linear_dae_solution(s, 0.3, 0.2, 0.5, rank=2)
    d_full, d_one, d_two = torch.diagonal(full), torch.diagonal(one), torch.diagonal(two)
    assert torch.allclose(d_one, d_full * torch.tensor([0.0, 1, 0, 0]))
    assert torch.allclose(d_two, d_full * torch.tensor([0.0, 1, 0, 1]))
    assert torch.allclose(linear_dae_solution(s, 0.3, 0.2, 0.5, rank=10), full)


# ---------------------------------------------------------------- subspaces
def _sym(u, vals):
    return u @ torch.diag(torch.tensor(vals, dtype=u.dtype)) @ u.T


def test_subspace_cosines_identical_orthogonal_and_known_angle():
    g = torch.Generator().manual_seed(0)
    u, _ = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=torch.float64))
    a = _sym(u, [0.0, 0.1, 0.2, 0.3, 4.0, 5.0])  # top-2 space: u[:, 4:]
    np.testing.assert_allclose(subspace_cosines(a, a, 2), [1.0, 1.0], atol=1e-8)
    b = _sym(u, [5.0, 4.0, 0.0, 0.1, 0.2, 0.3])  # top-2 space: u[:, :2], orthogonal
    np.testing.assert_allclose(subspace_cosines(a, b, 2), [0.0, 0.0], atol=1e-8)
    theta = 0.4
    e1 = torch.tensor([1.0, 0, 0], dtype=torch.float64)
    v = torch.tensor([math.cos(theta), math.sin(theta), 0], dtype=torch.float64)
    c = subspace_cosines(torch.outer(e1, e1), torch.outer(v, v), 1)
    np.testing.assert_allclose(c, [math.cos(theta)], atol=1e-8)


def test_subspace_cosines_invariant_to_rotation_within_subspace():
    g = torch.Generator().manual_seed(1)
    u, _ = torch.linalg.qr(torch.randn(5, 5, generator=g, dtype=torch.float64))
    a = _sym(u, [0.1, 0.2, 3.0, 4.0, 6.0])
    rot = torch.eye(5, dtype=torch.float64)
    c, s = math.cos(0.7), math.sin(0.7)
    rot[2:4, 2:4] = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)  # mixes two of the top-3 directions
    b = _sym(u @ rot, [0.3, 0.05, 1.0, 9.0, 2.0])  # another spectrum, same top-3 space
    np.testing.assert_allclose(subspace_cosines(a, b, 3), [1.0, 1.0, 1.0], atol=1e-8)
    # but it sees a change of the space
    b2 = _sym(u, [3.0, 0.2, 0.1, 4.0, 6.0])
    assert subspace_cosines(a, b2, 3).min() < 1e-6


# ---------------------------------------------------------------- separation
def test_separation_margin_by_hand():
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-1.0, -1.0]])
    m = separation_margin(x, 0.5)
    r2 = math.sqrt(2)
    # m_ij = x_j . x_i / (sigma ||x_j||)
    expected = torch.tensor([
        [-math.inf, 0.0 / (0.5 * 2), -1.0 / (0.5 * r2)],
        [0.0 / (0.5 * 1), -math.inf, -2.0 / (0.5 * r2)],
        [-1.0 / (0.5 * 1), -2.0 / (0.5 * 2), -math.inf],
    ])
    assert torch.isinf(torch.diagonal(m)).all() and (torch.diagonal(m) < 0).all()
    off = ~torch.eye(3, dtype=torch.bool)
    assert torch.allclose(m[off], expected[off], atol=1e-6)


def test_separation_margin_simplex_value():
    n, norm, sigma = 5, 2.0, 0.1
    m = separation_margin(simplex_samples(n, 9, norm=norm), sigma)
    off = ~torch.eye(n, dtype=torch.bool)
    assert torch.allclose(m[off], torch.full((n * (n - 1),), -norm / (sigma * (n - 1))), atol=1e-4)


def _pair_margins(xc, sigma):
    n = len(xc)
    return [float(xc[j] @ xc[i]) / (sigma * float(xc[j].norm())) for i in range(n) for j in range(n) if i != j]


def test_find_separable_subset():
    # 4 simplex vertices and a near-copy of each: a 4-subset is separable iff it holds one of each pair
    v = simplex_samples(4, 10, norm=3.0, seed=0)
    g = torch.Generator().manual_seed(1)
    x = torch.cat([v, v + 0.02 * torch.randn(v.shape, generator=g)])
    sigma = 0.2
    idx, draws, frac = find_separable_subset(x, 4, sigma, separable=True, seed=0)
    assert len(set(idx.tolist())) == 4 and draws >= 1
    assert sorted(i % 4 for i in idx.tolist()) == [0, 1, 2, 3]
    xc = x[idx] - x[idx].mean(0)
    assert max(_pair_margins(xc, sigma)) < -2
    assert abs(frac - 16 / 70) < 0.15

    idx, draws, _ = find_separable_subset(x, 4, sigma, separable=False, seed=0)
    xc = x[idx] - x[idx].mean(0)
    assert max(_pair_margins(xc, sigma)) > 0
    assert len({i % 4 for i in idx.tolist()}) < 4


def test_find_separable_subset_impossible():
    x = simplex_samples(4, 10, norm=3.0)
    with pytest.raises(ValueError):
        find_separable_subset(x, 4, 0.2, separable=False, tries=20)


# ---------------------------------------------------------------- stored scales
def test_stored_scales_of_memorization_weights():
    x = simplex_samples(4, 12, norm=1.5, seed=2)
    sigma, lam = 0.2, 0.05
    w = memorization_weights(x, 7, sigma, lam)
    assert torch.allclose(stored_scales(w, x), memorization_scales(x, sigma, lam), rtol=1e-5)


def test_stored_scales_split_over_two_columns():
    x = simplex_samples(3, 8, norm=2.0, seed=3)
    r = torch.tensor([0.3, 0.7, 0.5])
    c1, c2 = 0.6, 0.8  # c1^2 + c2^2 = 1
    cols = [r[0] * c1 * x[0], r[0] * c2 * x[0], r[1] * x[1], r[2] * x[2], torch.zeros(8)]
    w = torch.stack(cols, dim=1)
    assert torch.allclose(stored_scales(w, x), r, rtol=1e-5)
    # a column that is not a copy (cosine below threshold) does not count
    w2 = torch.cat([w, (x[0] + x[1])[:, None]], dim=1)  # cosine 1/2 to both
    assert torch.allclose(stored_scales(w2, x), r, rtol=1e-5)


def memorization_weights(x, width, sigma, lam):
    """The memorization solution as a (d, width) matrix: column i = r_i x_i for i < n (r from
    `theory.memorization_scales`, the function notebook 01 uses), zero columns after; n <= width."""
    n, d = x.shape
    if n > width:
        raise ValueError(f"memorization needs n <= width; got n={n}, width={width}")
    w = torch.zeros(d, width)
    w[:, :n] = (x.float() * memorization_scales(x, sigma, lam)[:, None]).T
    return w
