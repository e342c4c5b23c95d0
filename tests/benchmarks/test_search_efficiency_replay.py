"""The tabular replay of benchmarks/search_efficiency.py on small hand-made grids, without Ray."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest

from sweep.search_space import SearchSpace, parse_search_space

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "search_efficiency.py"


@pytest.fixture(scope="module")
def efficiency() -> ModuleType:
    """Load the script as a module from its file, because `benchmarks` is not an installed package."""
    spec = importlib.util.spec_from_file_location("search_efficiency_under_test", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def space() -> SearchSpace:
    """A 2 x 2 grid with a list-valued choice, as the bundled grid has."""
    parsed, problems = parse_search_space(
        {"params": {"pool.batch_size": {"choice": [64, 512]}, "mts.features": {"choice": [["loss"], ["loss", "class"]]}}},
        "tiny",
    )
    assert problems == []
    assert parsed is not None
    return parsed


def test_config_key_matches_store_params(efficiency: ModuleType, space: SearchSpace) -> None:
    assert efficiency.config_key(space, {"pool.batch_size": 64, "mts.features": ["loss", "class"]}) == ("64", "loss,class")


def test_replay_reaches_single_best(efficiency: ModuleType, space: SearchSpace) -> None:
    table = {("64", "loss"): 0.01, ("64", "loss,class"): 0.02, ("512", "loss"): 0.05, ("512", "loss,class"): 0.0}
    for sampler in ("tpe", "random"):
        for seed in range(5):
            count = efficiency.trials_to_target(space, table, sampler, seed, target=0.05, cap=200)
            assert count is not None, (sampler, seed)
            assert 1 <= count <= 200


def test_replay_skips_failed_point(efficiency: ModuleType, space: SearchSpace) -> None:
    table = {("64", "loss"): None, ("64", "loss,class"): 0.02, ("512", "loss"): None, ("512", "loss,class"): 0.03}
    count = efficiency.trials_to_target(space, table, "tpe", 0, target=0.03, cap=200)
    assert count is not None


def test_unreachable_target_returns_none(efficiency: ModuleType, space: SearchSpace) -> None:
    table = {("64", "loss"): 0.01, ("64", "loss,class"): 0.02, ("512", "loss"): 0.05, ("512", "loss,class"): 0.0}
    assert efficiency.trials_to_target(space, table, "random", 0, target=0.06, cap=15) is None


def test_flat_grid_found_at_first_trial(efficiency: ModuleType, space: SearchSpace) -> None:
    table = {key: 0.04 for key in [("64", "loss"), ("64", "loss,class"), ("512", "loss"), ("512", "loss,class")]}
    assert efficiency.replay_counts(space, table, "tpe", seeds=3, tolerance=0.01) == [1, 1, 1]


def test_count_cells_marks_missed_replay(efficiency: ModuleType) -> None:
    median, p90, mean, median_ratio, p90_ratio, missed = efficiency.count_cells([1, 3, None], grid_size=4)
    assert median == 3
    assert p90 == "> 40"
    assert mean == "> 40"
    assert median_ratio == 0.75
    assert math.isinf(p90_ratio)
    assert missed == 1


def test_percentile_matches_numpy_linear(efficiency: ModuleType) -> None:
    import numpy as np

    values = [3.0, 1.0, 7.0, 2.0, 10.0, 4.0]
    for q in (0, 25, 50, 90, 100):
        assert efficiency.percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_percentile_touching_miss_is_inf(efficiency: ModuleType) -> None:
    assert math.isinf(efficiency.percentile([1.0, 2.0, math.inf], 90))
    assert efficiency.percentile([1.0, 2.0, math.inf], 25) == 1.5


def test_count_cells_percentiles(efficiency: ModuleType) -> None:
    median, p90, mean, median_ratio, p90_ratio, missed = efficiency.count_cells(list(range(1, 11)), grid_size=10)
    assert median == 5.5
    assert p90 == 9.1
    assert mean == 5.5
    assert median_ratio == 0.55
    assert p90_ratio == 0.91
    assert missed == 0


def test_missing_grid_point_raises(efficiency: ModuleType, space: SearchSpace) -> None:
    values = {("64", "loss"): [0.01], ("64", "loss,class"): [0.02], ("512", "loss"): [0.05]}
    with pytest.raises(RuntimeError, match="no trial for 1 of 4 grid points"):
        efficiency.check_complete(space, values)


def test_grid_row_reports_best_and_spread(efficiency: ModuleType, space: SearchSpace) -> None:
    table = {("64", "loss"): 0.01, ("64", "loss,class"): 0.045, ("512", "loss"): 0.05, ("512", "loss,class"): None}
    row = efficiency.grid_row(space, "final epoch", table, tolerance=0.01)
    assert row[0] == "final epoch"
    assert row[1] == "pool.batch_size=512, mts.features=loss"
    assert row[2] == 5.0
    assert row[3] == 4.5
    assert row[4] == 1.0
    assert row[6] == 2
    assert row[7] == 1


def test_pivot_table_has_cell_per_point(efficiency: ModuleType, space: SearchSpace) -> None:
    table = {("64", "loss"): 0.01, ("64", "loss,class"): 0.02, ("512", "loss"): 0.05, ("512", "loss,class"): None}
    text = efficiency.pivot_table(space, {"final epoch": table, "best epoch": table})
    lines = text.splitlines()
    assert lines[0] == ("| pool.batch_size | final epoch (pts) at mts.features=loss | best epoch (pts) at mts.features=loss "
                        "| final epoch (pts) at mts.features=loss,class | best epoch (pts) at mts.features=loss,class |")
    assert lines[2] == "| 64 | 1 | 1 | 2 | 2 |"
    assert lines[3] == "| 512 | 5 | 5 | failed | failed |"
