"""replib.experiments.collapse: the entropy estimator against closed forms, the selections against a random subset, the recursive
loop's per-iteration cache, and the notebook-10 claims failing where the effect is absent."""
import math

import pytest
import torch

from replib.experiments import collapse
from replib.params import ParameterError


def gaussian_entropy(scales: torch.Tensor) -> float:
    """Closed-form entropy (nats) of a Gaussian with independent coordinates of the given standard deviations."""
    return 0.5 * len(scales) * math.log(2 * math.pi * math.e) + float(torch.log(scales).sum())


@pytest.mark.parametrize("d", [2, 8])
@pytest.mark.parametrize("anisotropic", [False, True])
def test_knn_entropy_matches_gaussian_closed_form(d, anisotropic):
    scales = torch.tensor([0.5] + [2.0] * (d - 1)) if anisotropic else torch.ones(d)
    x = torch.randn(5_000, d, generator=torch.Generator().manual_seed(d)) * scales
    error = (collapse.knn_entropy(x) - gaussian_entropy(scales)) / d
    assert abs(error) < 0.03, f"d={d}: {error:+.3f} nats per dimension off the closed form"


def test_knn_entropy_duplicates_are_guarded_and_very_negative():
    x = torch.randn(50, 8, generator=torch.Generator().manual_seed(0))
    h = collapse.knn_entropy(x)
    h_dup = collapse.knn_entropy(torch.cat([x, x]))
    assert math.isfinite(h_dup)
    # every point now has a twin at distance 0: each term is log(1e-10) ~ -23 instead of log r_i
    assert h_dup < h - 8 * 15


def test_shrinking_a_set_lowers_its_entropy_by_d_log_s():
    x = torch.randn(400, 4, generator=torch.Generator().manual_seed(1))
    assert collapse.knn_entropy(x / 2) == pytest.approx(collapse.knn_entropy(x) - 4 * math.log(2), abs=1e-9)


def test_generalization_score_and_distinct_nearest():
    train = torch.randn(20, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    assert collapse.generalization_score(train, train) == pytest.approx(0.0, abs=1e-12)
    shifted = train + 0.5
    assert collapse.generalization_score(shifted, train) == pytest.approx(0.25, rel=0.2)
    assert collapse.distinct_nearest(train, train) == 1.0
    assert collapse.distinct_nearest(train[:1].repeat(10, 1, 1, 1), train) == pytest.approx(0.1)


def pool_and_subsets(n=64, seed=0):
    pool = torch.randn(2 * n, 16, generator=torch.Generator().manual_seed(seed))
    randoms = [pool[collapse.random_select(pool, n, s)] for s in range(10)]
    return pool, randoms


def test_greedy_beats_random_minimum_distance_and_entropy():
    pool, randoms = pool_and_subsets()
    greedy = pool[collapse.greedy_select(pool, 64, seed=0)]
    best_random = max(float(collapse.knn_distances(r).min()) for r in randoms)
    assert float(collapse.knn_distances(greedy).min()) > best_random
    assert collapse.knn_entropy(greedy) > max(collapse.knn_entropy(r) for r in randoms)


def test_tdf_returns_exactly_n_distinct_and_beats_random():
    pool, randoms = pool_and_subsets()
    tau0 = collapse.tdf_threshold(pool)
    idx = collapse.threshold_decay_select(pool, 64, tau0, alpha=0.95)
    assert len(idx) == 64 and len(set(idx.tolist())) == 64
    assert collapse.knn_entropy(pool[idx]) > max(collapse.knn_entropy(r) for r in randoms)


def test_tdf_fills_up_with_duplicates_when_it_must():
    pool = torch.randn(10, 8, generator=torch.Generator().manual_seed(0)).repeat(5, 1)  # 10 points, 5 copies each
    idx = collapse.threshold_decay_select(pool, 30, tau0=1.0, alpha=0.5)
    assert len(idx) == 30 and len(set(idx.tolist())) == 30
    assert len(torch.unique(pool[idx], dim=0)) == 10  # every distinct point was taken before any copy


@pytest.mark.parametrize("kwargs, name", [({"tau0": 0.0}, "tau0"), ({"alpha": 1.5}, "alpha"), ({"alpha": 1.0}, "alpha"),
                                          ({"n": 99}, "n")])
def test_tdf_bad_values_name_the_parameter(kwargs, name):
    args = {"pool": torch.randn(20, 4), "n": 5, "tau0": 1.0, "alpha": 0.9, **kwargs}
    with pytest.raises(ParameterError, match=name):
        collapse.threshold_decay_select(**args)


@pytest.mark.parametrize("field, value", [("paradigm", "recycle"), ("selection", "best"), ("iterations", 1)])
def test_config_bad_values_name_the_parameter(field, value):
    with pytest.raises(ParameterError, match=field):
        collapse.CollapseConfig(**{field: value})


# --- The loop, with tiny stand-ins for the UNet ---------------------------------------------------------------------

def copier(name, images, steps, seed):
    """A 'model' that is its training set: it memorizes perfectly."""
    return images.clone()


def copier_samples(model, n, seed):
    """A kernel density estimate of the training set with a nearest-neighbour bandwidth: each sample is a training
    image plus noise at a third of the set's mean spacing. Retrained on its own samples it collapses like the UNet:
    drift piles samples onto fewer ancestors, the spacing and with it the novelty (GS) shrink."""
    g = torch.Generator().manual_seed(seed)
    flat = model.flatten(1)
    bandwidth = float(collapse.knn_distances(flat).mean()) / 3 / flat.shape[1] ** 0.5
    picks = model[torch.randint(len(model), (n,), generator=g)]
    return picks + bandwidth * torch.randn(picks.shape, generator=g)


def fresh_samples(model, n, seed):
    """New draws from a fixed distribution, whatever the model trained on: an ideal generalizer (no collapse)."""
    return torch.randn(n, *model.shape[1:], generator=torch.Generator().manual_seed(seed)) * 0.5


REAL = torch.randn(200, 1, 4, 4, generator=torch.Generator().manual_seed(7)) * 0.5


def tiny_run(selection, sampler=copier_samples, paradigm="replace", iterations=4, name="tiny"):
    cfg = collapse.CollapseConfig(paradigm=paradigm, selection=selection, n=32, iterations=iterations, steps=1)
    return collapse.run_collapse(name, REAL, cfg, progress=False, trainer=copier, sampler=sampler)


def test_accumulate_mixes_real_and_every_earlier_iteration():
    run = tiny_run("none", paradigm="accumulate", iterations=3)
    real_rows = {tuple(r.flatten().tolist()) for r in REAL}
    last = run.train[2]
    assert len(last) == 32
    from_real = sum(tuple(r.flatten().tolist()) in real_rows for r in last)
    assert 10 <= from_real <= 11  # 32 evenly over 3 sources: 11 + 11 + 10


def test_run_is_cached_and_resumes_at_the_first_unfinished_iteration(monkeypatch):
    calls = []

    def flaky(name, images, steps, seed):
        calls.append(seed)
        if seed == 2 and len(calls) == 3:
            raise KeyboardInterrupt  # killed while training iteration 2
        return copier(name, images, steps, seed)
    flaky.__name__ = "copier"  # same cache keys as the uninterrupted run below

    cfg = collapse.CollapseConfig(selection="greedy", n=32, iterations=4, steps=1)
    with pytest.raises(KeyboardInterrupt):
        collapse.run_collapse("resume", REAL, cfg, progress=False, trainer=flaky, sampler=copier_samples)
    assert calls == [0, 1, 2]
    resumed = collapse.run_collapse("resume", REAL, cfg, progress=False, trainer=flaky, sampler=copier_samples)
    assert calls == [0, 1, 2, 2, 3]  # iterations 0 and 1 came from the cache
    again = collapse.run_collapse("resume", REAL, cfg, progress=False, trainer=flaky, sampler=copier_samples)
    assert calls == [0, 1, 2, 2, 3]  # everything cached now
    fresh = collapse.run_collapse("other", REAL, cfg, progress=False, trainer=copier, sampler=copier_samples)
    for a, b, c in zip(resumed.pool, again.pool, fresh.pool):
        assert torch.equal(a, b) and torch.equal(a, c)


def test_first_iteration_is_shared_by_every_arm():
    calls = []

    def counting(name, images, steps, seed):
        calls.append(seed)
        return copier(name, images, steps, seed)
    counting.__name__ = "counting"
    for selection in ("none", "greedy"):
        cfg = collapse.CollapseConfig(selection=selection, n=32, iterations=2, steps=1)
        collapse.run_collapse("shared", REAL, cfg, progress=False, trainer=counting, sampler=copier_samples)
    assert calls == [0, 1, 1]


# --- The claims: they hold for a copying loop with entropy-keeping selection, and fail without the effect ---------------

BARS = collapse.CollapseBars(entropy_drop=5.0, gs_ratio=0.8, copy_factor=1.5, entropy_gain=5.0, gs_gain=1.1,
                             pool_gain=2.0, min_corr=0.8)


def claims_for(arm_runs):
    pool = arm_runs["none"].pool[0]
    tables = {sel: run.table() for sel, run in arm_runs.items()}
    return collapse.collapse_claims(tables, collapse.pool_selection_table(pool, 32), BARS)


def test_claims_hold_for_a_copying_loop_with_greedy_and_tdf():
    claims = claims_for({sel: tiny_run(sel) for sel in ("none", "greedy", "tdf")})
    assert claims["holds"].all(), claims


def test_claims_fail_when_selection_is_random():
    """Selection replaced by a random subset: the entropy-keeping claims must fail."""
    runs = {"none": tiny_run("none"), "greedy": tiny_run("random", name="as-greedy"),
            "tdf": tiny_run("random", name="as-tdf")}
    claims = claims_for(runs)
    kept = [c for c in claims.index if c.startswith(("greedy keeps", "tdf keeps"))]
    assert not claims.loc[kept, "holds"].any(), claims


def test_claims_fail_for_a_pool_table_where_selection_does_nothing():
    runs = {sel: tiny_run(sel) for sel in ("none", "greedy")}
    table = collapse.pool_selection_table(runs["none"].pool[0], 32)
    table.loc["greedy"] = table.loc["random"]
    claims = collapse.collapse_claims({s: r.table() for s, r in runs.items()}, table, BARS)
    assert not claims.loc["greedy subset beats a random subset of one pool (nats)", "holds"]


def test_claims_fail_when_the_model_does_not_collapse():
    """An ideal generalizer (fresh samples every iteration): no entropy fall, no GS fall, no copying."""
    runs = {sel: tiny_run(sel, sampler=fresh_samples, name="fresh") for sel in ("none", "greedy")}
    claims = claims_for(runs)
    for claim in ("vanilla entropy falls (nats, first - last)", "vanilla GS falls (last / first)",
                  "copying, not shrinking: spacing fall / spread fall"):
        assert not claims.loc[claim, "holds"], claims


def test_claims_fail_for_shrinking_without_copying():
    """A loop that shrinks every sample towards the mean (variance collapse, as a plain MLP denoiser does) lowers the
    entropy but is not copying: the spacing/spread claim must fail."""
    def shrinking(model, n, seed):
        g = torch.Generator().manual_seed(seed)
        centre = model.mean(0, keepdim=True)
        fresh = centre + (model.std(0, keepdim=True)) * torch.randn(n, *model.shape[1:], generator=g)
        return centre + 0.7 * (fresh - centre)
    runs = {"none": tiny_run("none", sampler=shrinking, name="shrink")}
    table = runs["none"].table()
    claims = collapse.collapse_claims({"none": table}, collapse.pool_selection_table(runs["none"].pool[0], 32), BARS)
    assert claims.loc["vanilla entropy falls (nats, first - last)", "holds"]
    assert not claims.loc["copying, not shrinking: spacing fall / spread fall", "holds"], claims


def test_accumulate_claims_hold_for_copying_and_fail_without_selection():
    rep = {s: tiny_run(s).table() for s in ("none", "greedy")}
    acc = {s: tiny_run(s, paradigm="accumulate").table() for s in ("none", "greedy")}
    claims = collapse.accumulate_claims(acc, rep, min_slowdown=2.0, min_gain=1.0)
    assert claims["holds"].all(), claims
    random_acc = {"none": acc["none"], "greedy": tiny_run("random", paradigm="accumulate", name="acc-random").table()}
    claims = collapse.accumulate_claims(random_acc, rep, min_slowdown=2.0, min_gain=1.0)
    assert not claims.loc["greedy keeps entropy under accumulate (nats over vanilla)", "holds"], claims
    # accumulating gives no slowdown when the replace loop does not collapse either
    fresh = {"none": tiny_run("none", sampler=fresh_samples, name="fresh").table()}
    claims = collapse.accumulate_claims({"none": tiny_run("none", sampler=fresh_samples, paradigm="accumulate",
                                                           name="fresh-acc").table()}, fresh, 2.0, 1.0)
    assert not claims["holds"].any(), claims


def test_arms_trained_in_worker_processes_are_the_arms_one_process_trains(tmp_path, monkeypatch):
    """run_arms with 2 workers (spawned, one torch thread each) gives bitwise the pools of one 1-thread process, and
    the checkpoints it leaves are the same files: every model trained once, then read back."""
    from replib.data import digits

    images, _ = digits.load_images("digits")
    real = digits.as_image_batch(images[:200], digits.IMAGE_SHAPES["digits"])
    cfgs = [collapse.CollapseConfig(paradigm="replace", selection=s, n=16, iterations=2, steps=20, sampler_steps=3)
            for s in ("none", "tdf")]
    runs, files = {}, {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the one process trains with one thread, as each worker does
    try:
        for workers in (2, 1):
            cache = tmp_path / f"cache{workers}"
            monkeypatch.setenv("REPLIB_CACHE", str(cache))
            runs[workers] = collapse.run_arms("t", real, cfgs, workers=workers, progress=False)
            files[workers] = sorted(p.name for p in cache.rglob("*.pt"))
    finally:
        torch.set_num_threads(threads)
    assert files[2] == files[1] and len(files[1]) == 2 + 2 * 2  # a model and a pool: the shared first, then one per arm
    for par, seq in zip(runs[2], runs[1]):
        assert all(torch.equal(a, b) for a, b in zip(par.pool, seq.pool))
