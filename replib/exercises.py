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


class _SmoothedIdealDenoiser(torch.nn.Module):
    """D(x, sigma): the training points averaged with weights softmax(-|x - x_i|^2 / 2(sigma^2 + tau^2)), a toy's
    interface (`W`, `hidden`, forward). tau = 0 is the ideal denoiser, which always copies; a larger tau blends,
    so some samples copy and some do not."""

    def __init__(self, train: torch.Tensor, tau: float):
        super().__init__()
        self.train_x, self.tau = train, tau
        self.W = torch.nn.Parameter(torch.zeros(train.shape[1], 1))

    def hidden(self, x: torch.Tensor, sigma) -> torch.Tensor:
        var = torch.as_tensor(sigma) ** 2 + self.tau**2
        return torch.softmax(-torch.cdist(x, self.train_x) ** 2 / (2 * var), dim=1)

    def forward(self, x: torch.Tensor, sigma) -> torch.Tensor:
        return self.hidden(x, sigma) @ self.train_x


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


@_exercise("02.2", "where the copies go (predict, then run)",
           "Put in `my_guess` the $n$ at which you expect the weights to stop holding copies, without looking back at "
           "the sweep's table. Then write `copies_gone(per_n, threshold)`: `per_n` is the sweep's table (one row per $n$, "
           "increasing, column `\"mean best cosine\"`); return the first $n$ whose mean best cosine is below "
           "`threshold`, or `None` if there is none. Run it with 0.5: how close was your guess?",
           "Select the rows below the threshold with a boolean mask; the first of them is the answer "
           "(`.index[0]`).")
def _check_copies_gone(answer, per_n=None):
    import pandas as pd

    from .probes.metrics import first_below

    table = pd.DataFrame({"mean best cosine": [0.97, 0.93, 0.71, 0.52, 0.48, 0.31, 0.22],
                          "spikiness": [0.8, 0.7, 0.45, 0.3, 0.2, 0.15, 0.1]}, index=[5, 10, 20, 50, 100, 200, 500])
    cases = [(f"a sweep table, threshold {t}", table, t) for t in (0.5, 0.75, 0.95, 0.1)]
    if per_n is not None:
        cases += [(f"the notebook's sweep, threshold {t}", per_n, t) for t in (0.5, 0.75)]
    for case, tab, t in cases:
        got, want = answer(tab, t), first_below(tab["mean best cosine"], t)
        if want is None and got is not None:
            raise ExerciseFailed(f"on {case} no n is below the threshold, but the answer is {got!r}; return None")
        if want is not None and (got is None or scalar(got, case) != want):
            raise ExerciseFailed(f"on {case} the answer {got!r} is not the first n below the threshold")


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


@_exercise("03.2", "the AUROC, by hand (predict, then run)",
           "Predict first: ranked by their best column cosine, how often does a duplicated image beat a unique one? "
           "Then write `auroc(scores, labels)` (labels 1 = duplicated): the share of (duplicated, unique) pairs in "
           "which the duplicated image has the higher score, a tie counting one half. Run it on the hybrid model's "
           "best column cosines and compare with your prediction.",
           "Compare every positive score with every negative one: `pos[:, None] > neg[None, :]` is the table of "
           "wins; add half the ties; take the mean.")
def _check_auroc(answer, scores=None, labels=None):
    from .probes.metrics import auroc

    tied = (np.array([0.9, 0.5, 0.5, 0.2, 0.5, 0.1, 0.5, 0.3]), np.array([1, 1, 1, 1, 0, 0, 0, 0]))
    mixed = (_random((40,), 19).numpy(), (np.arange(40) % 3 == 0).astype(int))
    cases = [("8 scores with ties across the groups", *tied), ("40 random scores, a third of them positive", *mixed)]
    if scores is not None:
        cases.append(("the notebook's scores", _array(scores, "the notebook's scores"), _array(labels, "labels")))
    for case, sc, y in cases:
        compare(scalar(answer(sc, y), case), auroc(sc, y), case, rtol=0, atol=1e-9)


# ---- 04 --------------------------------------------------------------------------------------------------------------

@_exercise("04.1", "one step of the sampler",
           "The toy samples by following the probability-flow ODE $dx/d\\sigma=(x-D(x,\\sigma))/\\sigma$ from "
           "$\\sigma=2$ down to $0.02$. Write `euler_step(model, x, sigma, sigma_next)` that returns $x$ after one "
           "Euler step from `sigma` to `sigma_next` (smaller), with $D(x,\\sigma)$ = `model(x, sigma)`.",
           "An Euler step is $x + (\\sigma_{next}-\\sigma)\\,\\frac{dx}{d\\sigma}$; the step is negative while "
           "sampling.")
def _check_euler(answer, model=None):
    from .models.toy import ToyDiffusionDAE, euler_step

    toy = ToyDiffusionDAE(12, 8, seed=3)
    cases = [("an untrained 12-pixel toy, sigma 1.0 -> 0.8", toy, _random((5, 12), 20), 1.0, 0.8),
             ("the same toy, sigma 0.1 -> 0.05", toy, 0.1 * _random((5, 12), 21), 0.1, 0.05)]
    if model is not None:
        dim = model.W.shape[0]
        cases.append(("the notebook's toy, sigma 0.5 -> 0.4", model, 0.5 * _random((4, dim), 22), 0.5, 0.4))
    for case, net, x, s, s_next in cases:
        with torch.no_grad():
            compare(answer(net, x, s, s_next), euler_step(x, net(x, s), s, s_next), case, rtol=1e-4, atol=1e-6)


@_exercise("04.2", "fewer sampler steps (an experiment)",
           "Does the memorizing toy still copy when it samples in a hurry? Write `copy_fraction(model, train, steps)`: "
           "draw 64 samples with `sample_toy(model, 64, steps=steps, seed=0)` and return the fraction that are "
           "copies by the $d_1/d_2<1/3$ rule, distances measured after scaling each image to unit norm "
           "(`metrics.nn_distance_ratio(samples, train, unit_norm=True)`). Run it for 2, 5 and 50 steps on both toys.",
           "`sample_toy` returns (samples, hidden); the ratio is the first thing `nn_distance_ratio` returns; "
           "`metrics.COPY_RATIO` is 1/3.")
def _check_copy_fraction(answer, model=None, train=None):
    from .models.toy import sample_toy
    from .probes.metrics import COPY_RATIO, nn_distance_ratio

    def reference(net, x, steps):
        samples = sample_toy(net, 64, steps=steps, seed=0)[0]
        return float((nn_distance_ratio(samples, x, unit_norm=True)[0] < COPY_RATIO).float().mean())


    train_x = _random((6, 6), 23) * torch.linspace(0.3, 2, 6)[:, None]
    blurry = _SmoothedIdealDenoiser(train_x, 0.5)
    cases = [("a smoothed ideal denoiser of 6 points, 5 steps", blurry, train_x, 5),
             ("the same denoiser, 2 steps", blurry, train_x, 2)]
    if model is not None:
        cases += [(f"the notebook's toy, {k} steps", model, train, k) for k in (2, 50)]
    for case, net, x, k in cases:
        with torch.no_grad():
            compare(scalar(answer(net, x, k), case), reference(net, x, k), case, rtol=0, atol=1e-9)


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


@_exercise("07.2", "how far an image moved",
           "Steerability is measured by how far each image moved from its unsteered version (same seed). Write "
           "`pixel_change(steered, plain)` for two image batches of shape `(n, C, H, W)`: per image, the mean "
           "absolute pixel difference.",
           "Average `(steered - plain).abs()` over every dimension but the first.")
def _check_pixel_change(answer, steered=None, plain=None):
    from .probes.steering import pixel_change

    a, b = _random((4, 3, 5, 5), 24), _random((4, 3, 5, 5), 25)
    cases = [("4 random 3x5x5 images", a, b), ("an image and itself", a, a.clone()),
             ("opposite shifts", a + 0.5, a - 0.25)]
    if steered is not None:
        cases.append(("the notebook's generations", steered, plain))
    compare_all(answer, pixel_change, cases)


# ---- 08 --------------------------------------------------------------------------------------------------------------

@_exercise("08.1", "what a saved image keeps",
           "The paper scores images saved as 8-bit PNG files. Write `to_8bit(images)` for pixels in $[-1, 1]$: "
           "return the pixels a PNG would give back, still in $[-1, 1]$: map to $[0, 255]$, round to the nearest "
           "integer, map back. Values outside $[-1, 1]$ are clipped first, as saving does.",
           "$[-1,1]\\to[0,255]$ is $(x+1)\\cdot 127.5$; `torch.round`, then the inverse map; `clamp(-1, 1)` first.")
def _check_8bit(answer, images=None):
    from .models.pipelines import to_8bit

    edges = torch.tensor([-1.3, -1.0, -0.99, -0.5, 0.0, 0.001, 0.5, 0.996, 1.0, 1.7]).view(1, 1, 2, 5)
    cases = [("values at and beyond the edges", edges), ("random pixels", _random((3, 3, 6, 6), 26).tanh())]
    if images is not None:
        cases.append(("the notebook's generated images", images))
    compare_all(answer, to_8bit, cases, rtol=0, atol=1e-6)


# ---- 09 --------------------------------------------------------------------------------------------------------------

@_exercise("09.1", "steerability per group",
           "Write `rise_by_group(table, column)` for the sweep's table (one row per prompt and strength, columns "
           "`\"strength γ\"`, `\"group\"` and the measure `column`): per group, the mean of `column` at the largest "
           "γ minus its mean at γ = 0, as a pandas Series indexed by group.",
           "`table.groupby([\"strength γ\", \"group\"])[column].mean()`, then take the rows of the largest and the "
           "smallest strength and subtract.")
def _check_rise(answer, table=None, column=None):
    import pandas as pd

    from .probes.steering import rise_by_group

    fixture = pd.DataFrame({"strength γ": [0.0] * 6 + [0.5] * 6 + [1.0] * 6,
                            "group": ["generalized"] * 3 + ["memorized"] * 3 + ["generalized"] * 3 + ["memorized"] * 3
                            + ["generalized"] * 3 + ["memorized"] * 3,
                            "prompt": list("abcdef") * 3,
                            "score": [0.2, 0.4, 0.3, 0.3, 0.3, 0.1, 0.5, 0.9, 0.6, 0.3, 0.35, 0.1,
                                      0.9, 1.3, 2.0, 0.35, 0.45, 0.1]})
    cases = [("a 2-group, 3-strength table", fixture, "score")]
    if table is not None:
        cases.append((f"the notebook's table, {column!r}", table, column))
    for case, tab, col in cases:
        got, want = answer(tab, col), rise_by_group(tab, col)
        if not isinstance(got, pd.Series):
            raise ExerciseFailed(f"on {case} the answer should be a pandas Series indexed by group, got "
                                 f"{type(got).__name__}")
        if set(got.index) != set(want.index):
            raise ExerciseFailed(f"on {case} the answer is indexed by {sorted(got.index)}, expected the groups")
        compare(got.loc[want.index].to_numpy(dtype=float), want.to_numpy(dtype=float), case)


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


# ---- 11 --------------------------------------------------------------------------------------------------------------

@_exercise("11.1", "how often training sees a duplicated pair",
           "A mix has `n_distinct` pairs seen once and `n_duplicated` pairs repeated `copies` times; training draws "
           "`steps` batches of `batch_size` rows uniformly from all its rows. Write `exposures(mix)`: how many times, in "
           "expectation, training sees one duplicated pair.",
           "First count the rows; each draw picks a given row with probability 1/rows, and a duplicated pair owns "
           "`copies` rows.")
def _check_exposures(answer, mixes=None):
    from .experiments.t2i_benchmark import Mix

    cases = [("Mix(100, 2, 50, 1000, 32)", Mix(100, 2, 50, 1000, 32)),
             ("Mix(3600, 4, 200, 8000, 128)", Mix(3600, 4, 200, 8000, 128)),
             ("Mix(10, 1, 1, 10, 1)", Mix(10, 1, 1, 10, 1))]
    cases += [(f"the notebook's mix {name}", mix) for name, mix in (mixes or {}).items()]
    for case, mix in cases:
        compare(scalar(answer(mix), case), mix.exposures, case, rtol=1e-9, atol=0)


@_exercise("11.2", "which mix copies (predict, then run)",
           "Predict first, in `my_guess`: in which mix do the duplicated captions' generations copy their training "
           "image most often? Then write `copied_shares(copied, labels)`: `copied` says per generation whether it copies a training "
           "image ($d_1/d_2<1/3$), `labels` is 1 for the duplicated captions' generations and 0 for the others; return "
           "the pair (share of copies among label 1, share among label 0). Run it on every mix.",
           "Index `copied` with the boolean masks `labels == 1` and `labels == 0` and take each mean.")
def _check_copied_shares(answer, runs=None):
    def reference(copied, labels):
        copied, labels = np.asarray(copied, dtype=float), np.asarray(labels)
        return np.array([copied[labels == 1].mean(), copied[labels == 0].mean()])

    copied = np.array([1, 1, 0, 1, 0, 0, 0, 1, 0, 0], dtype=bool)
    labels = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    cases = [("10 generations, 4 of duplicated captions", copied, labels)]
    cases += [(f"the notebook's mix {name}", np.asarray(groups.copied), np.asarray(groups.labels))
              for name, groups in (runs or {}).items()]
    for case, c, y in cases:
        got = _array(answer(c, y), case)
        compare(got.ravel(), reference(c, y), case, rtol=0, atol=1e-9)


def exercise_table() -> str:
    """Every exercise as a markdown table (id, lesson, title): the instructor's guide shows it, so it never goes stale."""
    rows = [f"| {ex.id} | [{ex.id[:2]}]({lesson}) | {ex.title} |" for ex in EXERCISES.values()
            for lesson in [_lesson_file(ex.id[:2])]]
    return "| exercise | lesson | what the learner does |\n|---|---|---|\n" + "\n".join(sorted(rows))


def _lesson_file(prefix: str) -> str:
    from .execute import find_notebooks

    found = find_notebooks([prefix])
    return found[0].name if found else f"{prefix}.ipynb"


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


def verify_exercise_cell(id: str, student_source: str, solution_source: str, namespace: dict) -> None:
    """Run a cell's student version in `namespace`: it must stop at its stub with NotImplementedError("Exercise
    {id}: ..."), as a learner's notebook does, and nowhere else; then run the solution on a copy of `namespace` (so
    nothing it defines reaches the cells after it): its check must pass. What `make test` runs in place of each
    exercise cell, so one execution of a notebook tests the student version and the solutions."""
    try:
        exec(compile(student_source, f"<exercise {id}, student version>", "exec"), namespace)
    except NotImplementedError as stub:
        if not str(stub).startswith(f"Exercise {id}:"):
            raise AssertionError(f"the student version of exercise {id} stopped at another stub: {stub}") from stub
    else:
        raise AssertionError(f"the student version of exercise {id} ran to its end: no stub stopped it")
    exec(compile(solution_source, f"<exercise {id}, solution>", "exec"), dict(namespace))


def student_check_source(source: str) -> str:
    """The code `make test` runs for a cell with a solution region (`verify_exercise_cell`); other cells as they are."""
    student, ids = stub_solutions(source)
    if not ids:
        return source
    return ("# make test: the student version must stop at its stub, then the solution must pass (replib.exercises)\n"
            "from replib import exercises as _exercises\n"
            f"_exercises.verify_exercise_cell({ids[0]!r}, {student!r}, {source!r}, globals())")


def student_check_notebook(path: Path) -> list[str]:
    """Rewrite notebook `path` in place for `make test`: every cell with a solution region runs its student version
    and then its solution (`student_check_source`). Returns the exercise ids, in order."""
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    ids = []
    for cell in nb.cells:
        if cell.cell_type == "code":
            ids += stub_solutions(cell.source)[1]
            cell.source = student_check_source(cell.source)
    nbformat.write(nb, str(path))
    return ids


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
