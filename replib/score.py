"""Score a file of prompts with memorization detectors, resumably, on one or many GPUs.

    python -m replib.score --set memorized --limit 100 --out results/mem.csv            # SD1.4 (or --mode standin)
    python -m replib.score --prompts my_prompts.txt --detectors paper wen --out r.csv
    python -m replib.score --images my_folder/ --out images.csv                         # prompt-free, any images
    accelerate launch -m replib.score --set nonmemorized --out results/nmem.csv         # prompts sharded over GPUs
    torchrun --standalone --nproc_per_node 2 -m replib.score --set memorized --out m.csv  # the same (CPUs: gloo)

Each prompt i gets seed `--seed + i` for its generation; the detector draws its noise for that seed from its own
stream (`detection.detector_seed`), never the generation's starting noise (the same image and score
whichever process or batch it lands in), one generation through `pipelines.generate`, and a row per prompt: the
paper's score (`detection.paper_scores`), Wen et al.'s first-step
and all-step guidance norms (recorded during that same generation), seconds, and the model it came from. Rows are
appended after every batch, so an interrupted run loses at most one batch; a new run skips every prompt index
already in the output (all shards). The paper's score is computed as the authors compute it: from the decoded image,
rounded to 8 bits as a saved PNG is, brought to the model's resolution and encoded with a seeded sample of the VAE
posterior (`detection.paper_scores_from_images`): one VAE encoder pass and one UNet pass per image.
`--from-latents` scores the sampler's latent instead (one UNet pass, no encoder; a shortcut the authors do not take:
it skips what saving and re-encoding change).

`--images DIR` scores every image file in a folder with the paper's detector alone (no prompt, no generation): a
row per file, with a seed derived from the file name so a file keeps its score whatever else is in the folder;
files already in the output are skipped. A file that cannot be read (not an image, truncated, empty, a directory,
no permission, too many pixels, a broken link) is skipped, not fatal: it is listed with its reason in
`OUT.skipped.csv`, and a rerun tries it again only once its size or time changes (or with `--retry-skipped`);
`--strict` makes any skip end the run with status 1.

Under `accelerate launch` each process takes its share of the remaining prompts
(`PartialState.split_between_processes`) and writes its own shard `OUT.rankK.csv`; `read_results` merges them.
"""
from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import pandas as pd
import torch

from .models.sd14 import DETECTOR_LAYER, DETECTOR_TIMESTEP

DETECTORS = ("paper", "wen")
FIELDS = ["index", "prompt", "seed", "paper", "wen_first", "wen_mean", "seconds", "model", "standin"]
IMAGE_FIELDS = ["file", "seed", "paper", "seconds", "model", "standin"]
SKIPPED_FIELDS = ["file", "reason", "size", "mtime_ns"]
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")  # compared in lower case; hidden files are left out


def read_prompts(path: str | Path) -> list[str]:
    """One prompt per line of a .txt file, or the `caption` field of each line of a .jsonl file."""
    from .data.prompts import read_prompt_file

    prompts = read_prompt_file(path)
    if not prompts:
        raise ValueError(f"{path} holds no prompts")
    return prompts


def shard_paths(out: Path) -> list[Path]:
    return [p for p in [out, *sorted(out.parent.glob(f"{out.stem}.rank*{out.suffix}"))] if p.exists()]


def results_path(name: str, loaded, **settings) -> Path:
    """Where a notebook keeps one prompt set's scores: a CSV per (set, model, dtype, settings) in the checkpoint cache,
    so a rerun, or a run with more prompts, resumes where the last one stopped instead of starting over."""
    from .checkpoints import settings_key
    from .files import cache_dir

    key = settings_key({"model": loaded.source, "standin": loaded.standin, "dtype": str(loaded.dtype), **settings})
    return cache_dir() / "sd14-scores" / f"{name}-{key}.csv"


def read_results(out: str | Path) -> pd.DataFrame:
    """All rows written for `out` (the file and its per-process shards), one per prompt index, sorted."""
    frames = [pd.read_csv(p) for p in shard_paths(Path(out))]
    if not frames:
        return pd.DataFrame(columns=FIELDS)
    return pd.concat(frames).drop_duplicates("index", keep="first").sort_values("index").reset_index(drop=True)


def _append(path: Path, rows: list[dict], fields: list[str] = FIELDS) -> None:
    new = not path.exists()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        if new:
            writer.writeheader()
        writer.writerows(rows)
        f.flush()


def score_batch(pipe, prompts: list[str], seeds: list[int], detectors: tuple[str, ...], steps: int,
                guidance_scale: float, layer: str, timestep: int, from_latents: bool = False) -> list[dict]:
    """Generate `prompts` with `seeds` and score each generation; one dict per prompt (scores missing = NaN).
    The paper's score is of the decoded image after an 8-bit round trip (`pipelines.to_8bit`), re-encoded by the
    pipeline; from_latents: of the sampler's latent instead."""
    from .models import pipelines
    from .probes import detection

    t0 = time.perf_counter()
    with detection.record_guidance(pipe) as rec:
        gen = pipelines.generate(pipe, prompts, seeds, steps, guidance_scale, batch_size=len(prompts), progress=False)
    first, mean = rec.scores(steps) if guidance_scale > 1 else ([float("nan")] * len(prompts),) * 2
    if "paper" not in detectors:
        paper = [float("nan")] * len(prompts)
    elif from_latents:
        paper = detection.paper_scores(pipe, gen.latents, layer, timestep, seed=list(seeds))
    else:
        paper = detection.paper_scores_from_images(pipe, pipelines.to_8bit(gen.images), layer, timestep,
                                                   seed=list(seeds))
    seconds = (time.perf_counter() - t0) / len(prompts)
    wen = "wen" in detectors
    return [{"prompt": p, "seed": s, "paper": float(paper[i]), "wen_first": float(first[i]) if wen else float("nan"),
             "wen_mean": float(mean[i]) if wen else float("nan"), "seconds": seconds}
            for i, (p, s) in enumerate(zip(prompts, seeds))]


def run(prompts: list[str], out: str | Path, loaded, detectors=DETECTORS, steps: int = 50, guidance_scale: float = 7.5,
        seed: int = 0, batch_size: int = 4, layer: str = DETECTOR_LAYER, timestep: int = DETECTOR_TIMESTEP,
        progress: bool = True, from_latents: bool = False) -> pd.DataFrame:
    """Score every prompt not yet in `out`; returns all results so far. Works alone or under `accelerate launch`."""
    from accelerate import PartialState

    from .widgets import progress as bar

    out = Path(out)
    state = PartialState()
    done = set(read_results(out)["index"].astype(int))
    todo = [i for i in range(len(prompts)) if i not in done]
    # Every process must split the same list: none may write a row before all have read what was done (else a late
    # reader sees another's first rows, splits a shorter list, and a prompt falls between the shares).
    state.wait_for_everyone()
    target = out if state.num_processes == 1 else out.with_name(f"{out.stem}.rank{state.process_index}{out.suffix}")
    with state.split_between_processes(todo) as mine:
        batches = [mine[k:k + batch_size] for k in range(0, len(mine), batch_size)]
        for batch in bar(batches, desc=f"scoring (process {state.process_index})", disable=not progress):
            rows = score_batch(loaded.pipe, [prompts[i] for i in batch], [seed + i for i in batch], tuple(detectors),
                               steps, guidance_scale, layer, timestep, from_latents)
            _append(target, [{"index": i, **r, "model": loaded.source, "standin": loaded.standin}
                             for i, r in zip(batch, rows)])
    state.wait_for_everyone()
    return read_results(out)


def image_files(folder: str | Path) -> list[Path]:
    """The entries directly in `folder` named like images (IMAGE_SUFFIXES, any case: a.PNG counts), sorted by name;
    hidden names (".…", such as macOS's "._a.png") are left out. Nothing is opened here and nothing recursed into, so a
    symbolic-link loop cannot hang the listing; a directory, a broken link or a text file named .png is listed and
    `score_images` skips it with its reason."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder of images")
    files = sorted(p for p in folder.iterdir() if not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"{folder} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
    return files


def file_seed(name: str, seed: int = 0) -> int:
    """The detector's noise seed for a file: `seed` plus a hash of its name (stable across runs and folders)."""
    import zlib

    return seed + zlib.crc32(name.encode()) % 2**31


def skipped_path(out: str | Path) -> Path:
    """Where `score_images` lists the files it could not read: OUT.skipped.csv beside the scores OUT.csv."""
    out = Path(out)
    return out.with_name(f"{out.stem}.skipped.csv")


def read_skipped(out: str | Path) -> pd.DataFrame:
    """The files skipped while scoring into `out`: file, reason, and the size and time they had then."""
    path = skipped_path(out)
    return pd.read_csv(path) if path.exists() else pd.DataFrame(columns=SKIPPED_FIELDS)


def file_stamp(path: Path) -> tuple[int, int]:
    """(size, modification time in ns) of the file `path` names, or of the link itself when it cannot be followed:
    a bad file fixed or replaced in place gets a new stamp, so it is retried."""
    for stat in (path.stat, path.lstat):
        try:
            st = stat()
            return st.st_size, st.st_mtime_ns
        except OSError:
            pass
    return -1, -1


def score_images(files: list[Path], out: str | Path, loaded, seed: int = 0, batch_size: int = 8,
                 layer: str = DETECTOR_LAYER, timestep: int = DETECTOR_TIMESTEP, progress: bool = True,
                 retry_skipped: bool = False) -> pd.DataFrame:
    """The paper's prompt-free score of every image file not yet in `out`; returns every row so far. A file that cannot
    be read (`pipelines.ImageReadError`) is skipped and listed with its reason in `skipped_path(out)`, and a rerun
    leaves it alone until its size or time changes (or `retry_skipped`). Scores are appended after every batch and the
    skipped list rewritten (atomically) at every change, so an interrupted run loses nothing and redoes nothing."""
    from .files import atomic_path
    from .models import pipelines
    from .probes import detection
    from .widgets import progress as bar

    out = Path(out)
    done = set(pd.read_csv(out)["file"]) if out.exists() else set()
    skipped = {row["file"]: row for row in read_skipped(out).to_dict("records")}

    def known_bad(f: Path) -> bool:
        row = skipped.get(f.name)
        return row is not None and not retry_skipped and (row["size"], row["mtime_ns"]) == file_stamp(f)

    def save_skipped() -> None:
        with atomic_path(skipped_path(out)) as tmp:
            pd.DataFrame(list(skipped.values()), columns=SKIPPED_FIELDS).to_csv(tmp, index=False)

    def flush(batch: list[tuple[Path, torch.Tensor]]) -> None:
        t0 = time.perf_counter()
        seeds = [file_seed(f.name, seed) for f, _ in batch]
        pixels = torch.cat([x for _, x in batch])
        scores = detection.paper_scores_from_images(loaded.pipe, pixels, layer, timestep, seed=seeds)
        seconds = (time.perf_counter() - t0) / len(batch)
        _append(out, [{"file": f.name, "seed": s, "paper": float(v), "seconds": seconds, "model": loaded.source,
                       "standin": loaded.standin} for (f, _), s, v in zip(batch, seeds, scores)], IMAGE_FIELDS)
        if any(skipped.pop(f.name, None) is not None for f, _ in batch):  # fixed since a run skipped it
            save_skipped()

    channels, size = pipelines.pixel_shape(loaded.pipe)
    todo = [f for f in files if f.name not in done and not known_bad(f)]
    batch = []
    for f in bar(todo, desc="scoring images", disable=not progress):
        try:
            batch.append((f, pipelines.to_pixels([f], channels, size)))  # read once, at the model's resolution
        except pipelines.ImageReadError as err:
            nbytes, mtime = file_stamp(f)
            skipped[f.name] = {"file": f.name, "reason": err.reason, "size": nbytes, "mtime_ns": mtime}
            save_skipped()
        if len(batch) == batch_size:
            flush(batch)
            batch = []
    if batch:
        flush(batch)
    return pd.read_csv(out) if out.exists() else pd.DataFrame(columns=IMAGE_FIELDS)


def main(argv: list[str] | None = None) -> pd.DataFrame:
    from accelerate import PartialState

    from .models.sd14 import DEVICES, DTYPES, MODES, choose_device, load_or_standin

    ap = argparse.ArgumentParser(prog="python -m replib.score", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompts", help="a .txt (one prompt per line) or .jsonl (field caption) file")
    src.add_argument("--set", choices=("memorized", "nonmemorized"), help="a public prompt set (replib.data.prompts)")
    src.add_argument("--images", help="a folder of images to score with the paper's detector (no prompts)")
    ap.add_argument("--out", required=True, help="CSV to append to (resumes: prompt indices already there are skipped)")
    ap.add_argument("--detectors", nargs="+", default=list(DETECTORS), choices=DETECTORS)
    ap.add_argument("--mode", default="auto", choices=MODES)
    ap.add_argument("--path", help="a local SD1.4 folder (default: $REPLIB_SD14, else the Hugging Face cache)")
    ap.add_argument("--device", default="auto", choices=DEVICES)
    ap.add_argument("--dtype", default="auto", choices=DTYPES)
    ap.add_argument("--limit", type=int, help="score only the first LIMIT prompts")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--guidance", type=float, default=7.5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--layer", default=DETECTOR_LAYER)
    ap.add_argument("--timestep", type=int, default=DETECTOR_TIMESTEP)
    ap.add_argument("--from-latents", action="store_true",
                    help="score the sampler's latent (one UNet pass) instead of the saved image re-encoded by the VAE "
                         "(the paper's recipe and the default: one VAE encoder pass more)")
    ap.add_argument("--strict", action="store_true",
                    help="with --images: exit with status 1 when any file was skipped (default: 0, and a list)")
    ap.add_argument("--retry-skipped", action="store_true",
                    help="with --images: read again the files an earlier run skipped, even if they have not changed")
    args = ap.parse_args(argv)
    if args.images:
        try:
            files = image_files(args.images)[: args.limit or None]
        except (FileNotFoundError, ValueError) as err:
            ap.error(str(err))
        loaded = load_or_standin(args.mode, args.path, args.device, args.dtype)
        if loaded.standin:
            print("STAND-IN MODE: small random weights with SD1.4's shape; the scores are NOT meaningful.")
        results = score_images(files, args.out, loaded, args.seed, args.batch_size, args.layer, args.timestep,
                               retry_skipped=args.retry_skipped)
        names = {f.name for f in files}
        scored = int(results["file"].isin(names).sum())
        skipped = int(read_skipped(args.out)["file"].isin(names).sum())
        see = f" (see {skipped_path(args.out)})" if skipped else ""
        print(f"{scored} scored, {skipped} skipped{see}; scores in {args.out} (the paper's detector; no prompts)")
        if args.strict and skipped:
            raise SystemExit(f"--strict: {skipped} of {len(files)} files could not be read{see}")
        return results
    if args.prompts:
        prompts = read_prompts(args.prompts)
    else:
        from .data.prompts import load_prompt_set

        prompts = load_prompt_set(args.set).prompts
    prompts = prompts[: args.limit] if args.limit else prompts
    # Under `accelerate launch` / `torchrun` the processes join one group here: GPUs over NCCL, CPU processes over
    # gloo (accelerate only forms a CPU group when asked with cpu=True).
    state = PartialState(cpu=choose_device(args.device, args.dtype)[0] == "cpu")
    loaded = load_or_standin(args.mode, args.path, args.device, args.dtype)
    if loaded.standin and state.is_main_process:
        print("STAND-IN MODE: small random weights with SD1.4's shape; the scores are NOT meaningful.")
    loaded.pipe.to(state.device)
    results = run(prompts, args.out, loaded, args.detectors, args.steps, args.guidance, args.seed, args.batch_size,
                  args.layer, args.timestep, from_latents=args.from_latents)
    print(f"{len(results)} of {len(prompts)} prompts scored in {args.out}")
    return results


if __name__ == "__main__":
    main()
