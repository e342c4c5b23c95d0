"""The on-disk cache of offline feature arrays, keyed like the task cache.

Offline groups (the warm-up classifier, the position columns) are deterministic functions of the
task config, the model config, a few feature settings and the seed. Their arrays are stored as one
`.npz` per key under `<task cache folder>/features/`, loaded without pickle and written atomically.
The stored key is compared on load, and an unreadable or mismatching file is recomputed. The
`file` task is not cached, because its file can change under the same name, and neither are
results computed from task embeddings.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from mts.features.base import FeatureContext

logger = logging.getLogger(__name__)

# Bump when an offline computation or its stored arrays change, so old entries are not found.
FORMAT_VERSION = 1


def cached_arrays(
    context: FeatureContext, name: str, settings: dict[str, Any], compute: Callable[[], dict[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """Return the arrays `compute()` gives for `context` and `settings`, from the disk cache if present."""
    path, key = _location(context, name, settings)
    if path is not None:
        arrays = _load(path, key)
        if arrays is not None:
            logger.debug("Loaded offline %s features from %s", name, path)
            return arrays
    arrays = compute()
    if path is not None:
        try:
            _save(arrays, path, key)
        except OSError as err:
            logger.warning(
                "The feature cache %s cannot be written (%s), so the offline %s features are not cached; "
                "set task.cache_dir or $MTSWEEP_CACHE to a writable folder", path.parent, err.strerror or err, name,
            )
    return arrays


def _location(context: FeatureContext, name: str, settings: dict[str, Any]) -> tuple[Path | None, str]:
    from mts.tasks import get_builder
    from mts.tasks.cache import resolve_cache_dir

    config = context.config
    task_fields = {field: value for field, value in dataclasses.asdict(config.task).items() if field != "cache_dir"}
    key = json.dumps(
        {
            "format_version": FORMAT_VERSION,
            "name": name,
            "task": task_fields,
            "model": dataclasses.asdict(config.model),
            "seed": config.seed,
            "settings": settings,
        },
        sort_keys=True,
    )
    if not get_builder(config.task.name).cacheable:
        return None, key
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:20]
    return resolve_cache_dir(config.task) / "features" / f"{name}-{config.task.name}-{digest}.npz", key


def _load(path: Path, key: str) -> dict[str, np.ndarray] | None:
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["cache_key"]) != key:
                logger.warning("Feature cache file %s belongs to another config; computing again", path)
                return None
            return {name: data[name] for name in data.files if name != "cache_key"}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as err:
        logger.warning("Feature cache file %s is unreadable (%s); computing again", path, err)
        return None


def _save(arrays: dict[str, np.ndarray], path: Path, key: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=path.stem, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            np.savez(handle, cache_key=np.array(key), **arrays)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    logger.debug("Cached offline features at %s", path)
