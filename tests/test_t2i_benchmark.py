"""Notebook 06's benchmark plumbing on an untrained glyph pipeline (fast: a few sampler steps): the groups, every
detector on the same generations, the caption-wise calibration split, the crisp-image control and the mix table."""
import numpy as np
import pandas as pd
import pytest
import torch

from replib.data import glyphs
from replib.experiments import t2i_benchmark as bench
from replib.params import ParameterError
from replib.probes import detection

LAYER = "up_blocks.0.resnets.1.nonlinearity"


@pytest.fixture(scope="module")
def setup():
    from replib.models.text import check_tokenizer, clip_tokenizer
    from replib.models.unets import as_pipeline
    from replib.training.diffusion import T2ITraining, build_model

    torch.manual_seed(0)
    pipe = as_pipeline(build_model(T2ITraining()), check_tokenizer(clip_tokenizer()))
    distinct = glyphs.make_glyph_set(24, 16, seed=0)
    is_dup = np.zeros(len(distinct), dtype=bool)
    is_dup[:2] = True
    groups = bench.generate_groups(pipe, distinct, is_dup, seeds_per_prompt=3, n_negatives=8, steps=4,
                                   guidance=3.0, seed=0)
    return pipe, distinct, groups


def test_groups_hold_each_duplicated_caption_with_its_seeds_then_the_others(setup):
    _, distinct, groups = setup
    assert groups.labels.tolist() == [1] * 6 + [0] * 8
    assert groups.rows.tolist() == [0, 1, 0, 1, 0, 1, *range(2, 10)]
    assert groups.prompts == [distinct.captions[i] for i in groups.rows]
    assert groups.seeds == list(range(1000, 1014))
    assert groups.gen.images.shape == (14, 3, 16, 16) and groups.wen_all.shape == (14,)
    table = groups.copy_table()
    assert table["generations"].to_dict() == {"memorized": 6, "other": 8}
    assert table["copies its training image"].max() == 0  # an untrained model copies nothing


def test_the_steps_notebook06_writes_out_are_generate_groups_and_crisp_controls(setup):
    pipe, distinct, groups = setup
    rows, labels = bench.prompt_groups(np.arange(len(distinct)) < 2, 3, 8)
    prompts = [distinct.captions[i] for i in rows]
    seeds = bench.generation_seeds(prompts, 0)
    gen, wen_first, wen_all = bench.generate_recording_guidance(pipe, prompts, seeds, 4, 3.0)
    assert rows.tolist() == groups.rows.tolist() and labels.tolist() == groups.labels.tolist()
    assert seeds == groups.seeds
    np.testing.assert_array_equal(gen.latents, groups.gen.latents)
    np.testing.assert_array_equal(wen_first, groups.wen_first)
    np.testing.assert_array_equal(wen_all, groups.wen_all)
    scorers = bench.control_scorers(pipe, LAYER, 10, "max", 0)
    table = bench.control_table(scorers, groups, bench.crisp_sets(groups, distinct, 5, 0))
    pd.testing.assert_frame_equal(table, bench.crisp_controls(pipe, groups, distinct, 5, LAYER, 10, "max", 0))


def test_too_many_negatives_is_named(setup):
    pipe, distinct, _ = setup
    with pytest.raises(ParameterError, match="n_negatives"):
        bench.generate_groups(pipe, distinct, np.arange(24) < 2, 1, 23, 2, 3.0, 0)


def test_every_detector_scores_the_same_generations(setup):
    pipe, distinct, groups = setup
    results = bench.compare_detectors(pipe, groups, distinct.images, LAYER, 10, "max", 0, wen_generations=2)
    assert list(results) == ["paper (std, empty prompt)", "Wen et al., first step", "Wen et al., first step, 2 generations",
                             "Wen et al., all steps", "nearest neighbour (1 - d1/d2)"]
    assert [r["unet_calls"] for r in results.values()] == [1, 2, 4, 2 * 4, 0]
    one, two = results["Wen et al., first step"]["scores"], results["Wen et al., first step, 2 generations"]["scores"]
    second = detection.wen_first_step_scores(pipe, groups.prompts, [s + detection.WEN_SEED_STRIDE for s in groups.seeds], 4)
    np.testing.assert_allclose(two, (one + second) / 2, rtol=1e-5)
    assert not np.allclose(one, two)
    table = detection.detector_table(results, groups.labels)
    assert table.shape[0] == 5 and table["AUROC"].between(0, 1).all()


def test_compare_detectors_refuses_a_recording_that_does_not_match(setup):
    pipe, distinct, groups = setup
    wrong = bench.Groups(**{**groups.__dict__, "wen_first": groups.wen_first + 1})
    with pytest.raises(RuntimeError, match="first step"):
        bench.compare_detectors(pipe, wrong, distinct.images, LAYER, 10, "max", 0, wen_generations=1)


def test_calibration_halves_split_by_caption(setup):
    _, _, groups = setup
    calib = bench.caption_halves(groups, seed=0)
    assert not set(groups.rows[calib]) & set(groups.rows[~calib])
    for half in (calib, ~calib):
        assert set(groups.labels[half]) == {0, 1}
    assert np.array_equal(calib, bench.caption_halves(groups, seed=0))


def test_calibrated_layer_is_chosen_on_one_half_and_tested_on_the_other(setup):
    pipe, _, groups = setup
    layers = detection.resnet_activation_layers(pipe.unet)[:3]
    scores = bench.layer_scores(pipe, groups, layers, 10, "max", 0)
    assert list(scores) == layers and all(s.shape == groups.labels.shape for s in scores.values())
    out = bench.calibrated_layer(groups, scores, layers[0], 0)
    assert out["layer"] in layers
    assert out["test generations"] == int((~bench.caption_halves(groups, 0)).sum())
    low, high = out["test interval"]
    assert low <= out["test AUROC"] <= high


def test_control_summary_flags_only_what_is_above_the_one_percent_threshold():
    labels = np.r_[np.ones(10), np.zeros(200)]
    scores = np.r_[np.full(10, 5.0), np.linspace(0, 1, 200)]
    quiet = bench.control_summary(scores, labels, np.linspace(0, 0.9, 50))
    assert quiet == {"control flagged": 0.0, "memorized flagged": 1.0, "AUROC memorized vs control": 1.0}
    sharp = bench.control_summary(scores, labels, np.full(50, 5.0))  # a detector that flags every crisp image
    assert sharp["control flagged"] == 1.0 and sharp["AUROC memorized vs control"] == 0.5


def test_unseen_glyphs_have_captions_never_trained_on():
    seen = glyphs.make_glyph_set(300, 16, seed=0).captions
    control = glyphs.unseen(50, 16, seen, seed=7)
    assert len(control) == 50 and not set(control.captions) & set(seen)
    with pytest.raises(ParameterError, match="parameter n="):
        glyphs.unseen(0, 16, seen, seed=7)


def test_mix_row_counts_exposures_per_duplicated_pair(setup):
    _, _, groups = setup
    table = pd.DataFrame({"AUROC": [0.9]}, index=["paper (std, empty prompt)"])
    row = bench.mix_row(bench.Mix(1800, 8, 25, 16_000, 128), groups, table, unconditional=0.25)
    assert row["duplicated share of rows"] == 0.1 and row["exposures / duplicated pair"] == 25_600
    assert row["share of rows / duplicated pair"] == 0.0125 and row["empty prompt copies a duplicated pair"] == 0.25
    assert row["exposures / pair seen once"] == 1_024
    assert row["AUROC paper (std, empty prompt)"] == 0.9 and row["memorized captions copied"] == 0


def test_mix_parameter_is_checked_and_named():
    web = bench.Mix.from_parameter("WEB_MIX", {"n_distinct": 1800, "n_duplicated": 8, "copies": 25, "steps": 10,
                                               "batch_size": 128}, max_share=0.1)
    assert (web.rows, web.share) == (2000, 0.1)
    distinct, train, is_dup = bench.Mix(30, 2, 5, 1).glyphs(16, seed=0)
    assert (len(distinct), len(train), int(is_dup.sum())) == (32, 40, 2)
    assert train.captions.count(distinct.captions[0]) == 5
    with pytest.raises(ParameterError, match="WEB_MIX.*at most 10%"):
        bench.Mix.from_parameter("WEB_MIX", {"n_distinct": 100, "n_duplicated": 8, "copies": 25, "steps": 10,
                                             "batch_size": 1}, max_share=0.1)
    with pytest.raises(ParameterError, match="WEB_MIX.*keys"):
        bench.Mix.from_parameter("WEB_MIX", {"n_distinct": 100}, max_share=0.1)
    with pytest.raises(ParameterError, match=r"WEB_MIX\['copies'\]"):
        bench.Mix.from_parameter("WEB_MIX", {"n_distinct": 100, "n_duplicated": 1, "copies": 1.5, "steps": 10,
                                             "batch_size": 1})


def test_run_composes_every_step(setup):
    pipe, distinct, groups = setup
    out = bench.run(pipe, distinct, np.arange(len(distinct)) < 2, seeds_per_prompt=3, n_negatives=8, steps=4,
                    guidance=3.0, layer=LAYER, timestep=10, pool="max", seed=0, wen_generations=1, n_control=5,
                    n_unconditional=4)
    np.testing.assert_array_equal(out.groups.gen.latents, groups.gen.latents)
    assert list(out.table.index) == list(out.results) and len(out.results) == 4
    assert out.controls.shape == (4, 4)
    assert set(out.control.index) == {"AUROC memorized vs other", "control flagged", "memorized flagged",
                                      "AUROC memorized vs control"}
    assert out.calibrated["layer"] in detection.resnet_activation_layers(pipe.unet)
    assert out.unconditional == 0.0  # an untrained model draws no training image


def test_unconditional_copies_counts_generations_that_copy_a_duplicated_pair(setup, monkeypatch):
    from replib.models import pipelines

    pipe, distinct, _ = setup
    is_dup = np.arange(len(distinct)) < 2
    assert bench.unconditional_copies(pipe, distinct, is_dup, 3, steps=2, seed=0) == 0.0  # untrained: noise
    # a model that draws training images back: rows 0, 1 (duplicated), 5 (seen once) and one new glyph
    drawn = torch.cat([distinct.images[[0, 1, 5]], glyphs.make_glyph_set(1, 16, seed=99).images])
    calls = []

    def fake_generate(_pipe, prompts, seeds, steps, guidance_scale):
        calls.append((prompts, seeds, guidance_scale))
        return pipelines.Generations(drawn, drawn, prompts, 0.0)

    monkeypatch.setattr(pipelines, "generate", fake_generate)
    assert bench.unconditional_copies(pipe, distinct, is_dup, 4, steps=2, seed=1) == 0.5
    assert calls == [([""] * 4, [5001, 5002, 5003, 5004], 1.0)]  # the empty prompt, no guidance, seeds of its own


def test_notebook07_reads_notebook06s_model_settings():
    from replib.execute import notebook_parameters

    for profile in ("full", "quick"):
        p06 = notebook_parameters("06", profile)
        for reader in ("07", "11"):  # 07 steers 06's model of its profile, 11 measures it again
            assert notebook_parameters(reader, profile)["MODEL_PROFILE"] == profile
        assert p06["N_DISTINCT"] == (1_000 if profile == "full" else 100)
    with pytest.raises(ParameterError, match="profile"):
        notebook_parameters("06", "fast")


def _fake(copied_memorized: float, copied_others: float, auroc: float, n: int = 100):
    """A benchmark whose generations copy at the given rates and whose paper's detector has the given AUROC."""
    from types import SimpleNamespace

    labels = np.r_[np.ones(n, int), np.zeros(n, int)]
    copied = np.r_[np.arange(n) < copied_memorized * n, np.arange(n) < copied_others * n]
    groups = SimpleNamespace(labels=labels, copied=copied)
    return SimpleNamespace(groups=groups, table=pd.DataFrame({"AUROC": [auroc]}, index=[bench.PAPER_DETECTOR]))


@pytest.mark.parametrize("rates, case", [((0.9, 0.0, 0.97), "holds"), ((0.9, 0.0, 0.90), "does not hold"),
                                         ((0.3, 0.0, 0.99), "not memorized"), ((0.9, 0.5, 0.99), "others memorized too")])
def test_verdict_tests_the_claim_only_when_there_is_something_to_detect(rates, case):
    mix = bench.Mix(7_200, 8, 100, 16_000, 128)
    got, text = bench.verdict(mix, _fake(*rates), min_copied=0.6, min_auroc=0.95)
    assert got == case
    assert (f"{mix.exposures_once:,.0f} times" if case == "others memorized too" else f"{mix.share:.0%}") in text


def test_verdict_of_an_untrained_model_is_not_memorized_whatever_its_auroc(setup):
    # the assert "holds" in notebook 06 fails for an untrained model: it copies nothing, even with a perfect detector
    from types import SimpleNamespace

    _, _, groups = setup
    perfect = SimpleNamespace(groups=groups, table=pd.DataFrame({"AUROC": [1.0]}, index=[bench.PAPER_DETECTOR]))
    assert bench.verdict(bench.Mix(24, 2, 10, 100), perfect, 0.6, 0.95)[0] == "not memorized"
