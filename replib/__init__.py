"""replib: the helper library behind the kit's notebooks (arXiv 2512.20963 and 2509.16499).

One module per idea: `data`, `dae` (the two-layer ReLU DAE), `training`, `theory`, `metrics`, `plotting`, `widgets`,
`checkpoints`, `files` (the cache folder, atomic writes), `params`, `execute` (runs the notebooks), `t2i_benchmark`
(notebook 06's detection benchmark), `collapse` (model collapse, notebook 10) and more. Heavy
libraries (diffusers, transformers) are imported only by the modules that need them.
"""
from .session import seed_everything, setup

__all__ = ["setup", "seed_everything"]
__version__ = "0.1.0"
