"""Shared test settings: one torch thread, static widgets, a throw-away checkpoint cache for the unit tests, and how
the notebooks are spread over pytest-xdist workers when `make test` runs them in parallel."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)
os.environ["REPLIB_STATIC"] = "1"

# Notebooks that load what an earlier one trained or built run on the same worker, after it, from the same cache:
# 07 steers the model 06 trains and 11 measures it again, 09 reuses the SD1.4 stand-in 08 writes.
_RUNS_AFTER = {"07": "06", "11": "06", "09": "08"}


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: slower integration tests (still run by default)")


@pytest.fixture(scope="session")
def _unit_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("replib-cache")


@pytest.fixture(autouse=True)
def _replib_env(_unit_cache, monkeypatch):
    """Unit tests never touch data/cache/ or the notebooks' cache: REPLIB_CACHE points at a session tmp folder for the
    length of each test. Notebook kernels, started by nbval in the same process, see the environment `make` set."""
    monkeypatch.setenv("REPLIB_STATIC", "1")
    monkeypatch.setenv("REPLIB_CACHE", str(_unit_cache))


def _is_notebook(path: str | Path) -> bool:
    return Path(path).suffix == ".ipynb"


def pytest_collection_modifyitems(items):
    """Notebooks first (in number order), then the unit tests: under pytest-xdist the long notebooks start at once
    and the short unit-test modules fill the gaps at the end."""
    items.sort(key=lambda item: not _is_notebook(item.path))  # stable: each notebook's cells stay in order


@pytest.hookimpl(optionalhook=True)  # a plain `pytest` without pytest-xdist ignores it
def pytest_xdist_make_scheduler(config, log):
    """pytest-xdist's scope scheduler with one unit of work per notebook (its cells run in order, in one kernel),
    joined by the notebooks that reuse its results (_RUNS_AFTER), and one per unit-test module (module fixtures are
    built once). Units are handed out in collection order, so a free worker always takes the next one.
    test_cache_notebooks.py joins notebook 05's unit: it repacks the checkpoints 01 and 05 have just trained."""
    from xdist.scheduler import LoadScopeScheduling

    class NotebookScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            if Path(path).name == "test_cache_notebooks.py":
                return "notebook-05"
            if _is_notebook(path):
                prefix = Path(path).name[:2]
                return f"notebook-{_RUNS_AFTER.get(prefix, prefix)}"
            return path

    config.option.loadscopereorder = False  # keep the collection order (the default sorts units by test count)
    return NotebookScheduling(config, log)


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """An empty checkpoint cache of this test's own (REPLIB_CACHE points at it)."""
    path = tmp_path / "cache"
    monkeypatch.setenv("REPLIB_CACHE", str(path))
    path.mkdir()
    return path


@pytest.fixture
def write_pngs():
    """`write_pngs(images, folder, prefix="image") -> paths`: pixels (n, C, H, W) in [-1, 1] as 8-bit PNG files
    prefix-000.png, ... (what a user's folder of generated images looks like to `replib.score --images`)."""
    import numpy as np
    from PIL import Image

    def write(images: torch.Tensor, folder, prefix: str = "image") -> list[Path]:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for i, img in enumerate(images):
            a = ((img.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy().astype(np.uint8)
            path = folder / f"{prefix}-{i:03d}.png"
            Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a).save(path)
            paths.append(path)
        return paths
    return write
