"""Exercises with checks a learner reruns until they pass: each compares the learner's answer with the kit's own
function, on the notebook's objects and on a small fixture, in well under a second on a CPU.

In a notebook:

    from replib import exercises
    exercises.show("02.1")                       # the prompt
    def spikiness(h):
        ...                                      # the learner's answer
    exercises.check("02.1", spikiness, h=h_train)   # passes, or says what is wrong (never the answer)
    exercises.hint("02.1")                       # if stuck

A failed check raises `ExerciseFailed` naming the case that fails and how (shape, a constant factor, which entries),
so a wrong answer cannot pass silently; a stub that raises `NotImplementedError` propagates unchanged.

The solution in a notebook sits between nbgrader's `### BEGIN SOLUTION` / `### END SOLUTION` lines;
`python -m replib.exercises student` writes the student versions (build/student/), each region replaced by
`raise NotImplementedError("Exercise NN.M: title")`.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch


class ExerciseFailed(AssertionError):
    """The learner's answer does not match the kit's reference on one of the check's cases."""


@dataclass(frozen=True)
class Exercise:
    id: str          # "05.1": notebook 05, exercise 1
    title: str
    prompt: str      # markdown
    hint: str
    check: Callable[..., None]  # check(answer, **notebook_objects); raises ExerciseFailed


EXERCISES: dict[str, Exercise] = {}


def _exercise(id: str, title: str, prompt: str, hint: str):
    def register(check: Callable[..., None]) -> Callable[..., None]:
        EXERCISES[id] = Exercise(id, title, prompt, hint, check)
        return check
    return register


def _get(id: str) -> Exercise:
    if id not in EXERCISES:
        raise KeyError(f"no exercise {id!r}; the exercises are {sorted(EXERCISES)}")
    return EXERCISES[id]


def _markdown(text: str) -> None:
    try:
        from IPython.display import Markdown, display
        display(Markdown(text))
    except ImportError:
        print(text)


def show(id: str) -> None:
    """The exercise's prompt."""
    ex = _get(id)
    _markdown(f"**Exercise {ex.id} · {ex.title}.** {ex.prompt}")


def hint(id: str) -> None:
    _markdown(f"*Hint ({id}):* {_get(id).hint}")


def check(id: str, answer: Any, **objects: Any) -> None:
    """Run exercise `id`'s check on `answer`; print a line when it passes, raise `ExerciseFailed` when it does not."""
    ex = _get(id)
    try:
        ex.check(answer, **objects)
    except ExerciseFailed as failed:
        raise ExerciseFailed(f"Exercise {id} ({ex.title}) is not right yet: {failed} "
                             f"(exercises.hint({id!r}) gives a hint)") from None
    print(f"✓ Exercise {id} ({ex.title}): correct.")


# ---- comparing an answer with the reference -----------------------------------------------------------------------

def _array(value: Any, case: str) -> np.ndarray:
    if value is None:
        raise ExerciseFailed(f"on {case} the answer returned None (did the function forget to `return`?)")
    if torch.is_tensor(value):
        value = value.detach().cpu().double().numpy()
    return np.asarray(value, dtype=float)


def scalar(value: Any, case: str) -> float:
    """The answer as one number, or `ExerciseFailed` saying it is not one."""
    got = _array(value, case)
    if got.size != 1:
        raise ExerciseFailed(f"on {case} the answer should be one number, got shape {got.shape}")
    return float(got.ravel()[0])


def compare(got: Any, want: Any, case: str, rtol: float = 1e-4, atol: float = 1e-6,
            mask: np.ndarray | None = None) -> None:
    """Raise `ExerciseFailed` unless `got` matches `want` on `case` (only where `mask` is true): the message says
    whether the shape, NaNs, a constant factor, or some entries are off, without giving the expected values."""
    got, want = _array(got, case), _array(want, case)
    if got.shape != want.shape:
        raise ExerciseFailed(f"on {case} the answer has shape {got.shape}, expected {want.shape}")
    if mask is not None:
        got, want = got[mask], want[mask]
    if np.isnan(got).any() and not np.isnan(want).any():
        raise ExerciseFailed(f"on {case} the answer has NaN values ({int(np.isnan(got).sum())} of {got.size})")
    close = np.isclose(got, want, rtol=rtol, atol=atol)
    if close.all():
        return
    ratio = got[want != 0] / want[want != 0] if (want != 0).any() else np.array([])
    if ratio.size and np.isfinite(ratio).all() and np.allclose(ratio, ratio.flat[0], rtol=1e-3) and ratio.flat[0] != 1:
        raise ExerciseFailed(f"on {case} every value is off by the same factor ({ratio.flat[0]:.4g}x): check a "
                             "constant you multiply or divide by")
    raise ExerciseFailed(f"on {case} {int((~close).sum())} of {close.size} values differ from the reference")


def compare_all(answer: Callable, reference: Callable, cases: list[tuple], **compare_kw: Any) -> None:
    """`compare(answer(*args), reference(*args), case)` for every `(case, *args)` in `cases`."""
    for case, *args in cases:
        compare(answer(*args), reference(*args), case, **compare_kw)


# ---- the fixtures: small cases on which the plausible wrong answers differ from the right one ----------------------

def _simplex(n: int = 5, d: int = 16, seed: int = 0) -> torch.Tensor:
    """n unit vectors with pairwise inner product -1/(n-1) in d dimensions."""
    e = torch.eye(n) - 1.0 / n
    q, _ = torch.linalg.qr(torch.randn(d, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    x = e.double() @ q.T
    return (x / x.norm(dim=1, keepdim=True)).float()


def _random(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


# ---- 01 --------------------------------------------------------------------------------------------------------------

@_exercise("01.1", "the scale of a stored copy",
           "Write `stored_scale(x, sigma, lam)` that returns $r_i$ for every row $x_i$ of `x` (shape `(n, d)`): "
           r"$r_i^2=(\lVert x_i\rVert_2^2-n\lambda/2)/(\lVert x_i\rVert_2^4+\sigma^2\lVert x_i\rVert_2^2)$, and "
           r"$r_i=0$ where the penalty wins ($\lVert x_i\rVert_2^2<n\lambda/2$).",
           r"$n$ is the number of rows of `x`. Clamp the numerator at 0 before the square root.")
def _check_stored_scale(answer, x=None, sigma=None, lam=None):
    from .probes.theory import memorization_scales

    cases = [("a 5-point simplex (sigma 0.05, lambda 0.1)", _simplex(), 0.05, 0.1),
             ("8 random vectors, one with a tiny norm (sigma 0.2, lambda 0.5)",
              torch.cat([_random((7, 10), 1), 0.01 * _random((1, 10), 2)]), 0.2, 0.5)]
    if x is not None:
        cases.append(("the notebook's training images", x, sigma, lam))
    compare_all(answer, memorization_scales, cases)


@_exercise("01.2", "the separation margin",
           "Write `margin(x, sigma)` that returns the matrix $m_{ij}=x_j^\\top x_i/(\\sigma\\lVert x_j\\rVert)$ "
           "(row $i$: the sample, column $j$: the neuron that stores $x_j$). The diagonal is not checked.",
           "`x @ x.T` has entry (i, j) = $x_i^\\top x_j$; divide each column j by $\\sigma\\lVert x_j\\rVert$.")
def _check_margin(answer, x=None, sigma=None):
    from .probes.theory import separation_margin

    xs = _random((6, 9), 3) * torch.linspace(0.5, 3.0, 6)[:, None]   # unequal norms: rows and columns differ
    cases = [("6 vectors of different norms (sigma 0.3)", xs, 0.3)]
    if x is not None:
        cases.append(("the notebook's training images", x, sigma))
    for case, xs, s in cases:
        off = ~np.eye(len(xs), dtype=bool)
        compare(answer(xs, s), separation_margin(xs, s).nan_to_num(neginf=0.0), case, mask=off)


@_exercise("01.3", "the top-1 share",
           r"Write `top1_share(h)` for representations `h` of shape `(n, p)`: per row, the share of the energy "
           r"$\lVert h\rVert_2^2$ that its largest entry carries, $\max_j h_j^2/\sum_j h_j^2$ (1: one neuron carries "
           "it all).",
           "Square first, then take the largest entry and the sum of each row.")
def _check_top1(answer, h=None):
    from .probes.metrics import top1_share

    cases = [("rows with one, two and five equal entries", torch.tensor([[0, 3.0, 0, 0, 0], [2.0, 2.0, 0, 0, 0],
                                                                           [1.0, 1.0, 1.0, 1.0, 1.0]])),
             ("random non-negative rows", _random((6, 10), 16).relu())]
    if h is not None:
        cases.append(("the notebook's representations", h))
    compare_all(answer, top1_share, cases)


# ---- 02 --------------------------------------------------------------------------------------------------------------

@_exercise("02.1", "spikiness",
           "Write `spikiness(h)` for representations `h` of shape `(n, p)` (one row per sample): "
           r"$\mathrm{std}(h)/(\mathrm{mean}(h)\sqrt{p-1})$ per row, with the population standard deviation.",
           "torch's `std` divides by p - 1 unless you pass `unbiased=False`.")
def _check_spikiness(answer, h=None):
    from .probes.metrics import spikiness

    one_hot = torch.zeros(3, 8)
    one_hot[torch.arange(3), torch.tensor([0, 3, 7])] = torch.tensor([1.0, 2.0, 5.0])
    cases = [("one-hot rows (spikiness 1)", one_hot), ("constant rows (spikiness 0)", torch.full((2, 8), 0.7)),
             ("random non-negative rows", _random((5, 12), 4).relu() + 0.01)]
    if h is not None:
        cases.append(("the notebook's representations", h))
    compare_all(answer, spikiness, cases)


# ---- 03 --------------------------------------------------------------------------------------------------------------

@_exercise("03.1", "the best column cosine",
           "Write `best_column_cosine(x, W)` for training images `x` (shape `(n, d)`) and DAE weights `W` (shape "
           "`(d, p)`, one column per neuron): for each image, the largest cosine similarity between it and any column "
           "of `W`. Near 1: the weights hold a copy of that image.",
           "Normalise the rows of `x` and the columns of `W` to length 1; then `x_unit @ W_unit` holds every cosine.")
def _check_best_cosine(answer, x=None, W=None):
    from .probes.metrics import best_column_cosine

    xs = _random((5, 12), 17)
    w = torch.cat([xs[:2].T * torch.tensor([3.0, 0.2]), _random((12, 6), 18) * torch.linspace(0.1, 4, 6)], dim=1)
    cases = [("5 images and 8 columns of different lengths, two of them copies", xs, w)]
    if x is not None:
        cases.append(("the notebook's images and weights", x, W))
    compare_all(answer, lambda xx, ww: best_column_cosine(xx, ww)[0], cases, rtol=1e-4, atol=1e-5)


# ---- 05 --------------------------------------------------------------------------------------------------------------

@_exercise("05.1", "Gu et al.'s copy rule",
           "Write `is_copy(samples, train)` that returns a boolean per generated sample: True when $d_1/d_2<1/3$, with "
           "$d_1$ and $d_2$ the Euclidean distances (over all pixels) to its nearest and second-nearest training "
           "image.",
           "`torch.cdist(samples.flatten(1), train.flatten(1))` gives every distance; `topk(2, largest=False)` the "
           "two smallest per row.")
def _check_copy_rule(answer, samples=None, train=None):
    from .probes.metrics import COPY_RATIO, nn_distance_ratio

    tr = _random((12, 1, 4, 4), 5)
    near = tr[:4] + 0.02 * _random((4, 1, 4, 4), 6)             # copies
    between = (tr[4:8] + tr[5:9]) / 2                           # halfway between two: d1 = d2
    far = 3 * _random((4, 1, 4, 4), 7)                          # new, far from every training image
    closer = tr[8:10] + 0.2 * (tr[9:11] - tr[8:10])              # a fifth of the way to another: d1/d2 = 1/4
    looser = tr[8:10] + 0.3 * (tr[9:11] - tr[8:10])              # three tenths: d1/d2 = 3/7
    cases = [("copies, midpoints, far samples and near-misses of 12 images",
              torch.cat([near, between, far, closer, looser]), tr)]
    if samples is not None:
        cases.append(("the notebook's generations", samples, train))
    for case, s, t in cases:
        want = (nn_distance_ratio(s, t)[0] < COPY_RATIO).numpy()
        got = _array(answer(s, t), case)
        if got.shape != want.shape:
            raise ExerciseFailed(f"on {case} the answer has shape {got.shape}, expected {want.shape}")
        wrong = got.astype(bool) != want
        if wrong.any():
            raise ExerciseFailed(f"on {case} {int(wrong.sum())} of {wrong.size} samples are classified wrongly "
                                 f"({int((wrong & want).sum())} copies missed, {int((wrong & ~want).sum())} "
                                 "false copies)")


@_exercise("05.2", "the detector score, by hand",
           "Write `detector_score(unet, x0, layer, seed)` that returns the paper's memorization score of each image "
           "in `x0`: noise it to $t = 10$ with `DDPMScheduler().add_noise(x0, noise, t)` and "
           "`noise = replib.probes.detection.noise_for(x0.shape, seed)`, run `unet(x_t, t)` once with a forward hook "
           "on the module named `layer` (the **last** time it is called in the pass), max-pool its output over the "
           "spatial dimensions (one value per channel), and return the population standard deviation over channels.",
           "`dict(unet.named_modules())[layer].register_forward_hook(...)` sees every call; keep the last one. "
           "`out.amax(dim=(2, 3))` pools H and W. Remove the hook after the pass.")
def _check_detector(answer, unet=None, x0=None, layer=None, seed=0):
    from .models.unets import small_unet
    from .probes.detection import representation_std_scores

    torch.manual_seed(0)
    tiny = small_unet(sample_size=8, channels=(8, 16)).eval()
    cases = [("a tiny random UNet on 6 random 8x8 images", tiny, _random((6, 1, 8, 8), 8),
              "up_blocks.0.resnets.1.nonlinearity", 0)]
    if unet is not None:
        cases.append(("the notebook's UNet and images", unet, x0, layer, seed))
    for case, net, x, name, s in cases:
        with torch.no_grad():
            got = answer(net, x, name, s)
        compare(got, representation_std_scores(net, x, name, timestep=10, pool="max", seed=s)[name], case, rtol=1e-3)


# ---- 06 --------------------------------------------------------------------------------------------------------------

@_exercise("06.1", "TPR at 1% FPR",
           "Write `tpr_at_1_fpr(scores, labels)` (labels 1 = memorized): the threshold is the 99th percentile of the "
           "scores of label 0 (`np.percentile(..., 99)`), and the answer is the share of label-1 scores strictly "
           "above it.",
           "Take the percentile of the negatives only; `(positive_scores > threshold).mean()`.")
def _check_tpr(answer, scores=None, labels=None):
    from .probes.metrics import detection_summary

    neg = np.arange(101.0)                                # 99th percentile exactly 99.0
    pos = np.array([99.0, 99.0, 100.5, 120.0, 50.0, 98.0, 101.0, 99.5])   # two ties at the threshold
    cases = [("101 negatives and 8 positives, two of them tied with the threshold",
              np.r_[neg, pos], np.r_[np.zeros(101), np.ones(8)])]
    if scores is not None:
        cases.append(("the notebook's detector scores", np.asarray(scores, dtype=float), np.asarray(labels)))
    for case, s, y in cases:
        compare(scalar(answer(s, y), case), detection_summary(s, y)["TPR@1%FPR"], case, rtol=0, atol=1e-9)


@_exercise("06.2", "Wen et al.'s first-step norm",
           "With classifier-free guidance the UNet predicts the noise for a batch `[unconditional; conditional]`: "
           "`eps` has shape `(2n, C, H, W)`, the first `n` rows without the caption, the last `n` with it. Write "
           r"`wen_norm(eps)` that returns, per caption, $\lVert\varepsilon_\text{cond}-\varepsilon_\text{uncond}"
           r"\rVert_2$ over all of its pixels (Wen et al., ICLR 2024). The guidance scale plays no part.",
           "`eps.chunk(2)` splits the batch into its two halves; `.flatten(1).norm(dim=1)` is the norm per row.")
def _check_wen(answer, eps=None):
    from .probes.detection import guidance_norms

    cases = [("a batch of 4 captions, 3x8x8 predictions", _random((8, 3, 8, 8), 14))]
    if eps is not None:
        cases.append(("the notebook's first-step prediction", eps))
    compare_all(answer, guidance_norms, cases)


# ---- 07 --------------------------------------------------------------------------------------------------------------

@_exercise("07.1", "a steering push",
           r"Steering adds $\gamma v$ to a block's output, $v$ holding one value per channel. With guidance the "
           "batch is `[unconditional; conditional]`. Write `push(out, v, gamma)` for `out` of shape "
           "`(2n, C, H, W)` and `v` of shape `(C,)` that returns a new tensor: the conditional half with "
           r"$\gamma v_c$ added at every position of channel $c$, the unconditional half unchanged.",
           "`v.view(1, -1, 1, 1)` broadcasts over the batch and the positions; `out.clone()` first, then add to "
           "`[n:]`.")
def _check_push(answer, out=None, vector=None, gamma=None):
    from .probes.steering import push

    cases = [("a batch of 2 x 3 outputs with 4 channels of 5x5", _random((6, 4, 5, 5), 15),
              torch.tensor([1.0, -2.0, 0.5, 3.0]), 0.7)]
    if out is not None:
        cases.append(("the notebook's block output", out, vector, gamma))
    for case, o, v, g in cases:
        before = o.clone()
        got = answer(o, v, g)
        if not torch.equal(o, before):
            raise ExerciseFailed(f"on {case} the answer changed the block's output in place; return a new tensor")
        compare(got, push(o, v, g), case)


# ---- 10 --------------------------------------------------------------------------------------------------------------

@_exercise("10.1", "the Kozachenko–Leonenko entropy",
           r"Write `entropy(x)` for a set `x` of shape `(n, ...)` (flatten each sample to $d$ values): "
           r"$\hat H=\psi(n)-\psi(1)+\log V_d+\frac dn\sum_i\log(\delta_i+10^{-10})$, with $\delta_i$ the "
           r"distance from sample $i$ to its nearest *other* sample and $V_d=\pi^{d/2}/\Gamma(d/2+1)$ the volume of "
           "the unit ball.",
           r"`scipy.special.digamma` is $\psi$ and `gammaln` is $\log\Gamma$; compute $\log V_d$ in logs, since "
           r"$V_d$ itself underflows for large $d$. Set the diagonal of the distance matrix to infinity.")
def _check_entropy(answer, x=None):
    from .experiments.collapse import knn_entropy

    gauss = _random((200, 3), 9)
    dup = torch.cat([_random((20, 5), 10)] * 2)              # every sample twice: the guard matters
    cases = [("200 standard Gaussian points in 3 dimensions", gauss), ("20 points, each present twice", dup),
             ("64 points in 64 dimensions", _random((64, 64), 11))]
    if x is not None:
        cases.append(("the notebook's training set", x))
    for case, xs in cases:
        got, want = scalar(answer(xs), case), knn_entropy(xs)
        if not math.isclose(got, want, rel_tol=1e-6, abs_tol=1e-6):
            raise ExerciseFailed(f"on {case} the entropy differs from the reference by {got - want:+.4g} nats")


@_exercise("10.2", "greedy farthest-point selection",
           "Write `greedy(pool, n, seed)` that returns the indices of `n` samples of `pool`: start from index "
           "`int(torch.randint(len(pool), (1,), generator=torch.Generator().manual_seed(seed)))`, then repeatedly "
           "add the sample whose distance to its nearest already-selected sample is largest.",
           "Keep a vector `gap`: each candidate's distance to the nearest selected sample; after each pick, "
           "`gap = torch.minimum(gap, distance_to_the_new_pick)` and pick `gap.argmax()`.")
def _check_greedy(answer, pool=None, n=None, seed=0):
    from .experiments.collapse import greedy_select

    cases = [("60 random points in 2 dimensions, 10 chosen", _random((60, 2), 12), 10, 0),
             ("40 random 4x4 images, 8 chosen", _random((40, 1, 4, 4), 13), 8, 3)]
    if pool is not None:
        cases.append(("the notebook's pool", pool, n, seed))
    for case, p, k, s in cases:
        got = [int(i) for i in _array(answer(p, k, s), case).ravel()]
        want = greedy_select(p, k, s).tolist()
        if len(got) != k:
            raise ExerciseFailed(f"on {case} the answer has {len(got)} indices, expected {k}")
        if got[0] != want[0]:
            raise ExerciseFailed(f"on {case} the first index is not the seeded start")
        if got != want:
            first = next(i for i, (a, b) in enumerate(zip(got, want)) if a != b)
            raise ExerciseFailed(f"on {case} pick {first + 1} of {k} is not the farthest remaining sample")


# ---- student versions ---------------------------------------------------------------------------------------------

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"   # nbgrader's markers, so nbgrader can take the notebooks as is
_CHECK_ID = re.compile(r"""exercises\.check\(\s*["'](\d\d\.\d+)["']""")


def stub_solutions(source: str) -> tuple[str, list[str]]:
    """`source` with every solution region (the marker lines included) replaced by a line that raises
    NotImplementedError("Exercise NN.M: title"), indented like the region's first marker; and the ids stubbed.
    The id comes from the cell's `exercises.check("NN.M", ...)` call."""
    if BEGIN not in source and END not in source:
        return source, []
    ids = _CHECK_ID.findall(source)
    if len(set(ids)) != 1:
        raise ValueError(f"a cell with a solution region must check exactly one exercise; it checks {ids or 'none'}:\n"
                         f"{source[:200]}")
    ex = _get(ids[0])
    out, inside, indent = [], False, ""
    for line in source.splitlines():
        if line.strip() == BEGIN:
            if inside:
                raise ValueError(f"exercise {ex.id}: {BEGIN} inside a solution region")
            inside, indent = True, line[: len(line) - len(line.lstrip())]
            out.append(f'{indent}raise NotImplementedError("Exercise {ex.id}: {ex.title}")')
        elif line.strip() == END:
            if not inside:
                raise ValueError(f"exercise {ex.id}: {END} without {BEGIN}")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError(f"exercise {ex.id}: {BEGIN} without {END}")
    return "\n".join(out), [ex.id]


def student_notebook(path: Path, out: Path) -> list[str]:
    """Write the student version of notebook `path` to `out` (solutions stubbed, outputs cleared); return the
    exercise ids it stubbed, in order."""
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    stubbed: list[str] = []
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.source, ids = stub_solutions(cell.source)
            stubbed += ids
            cell.outputs, cell.execution_count = [], None
    out.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(out))
    return stubbed


def write_student_versions(notebooks: Path, out: Path) -> dict[str, list[str]]:
    """Every notebooks/NN_*.ipynb as its student version in `out`; {notebook name: stubbed exercise ids}."""
    return {p.name: student_notebook(p, out / p.name) for p in sorted(notebooks.glob("[0-9][0-9]_*.ipynb"))}


def main(argv: list[str] | None = None) -> None:
    import argparse

    root = Path(__file__).resolve().parents[1]
    ap = argparse.ArgumentParser(prog="python -m replib.exercises", description="The exercises of the notebooks.")
    sub = ap.add_subparsers(dest="command", required=True)
    st = sub.add_parser("student", help="write the student notebooks: every solution region replaced by a stub")
    st.add_argument("--notebooks", type=Path, default=root / "notebooks")
    st.add_argument("--out", type=Path, default=root / "build" / "student")
    sub.add_parser("list", help="list the exercises")
    args = ap.parse_args(argv)
    if args.command == "list":
        for ex in EXERCISES.values():
            print(f"{ex.id}  {ex.title}")
        return
    written = write_student_versions(args.notebooks, args.out)
    for name, ids in written.items():
        print(f"{args.out / name}: {len(ids)} exercise(s) stubbed {', '.join(ids)}")


if __name__ == "__main__":
    main()
