"""The GPU check: what a CUDA GPU changes, in one table, in under 10 minutes on one GPU.

    .venv/bin/python benchmarks/gpu.py            # on a machine with a CUDA GPU (and the CUDA build of torch)

1. The SD1.4 stand-in (SD1.4's architecture, random weights) in fp16 on the GPU and in fp32 on the CPU: seconds per
   prompt through `replib.score` (generation, Wen et al.'s score, the paper's detector), the same prompts and seeds.
2. The training notebooks (01-07, 10) at their quick profile with DEVICE="cuda", and the same notebooks on the CPU
   (one torch thread each, run side by side on the CPU cores while the GPU runs), seconds per notebook.

On a machine without a CUDA GPU it says so and exits 0: there is nothing to measure. The README's GPU table comes from
this script's output.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd
import torch

TRAINING_NOTEBOOKS = [["01"], ["02"], ["03"], ["04"], ["05"], ["06", "07"], ["10"]]  # a group shares one cache
PROMPTS = ["a photo of a cat", "an astronaut riding a horse", "a bowl of fruit on a table", "an old man reading",
           "a red car in the rain", "a castle on a hill", "a dog on the beach", "a city at night"]


def no_gpu_reason() -> str | None:
    """Why this machine cannot run the GPU check, or None when it can."""
    if torch.cuda.is_available():
        return None
    build = f"torch {torch.__version__}, " + ("a CUDA build, but no GPU or driver answers" if torch.version.cuda
                                             else "a CPU-only build")
    return f"No CUDA GPU is present on this machine ({build}): nothing to measure."


def standin_rows(device: str, dtype: str, prompts: list[str], steps: int = 50, folder: Path | None = None) -> dict:
    """Seconds per prompt for the stand-in through `score.run` (all detectors), on `device` in `dtype`."""
    from replib import score
    from replib.models import sd14

    with tempfile.TemporaryDirectory() as tmp:
        folder = folder or sd14.build_standin(Path(tmp) / "standin")
        loaded = sd14.load_sd14(folder, device=device, dtype=dtype, allow_download=False)
        score.run(prompts[:1], Path(tmp) / "warmup.csv", loaded, steps=2, progress=False)  # kernels, allocator
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        table = score.run(prompts, Path(tmp) / "scores.csv", loaded, steps=steps, progress=False)
        if device == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
    assert len(table) == len(prompts) and table["paper"].notna().all(), "the stand-in's scores are incomplete"
    return {"what": f"SD1.4 stand-in through replib.score, {steps} DDIM steps, {dtype}",
            "unit": "s per prompt", device: seconds / len(prompts)}


def _run_group(group: list[str], device: str, out: str) -> dict[str, float]:
    """One group of notebooks at the quick profile on `device`, with its own fresh cache (a worker process)."""
    from replib import execute

    os.environ["REPLIB_CACHE"] = str(Path(out) / "cache")
    os.environ["REPLIB_THREADS"] = "1"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return execute.run("quick", Path(out) / "notebooks", selection=group, overrides={"DEVICE": device})


def notebook_rows(groups: list[list[str]], workdir: Path, cpu_workers: int) -> list[dict]:
    """Every group on the CPU (in parallel worker processes) while the GPU runs them one after the other."""
    with ProcessPoolExecutor(max_workers=cpu_workers) as pool:
        cpu = [pool.submit(_run_group, g, "cpu", str(workdir / f"cpu-{'-'.join(g)}")) for g in groups]
        gpu: dict[str, float] = {}
        for g in groups:
            gpu.update(_run_group(g, "cuda", str(workdir / f"cuda-{'-'.join(g)}")))
        cpu_times = {name: s for future in cpu for name, s in future.result().items()}
    return [{"what": f"notebook {name}, quick profile", "unit": "s", "cuda": gpu[name], "cpu": cpu_times.get(name)}
            for name in gpu]


def main(argv: list[str] | None = None) -> pd.DataFrame | None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=8, help="stand-in prompts per device (default 8)")
    ap.add_argument("--notebooks", nargs="*", default=None,
                    help="groups of notebooks to time, e.g. 01 05 06+07 (default: every training notebook)")
    args = ap.parse_args(argv)
    reason = no_gpu_reason()
    if reason:
        print(reason + " Run this script on a machine with a CUDA GPU.")
        return None
    groups = TRAINING_NOTEBOOKS if args.notebooks is None else [g.split("+") for g in args.notebooks]
    prompts = (PROMPTS * (args.prompts // len(PROMPTS) + 1))[:args.prompts]
    print(f"GPU: {torch.cuda.get_device_name(0)}; torch {torch.__version__}; CPU cores: {os.cpu_count()}", flush=True)
    cuda = standin_rows("cuda", "float16", prompts)
    cpu = standin_rows("cpu", "float32", prompts[:2])
    rows = [{**cuda, **cpu}]
    with tempfile.TemporaryDirectory() as tmp:
        rows += notebook_rows(groups, Path(tmp), cpu_workers=max(1, min(len(groups), (os.cpu_count() or 2) - 1)))
    table = pd.DataFrame(rows).set_index("what")
    table["speed-up"] = table["cpu"] / table["cuda"]
    with pd.option_context("display.width", 160, "display.max_columns", 10):
        print(table.round(2).to_string())
    return table


if __name__ == "__main__":
    main()
