"""Fixtures of the sweep tests: one real local Ray instance for the whole session, on 2 CPUs.

Ray binds to 127.0.0.1 only. Drivers started as subprocesses (the kill-and-resume test) connect to
the same instance through `ray_address`, so the suite starts Ray once.
"""

from __future__ import annotations

import os

# Read by Ray when it is first imported: take 127.0.0.1 as the node address instead of looking up
# the machine's outward address.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

from pathlib import Path  # noqa: E402
from typing import Iterator  # noqa: E402

import pytest  # noqa: E402
from ray import cloudpickle  # noqa: E402  (Ray's own copy, the one that serializes trainables)

import fakes  # noqa: E402
import sweep_results  # noqa: E402,F401

# Ray workers cannot import modules from the tests folder, so the fake trainers travel by value.
cloudpickle.register_pickle_by_value(fakes)

SMALL_TASK = [
    "task.pool_size=600",
    "task.val_size=200",
    "task.test_size=200",
    "mts.meta_batch_size=50",
    "gsnr.draws=4",
    "gsnr.per_sample_batch=32",
    "gsnr.every_epochs=1",
    "sweep.progress_interval_s=5",
]


@pytest.fixture(scope="session")
def ray_address(task_cache: str) -> Iterator[str]:
    """Start Ray with 2 CPUs on 127.0.0.1 (after the task cache is set, so workers inherit it)."""
    import ray

    ray.init(
        num_cpus=2,
        include_dashboard=False,
        dashboard_host="127.0.0.1",
        _node_ip_address="127.0.0.1",
        configure_logging=False,
    )
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture()
def experiments(tmp_path: Path) -> Path:
    folder = tmp_path / "experiments"
    folder.mkdir()
    return folder
