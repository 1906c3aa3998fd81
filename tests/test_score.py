"""The scoring command line: resumable (an interrupted run loses nothing and redoes nothing), seeded per prompt."""
import numpy as np
import pandas as pd
import pytest

from replib import score
from replib.models import sd14

PROMPTS = ["a photo of a cat", "an old man", "a red car", "a bowl of soup", "a castle at night"]


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    folder = sd14.build_standin(tmp_path_factory.mktemp("sd14") / "standin", sample_size=8)
    return sd14.load_sd14(folder, device="cpu")


def test_interrupted_run_resumes_without_redoing(loaded, tmp_path, monkeypatch):
    whole = score.run(PROMPTS, tmp_path / "whole.csv", loaded, steps=2, batch_size=2, progress=False)
    assert list(whole["index"]) == list(range(5)) and whole["standin"].all()
    assert np.isfinite(whole[["paper", "wen_first", "wen_mean"]].to_numpy(dtype=float)).all()

    real, calls = score.score_batch, []

    def stop_after_one(*args, **kwargs):
        calls.append(args[1])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(score, "score_batch", stop_after_one)
    with pytest.raises(KeyboardInterrupt):
        score.run(PROMPTS, tmp_path / "cut.csv", loaded, steps=2, batch_size=2, progress=False)
    assert len(score.read_results(tmp_path / "cut.csv")) == 2  # the first batch was kept
    monkeypatch.setattr(score, "score_batch", real)
    resumed = score.run(PROMPTS, tmp_path / "cut.csv", loaded, steps=2, batch_size=2, progress=False)
    assert len(pd.read_csv(tmp_path / "cut.csv")) == 5, "no prompt is scored twice"
    cols = ["index", "prompt", "seed", "paper", "wen_first", "wen_mean"]
    pd.testing.assert_frame_equal(resumed[cols], whole[cols], rtol=1e-4)


def test_cli_reads_a_prompt_file_and_skips_done_prompts(loaded, tmp_path, monkeypatch):
    (tmp_path / "p.txt").write_text("\n".join(PROMPTS[:3]) + "\n\n")
    monkeypatch.setattr(sd14, "load_or_standin", lambda *a, **k: loaded)
    out = tmp_path / "r.csv"
    args = ["--prompts", str(tmp_path / "p.txt"), "--out", str(out), "--mode", "standin", "--steps", "2",
            "--limit", "2", "--device", "cpu"]
    assert len(score.main(args)) == 2
    assert len(score.main(args[:-4] + ["--device", "cpu"])) == 3
    assert len(pd.read_csv(out)) == 3
    (tmp_path / "e.txt").write_text("\n")
    with pytest.raises(ValueError, match="no prompts"):
        score.read_prompts(tmp_path / "e.txt")


def test_two_processes_share_the_prompts_and_agree_with_one(loaded, tmp_path):
    """The CLI under `torchrun` (what `accelerate launch --multi_gpu` starts): two CPU processes join a gloo group,
    each scores its share into its own shard, and the merged rows equal a single-process run."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    (tmp_path / "p.txt").write_text("\n".join(PROMPTS) + "\n")
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "replib.score", "--prompts",
           str(tmp_path / "p.txt"), "--out", str(tmp_path / "two.csv"), "--path", loaded.source, "--steps", "2",
           "--batch-size", "1", "--device", "cpu"]
    done = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.glob("two*.csv")) == ["two.rank0.csv", "two.rank1.csv"]
    assert all(len(pd.read_csv(p)) < len(PROMPTS) for p in tmp_path.glob("two.rank*.csv")), "the prompts are shared"
    both = score.read_results(tmp_path / "two.csv")
    one = score.run(PROMPTS, tmp_path / "one.csv", loaded, steps=2, batch_size=1, progress=False)
    cols = ["index", "prompt", "seed", "paper", "wen_first", "wen_mean"]
    pd.testing.assert_frame_equal(both[cols], one[cols], rtol=1e-4)


def test_cli_scores_a_folder_of_images_prompt_free_and_resumes(loaded, tmp_path, monkeypatch, write_pngs):
    import torch

    from replib.models import pipelines
    from replib.probes import detection

    monkeypatch.setattr(sd14, "load_or_standin", lambda *a, **k: loaded)
    size = pipelines.pixel_shape(loaded.pipe)[1]
    images = torch.rand(5, 3, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    folder = tmp_path / "imgs"
    files = write_pngs(images[:3], folder)
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "images.csv"
    args = ["--images", str(folder), "--out", str(out), "--mode", "standin", "--device", "cpu", "--batch-size", "2"]
    first = score.main(args)
    assert list(first["file"]) == [f.name for f in files] and np.isfinite(first["paper"]).all()
    # the same numbers as the library call, with the per-file seeds
    direct = detection.paper_scores_from_images(loaded.pipe, files, seed=[score.file_seed(f.name) for f in files])
    np.testing.assert_allclose(first["paper"], direct, rtol=1e-5)
    # two more files: only they are scored, and the first three keep their rows
    write_pngs(images[3:], folder, prefix="more")
    second = score.main(args)
    assert len(second) == 5 and list(second["file"][:3]) == list(first["file"])
    np.testing.assert_allclose(second["paper"][:3], first["paper"])
    with pytest.raises(ValueError, match="no image files"):
        score.image_files(tmp_path)
