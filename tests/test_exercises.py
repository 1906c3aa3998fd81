"""Every exercise check passes the right answer and fails a stub, zeros, and the plausible wrong answers a learner
would write (each named), in under a second."""
import math
import time

import numpy as np
import pandas as pd
import pytest
import torch
from diffusers import DDPMScheduler
from scipy.special import digamma, gammaln

from replib import exercises
from replib.exercises import ExerciseFailed
from replib.probes.detection import noise_for


# ---- right answers, as a learner would write them ---------------------------------------------------------------

def stored_scale(x, sigma, lam, halve=True, fourth=False):
    n, sq = len(x), x.pow(2).sum(1)
    den = x.pow(4).sum(1) if fourth else sq**2
    return ((sq - n * lam / (2 if halve else 1)).clamp_min(0) / (den + sigma**2 * sq)).sqrt()


def margin(x, sigma, by_row=False, with_sigma=True):
    g = x @ x.T
    norms = x.norm(dim=1)
    return g / ((sigma if with_sigma else 1) * (norms[:, None] if by_row else norms[None, :]))


def top1_share(h, squared=True):
    e = h.pow(2) if squared else h.abs()
    return e.max(1).values / e.sum(1)


def best_column_cosine(x, W, unit_columns=True, over="columns"):
    xu = x / x.norm(dim=1, keepdim=True)
    wu = W / W.norm(dim=0, keepdim=True) if unit_columns else W
    cos = xu @ wu
    return cos.max(1).values if over == "columns" else cos.max(0).values


def spikiness(h, unbiased=False, root=True):
    p = h.shape[1]
    return h.std(1, unbiased=unbiased) / (h.mean(1) * ((p - 1) ** 0.5 if root else 1))


def is_copy(samples, train, rule="ratio"):
    d = torch.cdist(samples.flatten(1), train.flatten(1)).topk(2, largest=False).values
    if rule == "absolute":
        return d[:, 0] < 1 / 3
    if rule == "inverted":
        return d[:, 1] / d[:, 0] < 1 / 3
    return d[:, 0] / d[:, 1] < 1 / 3


def detector_score(unet, x0, layer, seed, call=-1, pool="max", spread="std"):
    calls = []
    handle = dict(unet.named_modules())[layer].register_forward_hook(lambda m, i, o: calls.append(o))
    t = torch.full((len(x0),), 10)
    try:
        unet(DDPMScheduler().add_noise(x0, noise_for(x0.shape, seed), t), t)
    finally:
        handle.remove()
    out = calls[call]
    v = out.amax(dim=(2, 3)) if pool == "max" else out.mean(dim=(2, 3))
    return v.var(1, unbiased=False) if spread == "var" else v.std(1, unbiased=spread == "unbiased")


def tpr(scores, labels, strict=True, of="negatives"):
    ref = scores[labels == 0] if of == "negatives" else scores
    thr = np.percentile(ref, 99)
    pos = scores[labels == 1]
    return float((pos > thr).mean() if strict else (pos >= thr).mean())


def entropy(x, with_volume=True, guard=1e-10):
    x = x.double().flatten(1)
    n, d = x.shape
    dist = torch.cdist(x, x, compute_mode="donot_use_mm_for_euclid_dist")
    dist.fill_diagonal_(float("inf"))
    delta = dist.min(1).values + guard
    log_v = d / 2 * math.log(math.pi) - gammaln(d / 2 + 1) if with_volume else 0.0
    return float(digamma(n) - digamma(1) + log_v + d * torch.log(delta).mean())


def greedy(pool, n, seed, farthest=True):
    x = pool.double().flatten(1)
    chosen = [int(torch.randint(len(x), (1,), generator=torch.Generator().manual_seed(seed)))]
    gap = torch.cdist(x, x[chosen[0]:chosen[0] + 1]).squeeze(1)
    for _ in range(n - 1):
        if farthest:
            nxt = int(gap.argmax())
        else:  # nearest not-yet-chosen
            masked = gap.clone()
            masked[chosen] = float("inf")
            nxt = int(masked.argmin())
        chosen.append(nxt)
        gap = torch.minimum(gap, torch.cdist(x, x[nxt:nxt + 1]).squeeze(1))
    return torch.tensor(chosen)


def wen_norm(eps, guidance=None, half="cond-uncond"):
    uncond, cond = eps.chunk(2)
    diff = cond if half == "cond" else cond - uncond
    return (diff * (guidance or 1)).flatten(1).norm(dim=1)


def push(out, v, gamma, halves="cond", axis="channel"):
    shifted = out.clone()
    vv = v.view(1, -1, 1, 1) if axis == "channel" else v
    n = len(out) // 2
    if halves == "cond":
        shifted[n:] = shifted[n:] + gamma * vv
    elif halves == "uncond":
        shifted[:n] = shifted[:n] + gamma * vv
    else:
        shifted = shifted + gamma * vv
    return shifted


def push_in_place(out, v, gamma):
    out[len(out) // 2:] += gamma * v.view(1, -1, 1, 1)
    return out


def copies_gone(per_n, threshold, column="mean best cosine", last_above=False):
    values = per_n[column]
    if last_above:  # the last n still at or above the threshold
        above = values[values >= threshold]
        return None if above.empty else above.index[-1]
    below = values[values < threshold]
    return None if below.empty else below.index[0]


def auroc(scores, labels, ties=0.5, flipped=False):
    scores, labels = np.asarray(scores, dtype=float), np.asarray(labels)
    pos, neg = scores[labels == 1], scores[labels == 0]
    if flipped:
        pos, neg = neg, pos
    return float(((pos[:, None] > neg[None, :]) + ties * (pos[:, None] == neg[None, :])).mean())


def euler_step(model, x, sigma, sigma_next, sign=1, divide_by="sigma", jump=False):
    d = model(x, sigma)
    if jump:
        return d
    return x + sign * (sigma_next - sigma) * (x - d) / (sigma if divide_by == "sigma" else sigma_next)


def copy_fraction(model, train, steps, unit_norm=True, rule="ratio"):
    from replib.models.toy import sample_toy
    from replib.probes import metrics

    samples = sample_toy(model, 64, steps=steps, seed=0)[0]
    ratio = metrics.nn_distance_ratio(samples, train, unit_norm=unit_norm)[0]
    return float((ratio < 1 / 3).float().mean()) if rule == "ratio" else float((ratio >= 1 / 3).float().mean())


def pixel_change(steered, plain, how="abs"):
    diff = steered - plain
    if how == "squared":
        return diff.pow(2).mean(dim=(1, 2, 3))
    if how == "signed":
        return diff.mean(dim=(1, 2, 3))
    if how == "sum":
        return diff.abs().sum(dim=(1, 2, 3))
    return diff.abs().mean(dim=(1, 2, 3))


def to_8bit(images, rounding=torch.round, scale=127.5, clip=True):
    x = images.clamp(-1, 1) if clip else images
    return rounding((x + 1) * scale) / scale - 1


def rise_by_group(table, column, at="largest", stat="mean"):
    by = table.groupby(["strength γ", "group"])[column].agg(stat)
    strengths = sorted(table["strength γ"].unique())
    top = strengths[-1] if at == "largest" else strengths[1]
    return by.loc[top] - by.loc[strengths[0]]


def exposures(mix, per="duplicated"):
    rows = mix.n_distinct + mix.n_duplicated * mix.copies
    if per == "once":
        return mix.steps * mix.batch_size / rows
    if per == "share":
        return mix.steps * mix.batch_size * mix.n_duplicated * mix.copies / rows
    return mix.steps * mix.batch_size * mix.copies / rows


def copied_shares(copied, labels, over="groups"):
    copied, labels = np.asarray(copied, dtype=float), np.asarray(labels)
    if over == "all":
        return np.array([copied.mean(), copied.mean()])
    if over == "swapped":
        return np.array([copied[labels == 0].mean(), copied[labels == 1].mean()])
    return np.array([copied[labels == 1].mean(), copied[labels == 0].mean()])


RIGHT = {"01.1": stored_scale, "01.2": margin, "01.3": top1_share, "02.1": spikiness, "03.1": best_column_cosine, "05.1": is_copy, "05.2": detector_score,
         "06.1": tpr, "06.2": wen_norm, "07.1": push, "10.1": entropy, "10.2": greedy,
         "02.2": copies_gone, "03.2": auroc, "04.1": euler_step, "04.2": copy_fraction, "07.2": pixel_change,
         "08.1": to_8bit, "09.1": rise_by_group, "11.1": exposures, "11.2": copied_shares}

WRONG = {  # exercise: {what a learner might write: answer}
    "01.1": {"n·lambda for n·lambda/2": lambda x, s, l: stored_scale(x, s, l, halve=False),
             "the 4th powers of the entries for ||x||^4": lambda x, s, l: stored_scale(x, s, l, fourth=True),
             "r squared": lambda x, s, l: stored_scale(x, s, l) ** 2},
    "01.2": {"divided by ||x_i|| (rows) for ||x_j||": lambda x, s: margin(x, s, by_row=True),
             "without sigma": lambda x, s: margin(x, s, with_sigma=False)},
    "01.3": {"the share of |h|_1": lambda h: top1_share(h, squared=False)},
    "03.1": {"columns not normalised": lambda x, W: best_column_cosine(x, W, unit_columns=False),
             "the best image per column": lambda x, W: best_column_cosine(x, W, over="images")},
    "02.1": {"the unbiased std": lambda h: spikiness(h, unbiased=True),
             "without sqrt(p - 1)": lambda h: spikiness(h, root=False)},
    "05.1": {"d1 < 1/3 alone": lambda s, t: is_copy(s, t, "absolute"),
             "d2/d1 for d1/d2": lambda s, t: is_copy(s, t, "inverted")},
    "05.2": {"the layer's first call": lambda u, x, l, s: detector_score(u, x, l, s, call=0),
             "mean pooling": lambda u, x, l, s: detector_score(u, x, l, s, pool="mean"),
             "the variance": lambda u, x, l, s: detector_score(u, x, l, s, spread="var"),
             "the unbiased std": lambda u, x, l, s: detector_score(u, x, l, s, spread="unbiased")},
    "06.1": {">= for >": lambda s, y: tpr(s, y, strict=False),
             "the percentile of every score": lambda s, y: tpr(s, y, of="all")},
    "06.2": {"the guided difference (scale 7.5)": lambda e: wen_norm(e, guidance=7.5),
             "the conditional prediction alone": lambda e: wen_norm(e, half="cond")},
    "07.1": {"both halves pushed": lambda o, v, g: push(o, v, g, halves="both"),
             "the unconditional half pushed": lambda o, v, g: push(o, v, g, halves="uncond"),
             "in place": push_in_place},
    "10.1": {"without log V_d": lambda x: entropy(x, with_volume=False),
             "without the guard": lambda x: entropy(x, guard=0.0)},
    "02.2": {"the last n still above": lambda t, th: copies_gone(t, th, last_above=True),
             "the spikiness column": lambda t, th: copies_gone(t, th, column="spikiness")},
    "03.2": {"ties counted as losses": lambda s, y: auroc(s, y, ties=0.0),
             "ties counted as wins": lambda s, y: auroc(s, y, ties=1.0),
             "the groups swapped": lambda s, y: auroc(s, y, flipped=True)},
    "04.1": {"the step's sign flipped": lambda m, x, s, n: euler_step(m, x, s, n, sign=-1),
             "divided by sigma_next": lambda m, x, s, n: euler_step(m, x, s, n, divide_by="next"),
             "jumping to the denoised image": lambda m, x, s, n: euler_step(m, x, s, n, jump=True)},
    "04.2": {"raw distances, not unit norm": lambda m, t, k: copy_fraction(m, t, k, unit_norm=False),
             "the share of non-copies": lambda m, t, k: copy_fraction(m, t, k, rule="not")},
    "07.2": {"the squared difference": lambda a, b: pixel_change(a, b, "squared"),
             "the signed difference": lambda a, b: pixel_change(a, b, "signed"),
             "the sum for the mean": lambda a, b: pixel_change(a, b, "sum")},
    "08.1": {"truncating for rounding": lambda x: to_8bit(x, rounding=torch.floor),
             "128 levels per unit for 127.5": lambda x: to_8bit(x, scale=128.0),
             "no clipping": lambda x: to_8bit(x, clip=False)},
    "09.1": {"from the second strength": lambda t, c: rise_by_group(t, c, at="second"),
             "the median": lambda t, c: rise_by_group(t, c, stat="median")},
    "11.1": {"the exposures of a pair seen once": lambda m: exposures(m, "once"),
             "all duplicated pairs together": lambda m: exposures(m, "share")},
    "11.2": {"the share over all generations": lambda c, y: copied_shares(c, y, "all"),
             "the groups swapped": lambda c, y: copied_shares(c, y, "swapped")},
    "10.2": {"a random selection": lambda p, n, s: torch.randperm(len(p), generator=torch.Generator().manual_seed(s))[:n],
             "the nearest instead of the farthest": lambda p, n, s: greedy(p, n, s, farthest=False)},
}


def stub(*args, **kwargs):
    raise NotImplementedError("Exercise: not done yet")


ZEROS = {"03.1": lambda x, W: torch.zeros(len(x)), "05.2": lambda unet, x0, layer, seed: torch.zeros(len(x0)), "06.1": lambda s, y: 0.0,
         "06.2": lambda e: torch.zeros(len(e) // 2), "07.1": lambda o, v, g: torch.zeros_like(o),
         "10.1": lambda x: 0.0, "02.2": lambda t, th: 0, "03.2": lambda s, y: 0.0,
         "04.1": lambda m, x, s, n: torch.zeros_like(x), "04.2": lambda m, t, k: 0.0,
         "07.2": lambda a, b: torch.zeros(len(a)), "08.1": lambda x: torch.zeros_like(x),
         "09.1": lambda t, c: pd.Series(0.0, index=sorted(t["group"].unique())), "11.1": lambda m: 0.0,
         "11.2": lambda c, y: np.zeros(2)}


def zeros(id):
    return ZEROS.get(id, lambda first, *rest: torch.zeros(len(first)))


def test_every_exercise_is_covered_here():
    assert set(RIGHT) == set(exercises.EXERCISES) == set(WRONG)


@pytest.mark.parametrize("id", sorted(exercises.EXERCISES))
def test_the_right_answer_passes_in_under_a_second(id, capsys):
    exercises.check(id, RIGHT[id])  # the first call may import diffusers or scipy, which a notebook has done already
    start = time.perf_counter()
    exercises.check(id, RIGHT[id])
    assert time.perf_counter() - start < 1.0
    assert f"✓ Exercise {id}" in capsys.readouterr().out


@pytest.mark.parametrize("id", sorted(exercises.EXERCISES))
def test_a_stub_raises_its_own_error(id):
    with pytest.raises(NotImplementedError, match="not done yet"):
        exercises.check(id, stub)


@pytest.mark.parametrize("id", sorted(exercises.EXERCISES))
def test_zeros_fail(id):
    with pytest.raises(ExerciseFailed, match=f"Exercise {id}"):
        exercises.check(id, zeros(id))


@pytest.mark.parametrize("id, name", [(i, name) for i, wrong in sorted(WRONG.items()) for name in wrong])
def test_a_plausible_wrong_answer_fails(id, name):
    with pytest.raises(ExerciseFailed, match=f"Exercise {id}"):
        exercises.check(id, WRONG[id][name])


def test_messages_say_what_is_wrong_without_the_answer():
    with pytest.raises(ExerciseFailed, match=r"off by the same factor") as failed:
        exercises.check("02.1", lambda h: spikiness(h, unbiased=True))
    assert "hint" in str(failed.value)
    with pytest.raises(ExerciseFailed, match=r"shape \(3, 1\), expected \(3,\)"):
        exercises.check("02.1", lambda h: spikiness(h)[:, None])
    with pytest.raises(ExerciseFailed, match="returned None"):
        exercises.check("02.1", lambda h: None)
    with pytest.raises(KeyError, match="02.1"):
        exercises.check("99.9", spikiness)


def test_checks_also_run_on_the_notebooks_objects():
    h = torch.rand(4, 20)
    exercises.check("02.1", spikiness, h=h)
    with pytest.raises(ExerciseFailed, match="the notebook's representations"):
        exercises.check("02.1", lambda hs: spikiness(hs) if hs is not h else spikiness(hs) + 1, h=h)


SOLVED = '''from replib import exercises
def spikiness(h):
    ### BEGIN SOLUTION
    p = h.shape[1]
    return h.std(1, unbiased=False) / (h.mean(1) * (p - 1) ** 0.5)
    ### END SOLUTION
exercises.check("02.1", spikiness)'''


def test_a_student_version_stubs_the_solution_and_keeps_the_rest():
    source, ids = exercises.stub_solutions(SOLVED)
    assert ids == ["02.1"]
    assert "h.std" not in source and "BEGIN SOLUTION" not in source
    assert '    raise NotImplementedError("Exercise 02.1: spikiness")' in source.splitlines()
    assert source.splitlines()[0] == "from replib import exercises" and source.endswith('exercises.check("02.1", spikiness)')
    namespace = {}
    with pytest.raises(NotImplementedError, match="Exercise 02.1: spikiness"):
        exec(source, namespace)
    exec(SOLVED, {})  # the source version passes its check
    assert exercises.stub_solutions("x = 1") == ("x = 1", [])


@pytest.mark.parametrize("broken, problem", [
    (SOLVED.replace("    ### END SOLUTION\n", ""), "without ### END"),
    (SOLVED.replace("    ### BEGIN SOLUTION\n", ""), "without ### BEGIN"),
    (SOLVED.replace('exercises.check("02.1", spikiness)', ""), "checks none"),
])
def test_malformed_solution_regions_are_refused(broken, problem):
    with pytest.raises(ValueError, match=problem):
        exercises.stub_solutions(broken)


def test_student_notebooks_are_written_without_outputs(tmp_path):
    import nbformat

    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell(SOLVED, execution_count=3)
    cell.outputs = [nbformat.v4.new_output("stream", text="✓ Exercise 02.1")]
    nb.cells += [nbformat.v4.new_markdown_cell("# 02 · x"), cell]
    src = tmp_path / "src"
    src.mkdir()
    nbformat.write(nb, str(src / "02_x.ipynb"))
    assert exercises.write_student_versions(src, tmp_path / "student") == {"02_x.ipynb": ["02.1"]}
    student = nbformat.read(str(tmp_path / "student" / "02_x.ipynb"), as_version=4)
    assert "NotImplementedError" in student.cells[1].source and student.cells[1].outputs == []


def test_make_test_runs_each_exercise_cell_as_a_student_then_with_its_solution():
    """The cell `make test` runs in place of an exercise cell passes only when the student version stops at its own
    stub and the solution then passes its check; the solution's names do not reach later cells."""
    namespace = {}
    exec(exercises.student_check_source(SOLVED), namespace)
    assert "spikiness" in namespace  # the student's definition (a stub), as in a learner's notebook
    with pytest.raises(NotImplementedError):
        namespace["spikiness"](torch.rand(2, 3))
    with pytest.raises(AssertionError, match="ran to its end"):  # the student version must stop at the stub
        exercises.verify_exercise_cell("02.1", "x = 1", SOLVED, {})
    with pytest.raises(AssertionError, match="another stub"):
        exercises.verify_exercise_cell("02.1", 'raise NotImplementedError("Exercise 01.1: x")', SOLVED, {})
    wrong = SOLVED.replace("unbiased=False", "unbiased=True")
    with pytest.raises(ExerciseFailed, match="Exercise 02.1"):  # a solution that fails its check fails the cell
        exec(exercises.student_check_source(wrong), {})
    assert exercises.student_check_source("x = 1") == "x = 1"


def test_student_check_rewrites_a_prepared_notebook(tmp_path):
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells += [nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_code_cell(SOLVED)]
    nbformat.write(nb, str(tmp_path / "02_x.ipynb"))
    assert exercises.student_check_notebook(tmp_path / "02_x.ipynb") == ["02.1"]
    cells = nbformat.read(str(tmp_path / "02_x.ipynb"), as_version=4).cells
    assert cells[0].source == "x = 1" and "verify_exercise_cell('02.1'" in cells[1].source
    exec(cells[1].source, {})  # runs: the stub stops the student version, the solution passes


def test_every_lesson_has_its_exercises_in_a_closing_section():
    """2-4 exercises in each lesson, one in 08 and 09 (the stand-in lessons); every exercise of the library is in
    exactly one notebook, the one its id names, after that notebook's "## Exercises" heading."""
    import nbformat

    from replib.execute import find_notebooks

    seen = []
    for path in find_notebooks(None):
        nb = nbformat.read(str(path), as_version=4)
        heading = next((k for k, c in enumerate(nb.cells) if c.cell_type == "markdown"
                        and c.source.startswith("## Exercises")), None)
        ids = [(k, i) for k, c in enumerate(nb.cells) if c.cell_type == "code" for i in exercises.stub_solutions(c.source)[1]]
        prefix = path.name[:2]
        wanted = (1, 1) if prefix in ("08", "09") else (2, 4)
        assert wanted[0] <= len(ids) <= wanted[1], f"{path.name}: {len(ids)} exercises"
        assert heading is not None and all(k > heading for k, _ in ids), f"{path.name}: exercises outside the closing section"
        assert all(i.startswith(prefix + ".") for _, i in ids), f"{path.name}: {ids}"
        seen += [i for _, i in ids]
    assert sorted(seen) == sorted(exercises.EXERCISES)


def test_student_versions_differ_from_the_sources_only_in_solution_cells(tmp_path):
    """A student notebook is its source with each solution region stubbed and the outputs cleared, nothing else: so
    make test, which runs every other cell as it is and each exercise cell as the student version
    (`verify_exercise_cell`), runs the student notebooks too."""
    import nbformat

    written = exercises.write_student_versions(exercises.Path(exercises.__file__).parents[1] / "notebooks", tmp_path)
    for name, ids in written.items():
        source = nbformat.read(str(exercises.Path(exercises.__file__).parents[1] / "notebooks" / name), as_version=4)
        student = nbformat.read(str(tmp_path / name), as_version=4)
        assert len(source.cells) == len(student.cells)
        changed = [i for s, t in zip(source.cells, student.cells) for i in exercises.stub_solutions(s.source)[1]
                   if s.source != t.source]
        assert changed == ids, name
        for s, t in zip(source.cells, student.cells):
            if not exercises.stub_solutions(s.source)[1]:
                assert s.source == t.source and s.cell_type == t.cell_type
