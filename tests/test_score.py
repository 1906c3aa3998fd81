"""The scoring command line: resumable (an interrupted run loses nothing and redoes nothing), seeded per prompt."""
import numpy as np
import pandas as pd
import pytest
import torch

from replib import score
from replib.models import sd14
from replib.probes import detection

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


# A folder as scraped from the web: good images of several modes and sizes (and a link to one), beside every kind of
# entry that cannot be read, each with a word its recorded reason must contain. Hidden files and other suffixes are
# not considered at all.
GOOD = ["deep.png", "gray.png", "link.png", "photo.JPG", "rgb.png", "rgba.png"]
BAD = {"bad.png": "not an image", "truncated.png": "truncated", "empty.png": "empty", "sub.png": "directory",
       "locked.png": "permission", "bomb.png": "too many pixels", "loop.png": "loop", "broken.png": "not found"}


@pytest.fixture(scope="module")
def web_folder(tmp_path_factory):
    from PIL import Image

    folder = tmp_path_factory.mktemp("web") / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)

    def noise(*shape):
        return (rng.random(shape) * 255).astype(np.uint8)

    Image.fromarray(noise(32, 32, 3)).save(folder / "rgb.png")
    Image.fromarray(noise(24, 40)).save(folder / "gray.png")  # L, not square
    Image.fromarray(noise(33, 33, 4)).save(folder / "rgba.png")  # RGBA
    Image.fromarray(noise(48, 48).astype(np.uint16) * 257).save(folder / "deep.png")  # I;16, the full 16-bit range
    ramp = np.broadcast_to(np.linspace(0, 255, 4000).astype(np.uint8), (3000, 4000))
    Image.fromarray(np.stack([ramp] * 3, -1)).save(folder / "photo.JPG")  # 4000 x 3000, an upper-case suffix
    (folder / "link.png").symlink_to("rgb.png")  # followed: scored as the file it names
    (folder / "bad.png").write_text("<html>404 not found</html>")
    data = (folder / "rgb.png").read_bytes()
    (folder / "truncated.png").write_bytes(data[: len(data) // 2])  # a download cut off half way
    (folder / "empty.png").write_bytes(b"")
    (folder / "sub.png").mkdir()
    (folder / "locked.png").write_bytes(data)  # made unreadable by the `unreadable` fixture
    Image.new("L", (5000, 5000)).save(folder / "bomb.png")  # above twice the limit `unreadable` sets
    (folder / "loop.png").symlink_to("loop.png")
    (folder / "broken.png").symlink_to("gone.png")
    (folder / ".hidden.png").write_text("not considered: hidden")
    (folder / "notes.txt").write_text("not considered: not an image suffix")
    return folder


@pytest.fixture
def unreadable(monkeypatch):
    """The two bad kinds that are simulated. Tests run as root, which reads even a chmod 000 file, so opening
    locked.png raises PermissionError through a patched PIL.Image.open, as it does for a user without the right.
    PIL's pixel limit is lowered to 4000 x 3000 (it refuses above twice the limit), so the 5000 x 5000 bomb.png is
    refused without writing the gigapixel file a real bomb would be, while the 4000 x 3000 photo is read."""
    import os
    from pathlib import Path

    from PIL import Image

    real_open = Image.open

    def open_(fp, *args, **kwargs):
        if isinstance(fp, (str, os.PathLike)) and Path(fp).name == "locked.png":
            raise PermissionError(13, "Permission denied", str(fp))
        return real_open(fp, *args, **kwargs)

    monkeypatch.setattr(Image, "open", open_)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 4000 * 3000)


def _reads(monkeypatch) -> list[str]:
    """The names of the files opened from now on (every read goes through `pipelines.read_image`)."""
    from pathlib import Path

    from replib.models import pipelines

    real, names = pipelines.read_image, []

    def read(path, *args, **kwargs):
        names.append(Path(path).name)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(pipelines, "read_image", read)
    return names


def _image_args(folder, out, *more):
    return ["--images", str(folder), "--out", str(out), "--mode", "standin", "--device", "cpu", "--batch-size", "4",
            *more]


def test_folder_audit_skips_every_unreadable_entry_with_its_reason(loaded, web_folder, unreadable, tmp_path,
                                                                   monkeypatch, capsys):
    """Every readable image is scored with the library's numbers; every unreadable entry is listed once with its
    reason and ends nothing (exit status 0) unless --strict; hidden files and other suffixes are not considered."""
    from replib.probes import detection

    monkeypatch.setattr(sd14, "load_or_standin", lambda *a, **k: loaded)
    out = tmp_path / "scores.csv"
    results = score.main(_image_args(web_folder, out))  # returns: exit status 0
    assert sorted(results["file"]) == sorted(GOOD) and np.isfinite(results["paper"]).all()
    direct = detection.paper_scores_from_images(loaded.pipe, [web_folder / f for f in results["file"]],
                                                seed=[score.file_seed(f) for f in results["file"]])
    np.testing.assert_allclose(results["paper"], direct, rtol=1e-5)
    skipped = score.read_skipped(out)
    assert score.skipped_path(out) == tmp_path / "scores.skipped.csv"
    assert sorted(skipped["file"]) == sorted(BAD)
    for name, reason in zip(skipped["file"], skipped["reason"]):
        assert BAD[name] in reason, (name, reason)
    assert f"6 scored, 8 skipped (see {tmp_path / 'scores.skipped.csv'})" in capsys.readouterr().out
    with pytest.raises(SystemExit) as stop:
        score.main(_image_args(web_folder, out, "--strict"))
    assert stop.value.code not in (0, None) and "8 of 14 files" in str(stop.value.code)
    clean = tmp_path / "clean"
    clean.mkdir()
    (clean / "rgb.png").symlink_to(web_folder / "rgb.png")
    assert len(score.main(_image_args(clean, tmp_path / "clean.csv", "--strict"))) == 1  # nothing skipped: status 0


def test_folder_audit_rerun_scores_nothing_twice_and_retries_only_changed_files(loaded, web_folder, unreadable,
                                                                                tmp_path, monkeypatch):
    """A rerun reads no file again: the scored ones are in the CSV, the known-bad ones in the skipped list. A bad file
    fixed in place (new size) or touched (new time) is read again; --retry-skipped reads every skipped one again."""
    import os
    import shutil

    from PIL import Image

    monkeypatch.setattr(sd14, "load_or_standin", lambda *a, **k: loaded)
    folder = tmp_path / "imgs"
    shutil.copytree(web_folder, folder, symlinks=True)
    out = tmp_path / "scores.csv"
    score.main(_image_args(folder, out))
    reads = _reads(monkeypatch)
    assert len(score.main(_image_args(folder, out))) == len(GOOD) and reads == []

    Image.new("RGB", (32, 32), (200, 30, 30)).save(folder / "bad.png")  # a new download over the bad one
    st = os.stat(folder / "empty.png")
    os.utime(folder / "empty.png", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched, still empty
    results = score.main(_image_args(folder, out))
    assert sorted(reads) == ["bad.png", "empty.png"]
    assert sorted(results["file"]) == sorted([*GOOD, "bad.png"]) and results["file"].is_unique
    assert sorted(score.read_skipped(out)["file"]) == sorted(set(BAD) - {"bad.png"})

    reads.clear()
    score.main(_image_args(folder, out))
    assert reads == []
    results = score.main(_image_args(folder, out, "--retry-skipped"))
    assert sorted(reads) == sorted(set(BAD) - {"bad.png"}) and len(results) == len(GOOD) + 1
    assert sorted(score.read_skipped(out)["file"]) == sorted(set(BAD) - {"bad.png"})


def test_folder_audit_interrupted_loses_nothing(loaded, web_folder, unreadable, tmp_path, monkeypatch):
    """Killed after its first batch, a run keeps that batch's rows and the skips it had found; the rerun ends where an
    uninterrupted run ends, with every file once."""
    from replib.probes import detection

    monkeypatch.setattr(sd14, "load_or_standin", lambda *a, **k: loaded)
    whole = score.main(_image_args(web_folder, tmp_path / "whole.csv", "--batch-size", "2"))
    real, calls = detection.paper_scores_from_images, []

    def stop_at_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(detection, "paper_scores_from_images", stop_at_second)
    cut = tmp_path / "cut.csv"
    with pytest.raises(KeyboardInterrupt):
        score.main(_image_args(web_folder, cut, "--batch-size", "2"))
    assert len(pd.read_csv(cut)) == 2  # the first batch was kept
    kept = set(score.read_skipped(cut)["file"])
    assert kept and kept < set(BAD)  # so were the skips found before the kill
    monkeypatch.setattr(detection, "paper_scores_from_images", real)
    resumed = score.main(_image_args(web_folder, cut, "--batch-size", "2"))
    assert resumed["file"].is_unique
    cols = ["file", "seed", "paper"]
    pd.testing.assert_frame_equal(resumed.sort_values("file")[cols].reset_index(drop=True),
                                  whole.sort_values("file")[cols].reset_index(drop=True), rtol=1e-5)
    assert sorted(score.read_skipped(cut)["file"]) == sorted(BAD)


def test_library_call_names_the_bad_file_and_the_reason(loaded, web_folder, unreadable, tmp_path):
    """`to_pixels` and `paper_scores_from_images` given paths raise one ImageReadError (an OSError) that names the
    bad file and says why, so a notebook user sees which file to remove; 16-bit greyscale is scaled, not clipped."""
    from PIL import Image

    from replib.models import pipelines
    from replib.probes import detection

    good = web_folder / "rgb.png"
    for name, reason in BAD.items():
        with pytest.raises(pipelines.ImageReadError, match=f"{name}.*{reason}") as err:
            pipelines.to_pixels([good, web_folder / name], 3, 16)
        assert isinstance(err.value, OSError) and err.value.path == str(web_folder / name) and reason in err.value.reason
    with pytest.raises(pipelines.ImageReadError, match="truncated.png.*truncated"):
        detection.paper_scores_from_images(loaded.pipe, [good, web_folder / "truncated.png"])
    deep = np.asarray(Image.open(web_folder / "deep.png"))
    Image.fromarray((deep // 257).astype(np.uint8)).save(tmp_path / "deep8.png")
    for channels in (1, 3):
        assert torch.equal(pipelines.to_pixels([web_folder / "deep.png"], channels, 16),
                           pipelines.to_pixels([tmp_path / "deep8.png"], channels, 16))


def test_prompt_scores_follow_the_authors_recipe_by_default(loaded, tmp_path, monkeypatch):
    """By default the paper's score is of the generated image as a saved PNG keeps it (8 bits), re-encoded with a
    seeded sample of the VAE posterior; `--from-latents` scores the sampler's latent. Each equals the library call it
    names, and the two differ (so the default is not the latent path under another name)."""
    from replib.models import pipelines

    seeds = [0, 1]
    gen = pipelines.generate(loaded.pipe, PROMPTS[:2], seeds, 2, 7.5, progress=False)
    images = detection.paper_scores_from_images(loaded.pipe, pipelines.to_8bit(gen.images), seed=seeds)
    latents = detection.paper_scores(loaded.pipe, gen.latents, seed=seeds)
    monkeypatch.setattr(sd14, "load_or_standin", lambda *a, **k: loaded)
    base = ["--prompts", str(tmp_path / "p.txt"), "--mode", "standin", "--steps", "2", "--device", "cpu"]
    (tmp_path / "p.txt").write_text("\n".join(PROMPTS[:2]) + "\n")
    default = score.main(base + ["--out", str(tmp_path / "d.csv")])
    shortcut = score.main(base + ["--out", str(tmp_path / "l.csv"), "--from-latents"])
    assert np.allclose(default["paper"], images, rtol=1e-4) and np.allclose(shortcut["paper"], latents, rtol=1e-4)
    assert not np.allclose(default["paper"], shortcut["paper"], rtol=1e-3)
    with pytest.raises(SystemExit):
        score.main(base + ["--out", str(tmp_path / "x.csv"), "--from-images"])  # the old flag is gone


def test_images_are_rounded_to_8_bits_and_encoded_with_a_seeded_posterior_sample(loaded):
    from replib.models import pipelines

    x = torch.rand(2, 3, 64, 64) * 2 - 1
    q = pipelines.to_8bit(x)
    levels = (q + 1) * 127.5
    assert torch.allclose(levels, levels.round(), atol=1e-4) and (q - x).abs().max() <= 1 / 127.5
    assert torch.equal(pipelines.to_8bit(q), q)
    pipe = loaded.pipe
    size = pipelines.pixel_shape(pipe)[1]
    x = torch.rand(3, 3, size, size) * 2 - 1
    mean = pipelines.encode(pipe, x)
    a, b = pipelines.encode(pipe, x, [5, 6, 7]), pipelines.encode(pipe, x, [5, 6, 7])
    assert torch.equal(a, b) and not torch.allclose(a, mean)  # seeded, and a sample rather than the mean
    assert torch.allclose(pipelines.encode(pipe, x[1:], [6, 7]), a[1:], atol=1e-5)  # per image, not per batch
    assert not torch.allclose(pipelines.encode(pipe, x, [8, 9, 10]), a)
    with pytest.raises(ValueError, match="encoder seeds"):
        pipelines.encode(pipe, x, [1])
    # the detector's three streams (generation, VAE sample, noise) never share a seed
    assert len({0, detection.detector_seed(0), detection.encoder_seed(0)}) == 3
