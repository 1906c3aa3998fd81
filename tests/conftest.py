"""Shared test settings: one torch thread, static widgets, and a throw-away checkpoint cache."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)
os.environ["REPLIB_STATIC"] = "1"

_HERE = Path(__file__).resolve().parent
_ENV = pytest.MonkeyPatch()


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: slower integration tests (still run by default)")


@pytest.fixture(scope="session", autouse=True)
def _replib_env(tmp_path_factory):
    """Point the checkpoint cache at a session tmp dir so unit tests never touch data/cache/ (restored afterwards)."""
    _ENV.setenv("REPLIB_STATIC", "1")
    _ENV.setenv("REPLIB_CACHE", str(tmp_path_factory.mktemp("replib-cache")))
    yield
    _ENV.undo()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item, nextitem):
    # `make test` runs these tests and then the smoke notebooks (nbval) in the same session: give the notebooks'
    # kernels the environment the Makefile set (its REPLIB_CACHE), not the unit tests' tmp cache. Undone after the
    # test's own fixtures (their monkeypatches) are torn down.
    result = yield
    if nextitem is None or _HERE not in Path(nextitem.path).resolve().parents:
        _ENV.undo()
    return result
