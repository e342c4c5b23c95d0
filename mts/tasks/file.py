"""`file`: the user's own data, read from an `.npz` or a Parquet file without pickle.

Columns (arrays in an `.npz`, columns in a Parquet table), one row per sample:

- `x`: (n, d) float features; in Parquet a list column whose lists all have length d;
- `y`: (n,) integer labels >= 0; the task has `max(y) + 1` classes;
- `split`: (n,) strings, each one of pool, meta, val, test;
- `quality` (optional): (n,) integers, 1 faithful or 0 harmful. Only pool rows are read, so
  other rows may hold any integer, or null in Parquet;
- `source` (optional): (n,) strings naming each sample's origin (a generator, or "real").
  Without it, pool rows get the source "pool" and the other splits "real".

The file is read on every call and never cached, so an edited file takes effect at once. Save
string arrays with a fixed-width string dtype (`np.array(names, dtype=str)`): an object array
would need pickle to load, which is never enabled.
"""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path
from typing import ClassVar

import numpy as np

from mts.config import TaskConfig
from mts.errors import TaskError
from mts.tasks import _sampling
from mts.tasks.base import SPLIT_NAMES, Task
from mts.tasks.registry import BaseTaskBuilder, register_task

logger = logging.getLogger(__name__)

SUFFIXES = (".npz", ".parquet")
REQUIRED_COLUMNS = ("x", "y", "split")
OPTIONAL_COLUMNS = ("quality", "source")


@register_task
class FileBuilder(BaseTaskBuilder):
    """Builds the `file` task from `TaskConfig.path`; see the module docstring."""

    name: ClassVar[str] = "file"
    cacheable: ClassVar[bool] = False

    def validate(self, config: TaskConfig) -> list[str]:
        # The split sizes and the seed come from the file, so only `path` and `mixture` matter.
        problems = []
        if not config.path:
            problems.append(
                f"task.path={config.path!r} is missing; set task.path to an .npz or .parquet file "
                "for task.name=file"
            )
        elif Path(config.path).suffix.lower() not in SUFFIXES:
            problems.append(
                f"task.path={config.path!r} has an unsupported suffix; use a file ending in "
                f"{' or '.join(SUFFIXES)}"
            )
        if config.mixture:
            problems.append(
                f"task.mixture={config.mixture!r} is not used by task 'file', whose pool comes "
                "from the file; remove task.mixture"
            )
        return problems

    def build(self, config: TaskConfig) -> Task:
        path = Path(config.path).expanduser()
        if not path.is_file():
            raise TaskError(f"task.path={str(path)!r} does not exist or is not a file; check the path")
        columns = read_parquet(path) if path.suffix.lower() == ".parquet" else read_npz(path)
        task = columns_to_task(columns, path)
        logger.info("Read task file %s: %d classes, sources %s", path, task.num_classes, task.sources)
        return task


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """Read the columns of an `.npz` file with pickle disabled."""
    try:
        with np.load(path, allow_pickle=False) as data:
            names = [name for name in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS) if name in data.files]
            return {name: _load_npz_member(data, name, path) for name in names}
    except TaskError:
        raise
    except (OSError, zipfile.BadZipFile, EOFError) as err:
        raise TaskError(f"task file {str(path)!r} is not a readable .npz file: {err}") from err
    except ValueError as err:
        # np.load falls back to unpickling a file that is neither an .npz archive nor an .npy array,
        # and with allow_pickle=False that surfaces as a ValueError about pickled data.
        raise TaskError(
            f"task file {str(path)!r} is not an .npz archive; write it with numpy.savez or numpy.savez_compressed"
        ) from err


def _load_npz_member(data: np.lib.npyio.NpzFile, name: str, path: Path) -> np.ndarray:
    try:
        return data[name]
    except ValueError as err:
        # np.load raises ValueError for an object array when allow_pickle=False.
        if "pickle" not in str(err).lower():
            raise TaskError(f"task file {str(path)!r}: array {name!r} cannot be read: {err}") from err
        raise TaskError(
            f"task file {str(path)!r}: array {name!r} contains pickled objects, which are never "
            "loaded; save string arrays with dtype str/'U' and numbers with a numeric dtype"
        ) from err


def read_parquet(path: Path) -> dict[str, np.ndarray]:
    """Read the columns of a Parquet file with pyarrow; `x` must be a list column."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as err:
        raise TaskError("reading a .parquet task file needs pyarrow; run `pip install pyarrow`") from err

    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as err:
        raise TaskError(f"task file {str(path)!r} is not a readable Parquet file: {err}") from err
    columns: dict[str, np.ndarray] = {}
    for name in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS):
        if name not in table.column_names:
            continue
        column = table.column(name).combine_chunks()
        if name == "x":
            columns[name] = _list_column_to_matrix(column, path)
        else:
            columns[name] = _flat_column(column, name, path)
    return columns


def _list_column_to_matrix(column: object, path: Path) -> np.ndarray:
    import pyarrow as pa
    import pyarrow.compute as pc

    if not (pa.types.is_list(column.type) or pa.types.is_large_list(column.type)
            or pa.types.is_fixed_size_list(column.type)):
        raise TaskError(
            f"task file {str(path)!r}: column 'x' has type {column.type}; store each sample's "
            "features as a list of floats"
        )
    if column.null_count:
        raise TaskError(f"task file {str(path)!r}: column 'x' has {column.null_count} null rows; fill them")
    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
    if len(lengths) and lengths.min() != lengths.max():
        raise TaskError(
            f"task file {str(path)!r}: the lists in column 'x' have lengths from {lengths.min()} "
            f"to {lengths.max()}; give every sample the same number of features"
        )
    width = int(lengths[0]) if len(lengths) else 0
    values = column.flatten().to_numpy(zero_copy_only=False)
    return values.reshape(len(column), width)


def _flat_column(column: object, name: str, path: Path) -> np.ndarray:
    import pyarrow as pa

    if name == "quality" and column.null_count:
        # Nulls are allowed on rows outside the pool; -1 marks them for the check that follows.
        column = column.fill_null(-1)
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        if column.null_count:
            raise TaskError(
                f"task file {str(path)!r}: column {name!r} has {column.null_count} null rows; fill them"
            )
        # pyarrow returns strings as an object array; a 'U' array keeps the checks pickle-free.
        return np.array(column.to_pylist(), dtype=str)
    return np.asarray(column.to_numpy(zero_copy_only=False))


def columns_to_task(columns: dict[str, np.ndarray], path: Path) -> Task:
    """Check the columns and assemble the task; raise TaskError on the first problem."""
    where = f"task file {str(path)!r}"
    for name in REQUIRED_COLUMNS:
        if name not in columns:
            raise TaskError(
                f"{where} has no {name!r} column; add it (columns: x (n, d) float, y (n,) int, "
                "split (n,) str in pool/meta/val/test)"
            )
    x = _check_x(columns["x"], where)
    n = len(x)
    y = _check_labels(columns["y"], n, where)
    split = _check_split(columns["split"], n, where)
    source_names = _check_source(columns.get("source"), split, n, where)
    quality = _check_quality(columns.get("quality"), split, n, where)

    sources = tuple(sorted(set(source_names.tolist())))
    source_index = np.searchsorted(np.array(sources), source_names)
    splits = {
        name: _sampling.make_split(x[split == name], y[split == name], source_index[split == name])
        for name in SPLIT_NAMES
    }
    return Task(
        name="file",
        num_classes=int(y.max()) + 1,
        sources=sources,
        quality=None if quality is None else quality[split == "pool"].astype(np.int8),
        **splits,
    )


def _check_length(name: str, array: np.ndarray, n: int, where: str) -> None:
    if array.ndim != 1 or len(array) != n:
        raise TaskError(
            f"{where}: column {name!r} has shape {array.shape}; it needs one value per row of x, "
            f"shape ({n},)"
        )


def _check_x(x: np.ndarray, where: str) -> np.ndarray:
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise TaskError(f"{where}: column 'x' has shape {x.shape}; store it as a non-empty (n, d) array")
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise TaskError(f"{where}: column 'x' has dtype {x.dtype}; store numbers, preferably float32")
    if not np.isfinite(x).all():
        raise TaskError(f"{where}: column 'x' contains NaN or infinite values; replace or drop those rows")
    return x.astype(np.float32)


def _check_labels(y: np.ndarray, n: int, where: str) -> np.ndarray:
    _check_length("y", y, n, where)
    if not np.issubdtype(y.dtype, np.integer):
        raise TaskError(f"{where}: column 'y' has dtype {y.dtype}; store class indices as integers")
    if y.min() < 0:
        raise TaskError(f"{where}: column 'y' contains {int(y.min())}; class indices must be >= 0")
    return y.astype(np.int64)


def _check_split(split: np.ndarray, n: int, where: str) -> np.ndarray:
    _check_length("split", split, n, where)
    if not np.issubdtype(split.dtype, np.str_):
        raise TaskError(
            f"{where}: column 'split' has dtype {split.dtype}; store strings (pool, meta, val, test)"
        )
    unknown = sorted(set(split.tolist()) - set(SPLIT_NAMES))
    if unknown:
        raise TaskError(
            f"{where}: column 'split' contains {', '.join(map(repr, unknown[:5]))}; use only "
            f"{', '.join(SPLIT_NAMES)}"
        )
    for name in SPLIT_NAMES:
        if not (split == name).any():
            raise TaskError(f"{where}: split {name!r} is empty; give it at least one row")
    return split


def _check_source(source: np.ndarray | None, split: np.ndarray, n: int, where: str) -> np.ndarray:
    if source is None:
        return np.where(split == "pool", "pool", "real")
    _check_length("source", source, n, where)
    if not np.issubdtype(source.dtype, np.str_):
        raise TaskError(f"{where}: column 'source' has dtype {source.dtype}; store strings")
    return source


def _check_quality(quality: np.ndarray | None, split: np.ndarray, n: int, where: str) -> np.ndarray | None:
    if quality is None:
        return None
    _check_length("quality", quality, n, where)
    if not np.issubdtype(quality.dtype, np.integer):
        raise TaskError(f"{where}: column 'quality' has dtype {quality.dtype}; store integers 0 or 1")
    pool_quality = quality[split == "pool"]
    invalid = sorted(set(pool_quality.tolist()) - {0, 1})
    if invalid:
        raise TaskError(
            f"{where}: column 'quality' has {', '.join(map(str, invalid[:5]))} on pool rows; use 1 "
            "(faithful) or 0 (harmful)"
        )
    return quality
