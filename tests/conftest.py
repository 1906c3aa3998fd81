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
# 07 steers the model 06 trains, 09 reuses the SD1.4 stand-in 08 writes.
_RUNS_AFTER = {"07": "06", "09": "08"}


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


def _is_notebook(item) -> bool:
    return Path(item.path).suffix == ".ipynb"


def pytest_collection_modifyitems(config, items):
    """Under `--dist loadgroup`: every notebook is one unit of work (its cells run in order in one kernel), joined by
    the notebooks that reuse its results (_RUNS_AFTER); a unit-test module is one unit too, so its module fixtures are
    built once. Notebooks are queued first, so the long ones start at once and the unit tests fill the gaps."""
    if not getattr(config.option, "loadgroup", False):  # what xdist's workers read: their own `dist` is "no"
        return
    for item in items:
        if _is_notebook(item):
            prefix = Path(item.path).name[:2]
            group = f"notebook-{_RUNS_AFTER.get(prefix, prefix)}"
        else:
            group = item.nodeid.split("::")[0]
        item.add_marker(pytest.mark.xdist_group(group))
    items.sort(key=lambda item: not _is_notebook(item))  # stable: notebooks (in number order), then unit tests
