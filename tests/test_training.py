import math

import pytest
import torch

from replib.data.digits import simplex_samples
from replib.models.dae import ReLUDAE
from replib.params import ParameterError
from replib.probes.metrics import generalization_failures, heldout_table
from replib.training.dae import (
    DAETraining,
    denoising_error,
    denoising_loss,
    penalty_lambda,
    train_dae,
)
from replib.training.loop import lr_factor


def _copy_init(bank: ReLUDAE, source: int = 0) -> ReLUDAE:
    with torch.no_grad():
        bank.W1.copy_(bank.W1[source : source + 1].expand_as(bank.W1))
        if bank.W2 is not None:
            bank.W2.copy_(bank.W2[source : source + 1].expand_as(bank.W2))
    return bank


# ---------------------------------------------------------------- the model
def test_forward_by_hand_and_shapes():
    model = ReLUDAE(dim=5, width=4, tied=False, n_models=3, seed=1)
    x = torch.randn(3, 7, 5, generator=torch.Generator().manual_seed(2))
    h = model.encode(x)
    assert h.shape == (3, 7, 4)
    assert (h >= 0).all() and (h == 0).any() and (h > 0).any()
    out = model(x)
    assert out.shape == (3, 7, 5)
    for m in range(3):
        for b in range(7):
            hid = torch.clamp(model.W1[m].T @ x[m, b], min=0)
            assert torch.allclose(model.encode(x)[m, b], hid, atol=1e-6)
            assert torch.allclose(out[m, b], model.W2[m] @ hid, atol=1e-5)


def test_tied_model_uses_w1_as_decoder():
    model = ReLUDAE(dim=4, width=3, tied=True, n_models=2)
    assert model.W2 is None and model.decoder is model.W1
    assert len(list(model.parameters())) == 1
    x = torch.randn(2, 5, 4)
    expected = torch.relu(x @ model.W1) @ model.W1.transpose(1, 2)
    assert torch.allclose(model(x), expected, atol=1e-6)


@pytest.mark.parametrize("tied", [True, False])
def test_select_matches_bank_slot(tied):
    bank = ReLUDAE(dim=6, width=5, tied=tied, n_models=3, seed=4)
    x = torch.randn(3, 8, 6, generator=torch.Generator().manual_seed(0))
    out = bank(x)
    for i in range(3):
        single = bank.select(i)
        assert single.n_models == 1 and single.tied == tied
        assert torch.allclose(single(x[i]), out[i], atol=1e-6)
        assert torch.allclose(single.encode(x[i]), bank.encode(x)[i], atol=1e-6)
    # select returns a copy
    single = bank.select(0)
    with torch.no_grad():
        single.W1.zero_()
    assert bank.W1[0].abs().sum() > 0


def test_two_dimensional_input():
    single = ReLUDAE(dim=3, width=2, n_models=1)
    x = torch.randn(4, 3)
    assert single(x).shape == (4, 3) and single.encode(x).shape == (4, 2)
    assert torch.allclose(single(x), single(x[None])[0])
    bank = ReLUDAE(dim=3, width=2, n_models=2)
    with pytest.raises(ValueError):
        bank(x)
    with pytest.raises(ValueError):
        bank.encode(x)


def test_init_seed_and_scale():
    a, b = ReLUDAE(8, 4, seed=3), ReLUDAE(8, 4, seed=3)
    assert torch.equal(a.W1, b.W1)
    assert not torch.equal(a.W1, ReLUDAE(8, 4, seed=4).W1)
    big = ReLUDAE(400, 50, n_models=2, seed=0)
    assert float(big.W1.detach().std()) == pytest.approx(1 / math.sqrt(400), rel=0.05)
    assert float(ReLUDAE(400, 50, init_scale=0.5).W1.detach().std()) == pytest.approx(0.5, rel=0.05)


# ---------------------------------------------------------------- settings
@pytest.mark.parametrize("field,value,text", [
    ("sigma", -1.0, ">= 0.0"),
    ("sigma", [0.1, -0.5], ">= 0.0"),
    ("weight_decay", -0.1, ">= 0.0"),
    ("optimizer", "foo", "'rmsprop'"),
    ("schedule", "bar", "'cosine-tail'"),
    ("steps", 0, ">= 1"),
    ("lr", 0.0, "> 0.0"),
    ("batch_size", 0, ">= 1"),
])
def test_dae_training_rejects_bad_values(field, value, text):
    with pytest.raises(ParameterError) as err:
        DAETraining(**{field: value})
    msg = str(err.value)
    assert field in msg and text in msg


def test_dae_training_per_model():
    cfg = DAETraining(sigma=[0.1, 0.2, 0.3], weight_decay=0.5)
    assert torch.allclose(cfg.per_model("sigma", 3), torch.tensor([0.1, 0.2, 0.3]))
    assert torch.allclose(cfg.per_model("weight_decay", 3), torch.full((3,), 0.5))
    with pytest.raises(ValueError):
        cfg.per_model("sigma", 2)


def test_penalty_lambda_convention():
    # d/dW (lambda ||W||^2) = 2 lambda W must equal the coupled decay term wd * W
    w = torch.randn(3, 2, requires_grad=True)
    wd = 0.3
    (penalty_lambda(wd) * w.pow(2).sum()).backward()
    assert torch.allclose(w.grad, wd * w.detach())


# ---------------------------------------------------------------- learning-rate schedule
def test_lr_factor_constant():
    assert all(lr_factor("constant", s, 90) == 1.0 for s in range(91))


def test_lr_factor_cosine():
    steps = 90
    f = [lr_factor("cosine", s, steps) for s in range(steps + 1)]
    assert f[0] == pytest.approx(1.0)
    assert f[steps // 2] == pytest.approx(0.5)
    assert f[-1] == pytest.approx(0.0, abs=1e-12)
    assert all(a > b for a, b in zip(f, f[1:]))


def test_lr_factor_cosine_tail():
    steps = 90
    f = [lr_factor("cosine-tail", s, steps) for s in range(steps + 1)]
    assert all(v == 1.0 for v in f[:60])  # the first two thirds
    assert all(a > b for a, b in zip(f[60:], f[61:]))
    assert f[75] == pytest.approx(0.5)
    assert f[-1] == pytest.approx(0.0, abs=1e-12)


# ---------------------------------------------------------------- training
def test_denoising_loss_without_noise_by_hand():
    model = ReLUDAE(dim=3, width=2, n_models=1)
    with torch.no_grad():
        model.W1.copy_(torch.tensor([[[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]]))
    x = torch.tensor([[[1.0, -2.0, 3.0], [2.0, 2.0, 0.0]]])  # f(x) = (relu(x1), relu(x2), 0)
    # errors: ||(1,0,0)-(1,-2,3)||^2 = 13, ||(2,2,0)-(2,2,0)||^2 = 0; weighted mean with weights 1, 3
    loss = denoising_loss(model, x, torch.tensor([[1.0, 3.0]]), 0.0)
    assert torch.allclose(loss, torch.tensor([13.0 / 4]))


def test_weight_decay_alone_shrinks_geometrically():
    # zero data and no noise: the loss gradient vanishes, so SGD with coupled decay wd gives W_T = (1 - lr wd)^T W_0
    bank = ReLUDAE(dim=4, width=3, tied=False, n_models=3, seed=0)
    w1, w2 = bank.W1.detach().clone(), bank.W2.detach().clone()
    wd, lr, steps = [0.0, 0.5, 2.0], 0.1, 5
    cfg = DAETraining(sigma=0.0, steps=steps, optimizer="sgd", lr=lr, weight_decay=wd)
    train_dae(bank, torch.zeros(3, 2, 4), cfg, progress=False)
    for m in range(3):
        factor = (1 - lr * wd[m]) ** steps
        assert torch.allclose(bank.W1[m], factor * w1[m], atol=1e-6)
        assert torch.allclose(bank.W2[m], factor * w2[m], atol=1e-6)


def test_bank_equals_separate_trainings_without_noise():
    # sigma = 0 removes the only coupling (the noise draw); sets of different sizes exercise the padding
    g = torch.Generator().manual_seed(0)
    sets = [torch.randn(3, 6, generator=g), torch.randn(5, 6, generator=g), torch.randn(2, 6, generator=g)]
    wd = [0.0, 0.01, 0.1]
    cfg = DAETraining(sigma=0.0, steps=25, optimizer="adam", lr=1e-2, weight_decay=wd)
    bank = ReLUDAE(6, 4, tied=True, n_models=3, seed=1)
    init = bank.W1.detach().clone()
    log = train_dae(bank, sets, cfg, progress=False, log_every=5)
    for m in range(3):
        single = ReLUDAE(6, 4, tied=True, n_models=1)
        with torch.no_grad():
            single.W1.copy_(init[m : m + 1])
        single_log = train_dae(single, sets[m], DAETraining(sigma=0.0, steps=25, optimizer="adam", lr=1e-2,
                                                            weight_decay=wd[m]), progress=False, log_every=5)
        assert torch.allclose(bank.W1[m], single.W1[0], atol=1e-5)
        assert log.final_loss[m] == pytest.approx(float(single_log.final_loss[0]), rel=1e-4)
    assert log.steps == [5, 10, 15, 20, 25]


def test_minibatches_draw_only_from_each_models_own_set():
    # model 0's set is a single sample: any minibatch of it equals that sample, so training equals full batch on it.
    # Drawing a padding row (zeros) would change the result.
    g = torch.Generator().manual_seed(0)
    one = torch.randn(1, 5, generator=g)
    other = torch.randn(6, 5, generator=g)
    kw = dict(sigma=0.0, steps=20, optimizer="sgd", lr=0.05, weight_decay=0.0)
    bank = ReLUDAE(5, 3, n_models=2, seed=2)
    init = bank.W1.detach().clone()
    train_dae(bank, [one, other], DAETraining(batch_size=4, **kw), progress=False)
    single = ReLUDAE(5, 3, n_models=1)
    with torch.no_grad():
        single.W1.copy_(init[:1])
    train_dae(single, one, DAETraining(**kw), progress=False)
    assert torch.allclose(bank.W1[0], single.W1[0], atol=1e-5)


def test_identical_models_stay_identical_and_weight_decay_separates_them():
    x = simplex_samples(4, 8, norm=1.0)
    kw = dict(sigma=0.0, steps=40, optimizer="rmsprop", lr=1e-2)
    same = _copy_init(ReLUDAE(8, 6, n_models=3, seed=0))
    train_dae(same, [x, x, x], DAETraining(weight_decay=0.01, **kw), progress=False)
    assert torch.allclose(same.W1[0], same.W1[1], atol=1e-6) and torch.allclose(same.W1[0], same.W1[2], atol=1e-6)

    diff = _copy_init(ReLUDAE(8, 6, n_models=3, seed=0))
    train_dae(diff, [x, x, x], DAETraining(weight_decay=[0.0, 0.01, 1.0], **kw), progress=False)
    for i, j in ((0, 1), (1, 2), (0, 2)):
        assert (diff.W1[i] - diff.W1[j]).abs().max() > 1e-3


def test_large_weight_decay_gives_smaller_weights():
    x = simplex_samples(5, 10, norm=1.0)
    bank = _copy_init(ReLUDAE(10, 8, n_models=2, seed=0))
    train_dae(bank, [x, x], DAETraining(sigma=0.2, steps=200, lr=1e-2, weight_decay=[0.0, 2.0]), progress=False)
    norms = bank.W1.detach().pow(2).sum((1, 2))
    assert norms[1] < 0.5 * norms[0]


def test_zero_data_model_loss_decreases():
    x = simplex_samples(3, 6, norm=1.0)
    bank = ReLUDAE(6, 5, n_models=2, seed=0)
    log = train_dae(bank, [x, torch.zeros(3, 6)], DAETraining(sigma=0.5, steps=100, lr=1e-2, weight_decay=0.0),
                    progress=False, log_every=1)
    assert len(log.loss) == 100 and log.loss[0].shape == (2,)
    assert log.final_loss[1] < 0.5 * log.loss[0][1]


def test_loss_decreases_on_simplex_samples():
    x = simplex_samples(5, 20, norm=1.0, seed=1)
    model = ReLUDAE(20, 10, seed=0)
    log = train_dae(model, x, DAETraining(sigma=0.1, steps=300, lr=3e-3, weight_decay=1e-3), progress=False,
                    log_every=10)
    assert log.steps[0] == 10 and log.steps[-1] == 300
    first, last = float(log.loss[0][0]), float(log.final_loss[0])
    assert last < 0.5 * first
    # memorizing direction: each sample's reconstruction points along the sample
    with torch.no_grad():
        out = model(x)
    cos = torch.nn.functional.cosine_similarity(out, x, dim=1)
    assert (cos > 0.5).all()


def test_train_dae_rejects_wrong_number_of_sets():
    bank = ReLUDAE(4, 2, n_models=2)
    with pytest.raises(ValueError):
        train_dae(bank, [torch.zeros(2, 4)] * 3, DAETraining(steps=1), progress=False)


def test_heldout_denoising_tells_generalizing_from_memorizing_and_untrained():
    """The generalization check of notebooks 02, 04 and 05 on a DAE that learns a rank-3 Gaussian from 2,000 samples:
    it passes; a DAE trained on 3 samples fails the held-out / train ratio; an untrained one fails the baseline."""
    basis = torch.randn(3, 20, generator=torch.Generator().manual_seed(0)) / 3
    def draw(n, seed):
        return torch.randn(n, 3, generator=torch.Generator().manual_seed(seed)) @ basis
    big, few, held = draw(2000, 1), draw(3, 2), draw(500, 3)
    cfg = DAETraining(sigma=0.3, steps=1500, optimizer="adam", lr=1e-2, batch_size=128, seed=0)
    gen, mem, untrained = ReLUDAE(20, 16), ReLUDAE(20, 16), ReLUDAE(20, 16)
    train_dae(gen, big, cfg, progress=False)
    train_dae(mem, few, cfg, progress=False)
    own = {"generalizing": big[:500], "memorizing": few[torch.arange(500) % 3], "untrained": big[:500]}
    models = {"generalizing": gen, "memorizing": mem, "untrained": untrained}
    table = heldout_table({k: (denoising_error(m, own[k], 0.3), denoising_error(m, held, 0.3)) for k, m in models.items()},
                          baseline=held.pow(2).sum(1).mean().item(), max_ratio=1.2, max_share=0.5)
    assert list(table["generalizes"]) == [True, False, False]
    assert not generalization_failures(table.loc["generalizing"], 1.2, 0.5)
    assert table.loc["memorizing", "held-out / train"] > 5
    assert ["training error" in f for f in generalization_failures(table.loc["memorizing"], 1.2, 0.5)] == [True]
    assert table.loc["untrained", "held-out / baseline"] > 0.5
    assert generalization_failures(table.loc["untrained"], 1.2, 0.5)
    assert denoising_error(gen, held, 0.3, seed=4) == denoising_error(gen, held, 0.3, seed=4)
    assert denoising_error(gen, held, 0.0) == pytest.approx(float((gen(held) - held).pow(2).sum(1).mean()), rel=1e-6)
