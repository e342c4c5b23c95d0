"""Tests of the task registry, the bundled tasks, the disk cache and the `file` task."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from mts.config import TaskConfig
from mts.errors import ConfigError, TaskError
from mts.tasks import SPLIT_NAMES, TASK_NAMES, Task, build_task, cache, digits_synth
from mts.tasks._sampling import allocate_counts
from mts.tasks.registry import get_builder

GENERATED = ("mnist1d_shift", "digits_synth")
REAL_SPLITS = ("meta", "val", "test")


def small_config(name: str, tmp_path: Path, **overrides: object) -> TaskConfig:
    """Return a config with small splits, caching under `tmp_path`."""
    values = dict(
        name=name,
        seed=0,
        cache_dir=str(tmp_path / "cache"),
        pool_size=300,
        meta_size=20,
        val_size=30,
        test_size=40,
        seed_size=60,
    )
    values.update(overrides)
    return TaskConfig(**values)


def split_arrays(task: Task) -> dict[str, np.ndarray]:
    arrays = {}
    for name in SPLIT_NAMES:
        split = task.split(name)
        arrays.update({f"{name}_x": split.x, f"{name}_y": split.y, f"{name}_source": split.source})
    if task.quality is not None:
        arrays["quality"] = task.quality
    return arrays


def assert_same_arrays(first: Task, second: Task) -> None:
    first_arrays, second_arrays = split_arrays(first), split_arrays(second)
    assert first_arrays.keys() == second_arrays.keys()
    for key, array in first_arrays.items():
        assert array.dtype == second_arrays[key].dtype, key
        assert array.tobytes() == second_arrays[key].tobytes(), key


def rows(x: np.ndarray) -> set[bytes]:
    return {row.tobytes() for row in x}


# Registry and config validation


def test_task_names_registered() -> None:
    assert TASK_NAMES == ("mnist1d_shift", "digits_synth", "file")


def test_unknown_task_name_rejected() -> None:
    with pytest.raises(ConfigError, match=r"task\.name='cifar' is not a known task"):
        build_task(TaskConfig(name="cifar"))


def test_invalid_config_lists_every_problem(tmp_path: Path) -> None:
    config = small_config("mnist1d_shift", tmp_path, pool_size=0, mixture={"clean": -1.0, "fog": 1.0})
    with pytest.raises(ConfigError) as info:
        build_task(config)
    lines = str(info.value).splitlines()
    assert len(lines) == 3, lines
    assert "task.pool_size=0" in lines[0]
    assert "task.mixture.clean=-1.0" in lines[1]
    assert "unknown generator 'fog'" in lines[2]


def test_mixture_without_positive_fraction_rejected(tmp_path: Path) -> None:
    config = small_config("digits_synth", tmp_path, mixture={"gmm": 0.0})
    with pytest.raises(ConfigError, match="no positive fraction"):
        build_task(config)


def test_digits_sizes_exceeding_dataset_rejected(tmp_path: Path) -> None:
    config = small_config("digits_synth", tmp_path, seed_size=300, val_size=500, test_size=1000)
    with pytest.raises(ConfigError, match="exceeds the 1797 images"):
        build_task(config)


def test_digits_default_sizes_fit() -> None:
    assert get_builder("digits_synth").validate(TaskConfig(name="digits_synth")) == []


def test_allocate_counts_sums_to_total() -> None:
    counts = allocate_counts({"a": 1.0, "b": 1.0, "c": 1.0}, 100)
    assert sum(counts.values()) == 100
    assert sorted(counts.values()) == [33, 33, 34]


# Generated tasks


@pytest.fixture(scope="module", params=GENERATED)
def built(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Task:
    return build_task(small_config(request.param, tmp_path_factory.mktemp(request.param)))


def test_generated_split_shapes(built: Task) -> None:
    expected = {"pool": 300, "meta": 20, "val": 30, "test": 40}
    for name, size in expected.items():
        split = built.split(name)
        assert split.x.shape == (size, built.input_dim), name
        assert split.x.dtype == np.float32, name
        assert split.y.dtype == np.int64, name
        assert split.source.dtype == np.int64, name
        assert split.y.min() >= 0, name
        assert split.y.max() < built.num_classes, name
        assert np.isfinite(split.x).all(), name


def test_generated_real_splits_disjoint(built: Task) -> None:
    for i, first in enumerate(REAL_SPLITS):
        for second in REAL_SPLITS[i + 1 :]:
            shared = rows(built.split(first).x) & rows(built.split(second).x)
            assert not shared, f"{first} and {second} share {len(shared)} rows"


def test_generated_real_splits_tagged_real(built: Task) -> None:
    real = built.sources.index("real")
    for name in REAL_SPLITS:
        assert (built.split(name).source == real).all(), name
    assert not (built.pool.source == real).any()


def test_quality_tags_binary_pool_only(built: Task) -> None:
    assert built.quality is not None
    assert built.quality.shape == (len(built.pool),)
    assert built.quality.dtype == np.int8
    assert set(np.unique(built.quality).tolist()) == {0, 1}


def test_quality_constant_within_generator(built: Task) -> None:
    for index in np.unique(built.pool.source):
        tags = built.quality[built.pool.source == index]
        assert len(np.unique(tags)) == 1, built.sources[index]


@pytest.mark.parametrize("name", GENERATED)
def test_generated_deterministic_across_cache_dirs(name: str, tmp_path: Path) -> None:
    first = build_task(small_config(name, tmp_path / "a"))
    second = build_task(small_config(name, tmp_path / "b"))
    assert_same_arrays(first, second)


@pytest.mark.parametrize("name", GENERATED)
def test_different_seeds_differ(name: str, tmp_path: Path) -> None:
    first = build_task(small_config(name, tmp_path, seed=0))
    second = build_task(small_config(name, tmp_path, seed=1))
    assert not np.array_equal(first.pool.x, second.pool.x)
    assert not np.array_equal(first.meta.x, second.meta.x)


@pytest.mark.parametrize("name", GENERATED)
def test_build_leaves_global_rng_unchanged(name: str, tmp_path: Path) -> None:
    np.random.seed(123)
    expected = np.random.random(3)
    np.random.seed(123)
    build_task(small_config(name, tmp_path))
    assert np.array_equal(np.random.random(3), expected)


def test_mixture_sets_pool_composition(tmp_path: Path) -> None:
    task = build_task(small_config("mnist1d_shift", tmp_path, mixture={"clean": 2.0, "mislabeled": 1.0}))
    counts = {task.sources[i]: int((task.pool.source == i).sum()) for i in range(len(task.sources))}
    assert counts["clean"] == 200
    assert counts["mislabeled"] == 100
    assert counts["noisy"] == 0


def test_digits_real_splits_and_generated_pool(tmp_path: Path) -> None:
    from sklearn.datasets import load_digits

    task = build_task(small_config("digits_synth", tmp_path))
    all_rows = rows((load_digits().data / 16.0).astype(np.float32))
    real_rows = set().union(*(rows(task.split(name).x) for name in REAL_SPLITS))
    assert real_rows <= all_rows
    # The pool is generated: no pool image may be a copy of a real image.
    assert not rows(task.pool.x) & all_rows


# Cache


def entry_path(config: TaskConfig) -> Path:
    builder = get_builder(config.name)
    return cache.cache_path(config, builder.cache_fields, builder.generation_constants())


def test_cache_hit_returns_identical_arrays(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = small_config("digits_synth", tmp_path)
    first = build_task(config)
    builder = get_builder("digits_synth")
    path = entry_path(config)
    assert path.is_file()

    def fail_build(self: object, config: TaskConfig) -> Task:
        raise AssertionError("a cache hit must not rebuild the task")

    monkeypatch.setattr(type(builder), "build", fail_build)
    second = build_task(config)
    assert_same_arrays(first, second)
    assert second.sources == first.sources
    assert second.num_classes == first.num_classes


def test_changed_config_not_served_from_cache(tmp_path: Path) -> None:
    first = build_task(small_config("digits_synth", tmp_path, pool_size=300))
    second = build_task(small_config("digits_synth", tmp_path, pool_size=200))
    assert len(second.pool) == 200
    assert len(first.pool) == 300
    third = build_task(small_config("digits_synth", tmp_path, mixture={"gmm": 1.0}))
    assert set(np.unique(third.pool.source).tolist()) == {third.sources.index("gmm")}


def test_edited_quality_tag_not_served_from_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = small_config("digits_synth", tmp_path)
    task = build_task(config)
    confused = task.sources.index("confused")
    assert set(task.quality[task.pool.source == confused].tolist()) == {0}
    # A tag edited in the code, as after a new leave-one-generator-out measurement.
    monkeypatch.setitem(digits_synth.GENERATOR_QUALITY, "confused", 1)
    retagged = build_task(config)
    assert set(retagged.quality[retagged.pool.source == confused].tolist()) == {1}
    assert entry_path(config).is_file()


def test_corrupted_cache_file_rebuilt(tmp_path: Path) -> None:
    config = small_config("digits_synth", tmp_path)
    first = build_task(config)
    path = entry_path(config)
    path.write_bytes(b"not an npz file")
    second = build_task(config)
    assert_same_arrays(first, second)


def test_cache_entry_of_other_config_rejected(tmp_path: Path) -> None:
    config_a = small_config("digits_synth", tmp_path, pool_size=300)
    config_b = small_config("digits_synth", tmp_path, pool_size=200)
    build_task(config_a)
    # Put A's entry where B's belongs, as a hash collision or a hand-copied file would.
    entry_path(config_a).replace(entry_path(config_b))
    assert len(build_task(config_b).pool) == 200


def test_unwritable_cache_dir_builds_uncached(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    config = small_config("digits_synth", tmp_path, cache_dir=str(blocker / "cache"))
    with caplog.at_level("WARNING", logger="mts.tasks"):
        task = build_task(config)
    assert len(task.pool) == 300
    assert any("cannot be written" in record.getMessage() and "task.cache_dir" in record.getMessage() for record in caplog.records)
    assert blocker.read_text() == "not a folder"


def test_cache_dir_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MTSWEEP_CACHE", str(tmp_path / "env"))
    config = small_config("digits_synth", tmp_path, cache_dir=None)
    assert cache.resolve_cache_dir(config) == tmp_path / "env"
    build_task(config)
    assert list((tmp_path / "env").glob("digits_synth-*.npz"))
    assert not list((tmp_path / "env").glob("*.tmp"))


# The `file` task


def file_columns(n_pool: int = 12, d: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    split = np.array(["pool"] * n_pool + ["meta"] * 2 + ["val"] * 3 + ["test"] * 4)
    n = len(split)
    return {
        "x": rng.normal(size=(n, d)).astype(np.float32),
        "y": rng.integers(0, 3, size=n),
        "split": split,
        "quality": np.where(split == "pool", rng.integers(0, 2, size=n), -1),
        "source": np.where(split == "pool", np.where(np.arange(n) % 2, "gen_a", "gen_b"), "real"),
    }


def file_config(path: Path) -> TaskConfig:
    return TaskConfig(name="file", path=str(path))


def assert_matches_columns(task: Task, columns: dict[str, np.ndarray]) -> None:
    for name in SPLIT_NAMES:
        rows_of_split = columns["split"] == name
        split = task.split(name)
        assert np.array_equal(split.x, columns["x"][rows_of_split]), name
        assert np.array_equal(split.y, columns["y"][rows_of_split]), name
        names = np.array(task.sources)[split.source]
        assert np.array_equal(names, columns["source"][rows_of_split]), name
    assert np.array_equal(task.quality, columns["quality"][columns["split"] == "pool"])


def test_file_npz_round_trip(tmp_path: Path) -> None:
    columns = file_columns()
    np.savez(tmp_path / "data.npz", **columns)
    task = build_task(file_config(tmp_path / "data.npz"))
    assert task.name == "file"
    assert task.num_classes == int(columns["y"].max()) + 1
    assert task.sources == ("gen_a", "gen_b", "real")
    assert_matches_columns(task, columns)


def test_file_parquet_round_trip(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = file_columns()
    quality = [None if value < 0 else int(value) for value in columns["quality"]]
    table = pa.table(
        {
            "x": pa.array([row.tolist() for row in columns["x"]], type=pa.list_(pa.float32())),
            "y": columns["y"],
            "split": columns["split"].tolist(),
            "quality": pa.array(quality, type=pa.int64()),
            "source": columns["source"].tolist(),
        }
    )
    pq.write_table(table, tmp_path / "data.parquet")
    task = build_task(file_config(tmp_path / "data.parquet"))
    assert_matches_columns(task, columns)


def test_file_without_optional_columns(tmp_path: Path) -> None:
    columns = file_columns()
    np.savez(tmp_path / "data.npz", x=columns["x"], y=columns["y"], split=columns["split"])
    task = build_task(file_config(tmp_path / "data.npz"))
    assert task.quality is None
    assert task.sources == ("pool", "real")
    assert (np.array(task.sources)[task.pool.source] == "pool").all()


def test_file_missing_split_rejected(tmp_path: Path) -> None:
    columns = file_columns()
    np.savez(tmp_path / "data.npz", x=columns["x"], y=columns["y"])
    with pytest.raises(TaskError, match="has no 'split' column"):
        build_task(file_config(tmp_path / "data.npz"))


def test_file_pickled_objects_rejected(tmp_path: Path) -> None:
    columns = file_columns()
    columns["split"] = columns["split"].astype(object)
    np.savez(tmp_path / "data.npz", allow_pickle=True, **columns)
    with pytest.raises(TaskError) as info:
        build_task(file_config(tmp_path / "data.npz"))
    message = str(info.value)
    assert "contains pickled objects" in message
    assert "dtype str/'U'" in message
    assert "'split'" in message


def test_file_not_npz_rejected(tmp_path: Path) -> None:
    (tmp_path / "data.npz").write_text("hello")
    with pytest.raises(TaskError) as info:
        build_task(file_config(tmp_path / "data.npz"))
    message = str(info.value)
    assert "is not an .npz archive" in message
    assert "allow_pickle" not in message


def test_file_path_missing_is_config_error() -> None:
    with pytest.raises(ConfigError, match=r"task\.path=None is missing"):
        build_task(TaskConfig(name="file"))


def test_file_nonexistent_path_rejected(tmp_path: Path) -> None:
    with pytest.raises(TaskError, match="does not exist"):
        build_task(file_config(tmp_path / "absent.npz"))


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"split": np.array(["pool"] * 12 + ["meta"] * 2 + ["val"] * 3 + ["train"] * 4)}, "'train'"),
        ({"split": np.array(["pool"] * 12 + ["val"] * 5 + ["test"] * 4)}, "split 'meta' is empty"),
        ({"y": np.zeros(5, dtype=np.int64)}, "column 'y' has shape (5,)"),
        ({"x": np.zeros(21, dtype=np.float32)}, "column 'x' has shape (21,)"),
        ({"y": np.full(21, 0.5)}, "column 'y' has dtype float64"),
        ({"quality": np.full(21, 2)}, "column 'quality' has 2 on pool rows"),
        ({"x": np.full((21, 3), np.nan, dtype=np.float32)}, "NaN or infinite"),
    ],
    ids=["unknown-split", "empty-meta", "short-y", "flat-x", "float-y", "quality-2", "nan-x"],
)
def test_file_invalid_columns_rejected(
    tmp_path: Path, change: dict[str, np.ndarray], expected: str
) -> None:
    columns = file_columns()
    columns.update(change)
    np.savez(tmp_path / "data.npz", **columns)
    with pytest.raises(TaskError) as info:
        build_task(file_config(tmp_path / "data.npz"))
    assert expected in str(info.value)


def test_file_quality_outside_pool_ignored(tmp_path: Path) -> None:
    columns = file_columns()
    columns["quality"] = np.where(columns["split"] == "pool", columns["quality"], 7)
    np.savez(tmp_path / "data.npz", **columns)
    task = build_task(file_config(tmp_path / "data.npz"))
    assert set(np.unique(task.quality).tolist()) <= {0, 1}
    assert len(task.quality) == len(task.pool)


def test_file_task_not_cached(tmp_path: Path) -> None:
    columns = file_columns()
    path = tmp_path / "data.npz"
    np.savez(path, **columns)
    config = dataclasses.replace(file_config(path), cache_dir=str(tmp_path / "cache"))
    build_task(config)
    columns["x"] = columns["x"] + 1.0
    np.savez(path, **columns)
    assert np.array_equal(build_task(config).pool.x, columns["x"][columns["split"] == "pool"])
    assert not (tmp_path / "cache").exists()
