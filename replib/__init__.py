"""replib: the helper library behind the kit's notebooks (arXiv 2512.20963 and 2509.16499).

The folders are the roles; dependencies point one way: `models` import neither `data` nor `training`; `training`
and `probes` import `models` and `data`; `experiments` compose all of them; the infrastructure at the top level
imports none of them (plotting reads `probes.metrics`, `speed` and `score` are tools built on the rest). Each module,
with the notebooks that introduce it (later notebooks reuse it):

data/          digits (01-05, 10) · glyphs (06, 07) · prompts (08, 09) · example_prompts (08, 09, stand-in only)
models/        dae (01-03) · toy (04) · unets (05, 06, 07, 10, 11) · text (06, 07, 11) · pipelines (06-09, 11)
               sd14 (08, 09)
training/      loop: the one loop, `fit` (01-07, 10) · dae (01-03) · diffusion (04-07, 10, 11)
probes/        hooks (05-09) · representations (05, 06) · detection (05, 06, 08, 10, 11) · steering (07, 09)
               metrics (01-08) · theory (01, 02, 04) · clipscore (09)
experiments/   t2i_benchmark (06, 07, 11) · collapse (10) · sd14_run (08, 09)
infrastructure session: `setup`, devices (every notebook) · params (every parameters cell) · plotting (every
               notebook) · widgets (02, 05, 07, 09, 10) · files and checkpoints (the cache, atomic writes; every
               training) · hub (08, 09) · execute (runs the notebooks; 07 and 11 read 06's parameters) · book ·
               speed (02, benchmarks/) · score (08, and `python -m replib.score`) · cache (checkpoint packs:
               `python -m replib.cache`) · machine (the CPU's name, for the record) · course (each lesson's
               measured time, prose rendered from the run; every notebook) · exercises (the learners' exercises and
               their checks)

Heavy libraries (diffusers, transformers) are imported only by the modules that need them.
"""
from .session import seed_everything, setup

__all__ = ["setup", "seed_everything"]
__version__ = "0.2.0"
