"""Bundled and user tasks, built by name from a `TaskConfig`.

    from mts.config import TaskConfig
    from mts.tasks import build_task

    task = build_task(TaskConfig(name="mnist1d_shift", seed=0))

`build_task` validates the config, then returns the task from the disk cache or builds and caches
it. Generated tasks are cached under `TaskConfig.cache_dir`, else `$MTSWEEP_CACHE`, else
~/.cache/mtsweep. The `file` task reads the user's file on every call and is not cached.

A new task is one module in this package: subclass `BaseTaskBuilder`, decorate it with
`register_task` and import the module below.
"""

from __future__ import annotations

import logging
import time

from mts.config import TaskConfig
from mts.tasks import cache
from mts.tasks.base import SPLIT_NAMES, Split, Task, TaskBuilder
from mts.tasks.registry import (
    BaseTaskBuilder,
    get_builder,
    register_task,
    registered_names,
    validate_task_config,
)

# Imported for their registration side effect; the order sets the order of TASK_NAMES.
from mts.tasks import mnist1d_shift  # noqa: E402,F401  isort: skip
from mts.tasks import digits_synth  # noqa: E402,F401  isort: skip
from mts.tasks import file  # noqa: E402,F401  isort: skip

logger = logging.getLogger(__name__)

TASK_NAMES: tuple[str, ...] = registered_names()

__all__ = [
    "SPLIT_NAMES",
    "TASK_NAMES",
    "BaseTaskBuilder",
    "Split",
    "Task",
    "TaskBuilder",
    "build_task",
    "get_builder",
    "register_task",
    "validate_task_config",
]


def build_task(config: TaskConfig) -> Task:
    """Validate `config`, then load its task from the cache or build and cache it.

    Raises ConfigError for an invalid config (every problem in one message) and TaskError for
    data that cannot be read or used.
    """
    builder = validate_task_config(config)
    if not builder.cacheable:
        return _build_timed(builder, config)

    constants = builder.generation_constants()
    key_json = cache.cache_key_json(config, builder.cache_fields, constants)
    path = cache.cache_path(config, builder.cache_fields, constants)
    task = cache.load_task(path, key_json)
    if task is not None:
        logger.debug("Loaded task %s from cache %s", config.name, path)
        return task

    task = _build_timed(builder, config)
    try:
        cache.save_task(task, path, key_json)
    except OSError as err:
        # The cache only saves time, so a folder that cannot be written does not stop the run.
        logger.warning(
            "task.cache_dir=%r cannot be written (%s), so task %s is not cached; set task.cache_dir or "
            "$MTSWEEP_CACHE to a writable folder", str(path.parent), err.strerror or err, config.name,
        )
        return task
    logger.info("Cached task %s at %s", config.name, path)
    return task


def _build_timed(builder: BaseTaskBuilder, config: TaskConfig) -> Task:
    start = time.perf_counter()
    task = builder(config)
    logger.info(
        "Built task %s (seed %d): %d pool, %d meta, %d val, %d test samples in %.1f s",
        config.name,
        config.seed,
        len(task.pool),
        len(task.meta),
        len(task.val),
        len(task.test),
        time.perf_counter() - start,
    )
    return task
