"""Shared test settings: one torch thread, static widgets, and a throw-away checkpoint cache."""
from __future__ import annotations

import os

import pytest
import torch

torch.set_num_threads(1)
os.environ["REPLIB_STATIC"] = "1"


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: slower integration tests (still run by default)")


@pytest.fixture(scope="session", autouse=True)
def _replib_env(tmp_path_factory):
    """Point the checkpoint cache at a session tmp dir (restored afterwards) so tests never touch data/cache/."""
    mp = pytest.MonkeyPatch()
    mp.setenv("REPLIB_STATIC", "1")
    mp.setenv("REPLIB_CACHE", str(tmp_path_factory.mktemp("replib-cache")))
    yield
    mp.undo()
