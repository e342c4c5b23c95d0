"""Shared fixtures: a private task cache per test session and single-threaded torch."""

from __future__ import annotations

import os

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def task_cache(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Build tasks into a fresh cache folder, so tests never depend on a user's cache."""
    folder = str(tmp_path_factory.mktemp("task_cache"))
    os.environ["MTSWEEP_CACHE"] = folder
    return folder


@pytest.fixture(scope="session", autouse=True)
def single_thread() -> None:
    # On 2 cores, two torch threads next to another busy process run many times slower.
    torch.set_num_threads(1)
