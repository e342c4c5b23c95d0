"""The on-disk cache of generated tasks: one `.npz` file per config, loaded without pickle.

The file name is a hash of the format version, of every config field that changes the arrays and
of the builder's generation constants (generator arguments, quality tags, default mixture), so a
changed config or an edited generator never reads another entry. The config itself is stored in the file
too and compared on load, and an unreadable or mismatching file is rebuilt instead of trusted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from mts.config import TaskConfig
from mts.tasks.base import SPLIT_NAMES, Split, Task

logger = logging.getLogger(__name__)

# Bump when the layout of the file or the generation of any task changes, so that old entries
# are no longer found.
FORMAT_VERSION = 2

_SPLIT_FIELDS = ("x", "y", "source")


def resolve_cache_dir(config: TaskConfig) -> Path:
    """Return the cache folder: `config.cache_dir`, else `$MTSWEEP_CACHE`, else ~/.cache/mtsweep."""
    if config.cache_dir:
        return Path(config.cache_dir).expanduser()
    from_env = os.environ.get("MTSWEEP_CACHE")
    if from_env:
        return Path(from_env).expanduser()
    return Path("~/.cache/mtsweep").expanduser()


def cache_key_json(config: TaskConfig, fields: tuple[str, ...], constants: dict[str, object] | None = None) -> str:
    """Return the canonical JSON of the format version, the given config fields and the builder's constants."""
    values: dict[str, object] = {"format_version": FORMAT_VERSION, "generation": constants or {}}
    for field in fields:
        value = getattr(config, field)
        # Mixture fractions are relative weights, so 1 and 1.0 must hash alike.
        if field == "mixture":
            value = {key: float(fraction) for key, fraction in sorted(value.items())}
        values[field] = value
    return json.dumps(values, sort_keys=True, separators=(",", ":"))


def cache_path(config: TaskConfig, fields: tuple[str, ...], constants: dict[str, object] | None = None) -> Path:
    """Return the cache file of `config`, named by the task and a hash of its cache key."""
    digest = hashlib.sha256(cache_key_json(config, fields, constants).encode("utf-8")).hexdigest()[:20]
    return resolve_cache_dir(config) / f"{config.name}-{digest}.npz"


def save_task(task: Task, path: Path, key_json: str) -> None:
    """Write `task` to `path` atomically: a temporary file in the same folder, then os.replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = _task_to_arrays(task, key_json)
    descriptor, temporary = tempfile.mkstemp(prefix=path.stem, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            np.savez(handle, **arrays)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def load_task(path: Path, key_json: str) -> Task | None:
    """Return the cached task at `path`, or None when it is missing, unreadable or stale."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        logger.warning("Cache file %s is unreadable (%s); rebuilding the task", path, err)
        return None
    try:
        stored_key = str(arrays["cache_key"])
        if stored_key != key_json:
            logger.warning("Cache file %s belongs to another config; rebuilding the task", path)
            return None
        return _arrays_to_task(arrays)
    except (KeyError, ValueError) as err:
        logger.warning("Cache file %s is incomplete (%s); rebuilding the task", path, err)
        return None


def _task_to_arrays(task: Task, key_json: str) -> dict[str, np.ndarray]:
    arrays = {
        "cache_key": np.array(key_json),
        "name": np.array(task.name),
        "num_classes": np.array(task.num_classes, dtype=np.int64),
        "sources": np.array(task.sources, dtype=str),
    }
    for split_name in SPLIT_NAMES:
        split = task.split(split_name)
        for field in _SPLIT_FIELDS:
            arrays[f"{split_name}_{field}"] = getattr(split, field)
    if task.quality is not None:
        arrays["quality"] = task.quality
    for split_name, embedding in (task.embeddings or {}).items():
        arrays[f"embedding_{split_name}"] = embedding
    return arrays


def _arrays_to_task(arrays: dict[str, np.ndarray]) -> Task:
    splits = {
        split_name: Split(*(arrays[f"{split_name}_{field}"] for field in _SPLIT_FIELDS))
        for split_name in SPLIT_NAMES
    }
    embeddings = {
        key.removeprefix("embedding_"): value
        for key, value in arrays.items()
        if key.startswith("embedding_")
    }
    return Task(
        name=str(arrays["name"]),
        num_classes=int(arrays["num_classes"]),
        sources=tuple(str(source) for source in arrays["sources"]),
        quality=arrays.get("quality"),
        embeddings=embeddings or None,
        **splits,
    )
