"""Bad launch overrides and search spaces fail before Ray starts, with one line per problem."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

import sweep.launcher
from sweep.cli import main


@pytest.fixture()
def no_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if the launcher gets as far as creating a folder or starting Ray."""

    def reached(*args: object, **kwargs: object) -> None:
        raise AssertionError("the launcher went past validation")

    monkeypatch.setattr(sweep.launcher, "create_experiment", reached)
    monkeypatch.setattr(sweep.launcher, "ray_session", reached)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["sweep.searcher=bayes"], "sweep.searcher='bayes' is not allowed; choose one of: tpe, random, grid, cmaes, nsga2"),
        (["sweep.cpus_per_trial=64"], "sweep.cpus_per_trial=64.0 is more than this machine's"),
        (["task.meta_size=40"], "mts.meta_batch_size=50 is larger than the meta set (task.meta_size=40)"),
        (["mts.meta_batch_size=20"], "sets mts.meta_batch_size, which search space 'smoke' also sets"),
        (["sweep.scheduler=hyperband"], "sweep.scheduler='hyperband' is not allowed; choose one of: none, asha"),
        (["sweep.num_samples=0"], "sweep.num_samples=0 must be an integer >= 1"),
        (["sweep.cpus_per_trial=0"], "sweep.cpus_per_trial=0.0 must be > 0"),
        (["sweep.searcher=nsga2"], "sweep.searcher='nsga2' optimizes two objectives; set sweep.metric2"),
        (["sweep.metric2=wall_time", "sweep.scheduler=asha"], "sweep.scheduler='asha' stops trials on one metric only"),
        (["sweep.bogus=1"], "unknown config key 'sweep.bogus'"),
        (["cluster=nowhere"], "cluster='nowhere' is not a known cluster; allowed: local, remote"),
        (["cluster=remote"], "cluster=remote needs cluster.address, e.g. cluster.address=ray://head:10001"),
        (["cluster.address=ray://head:10001"], "is set with cluster=local; use cluster=remote"),
        (["storage.url=not-a-url"], "storage.url='not-a-url' is not an SQLAlchemy URL"),
        (["train.lr=-1"], "train.lr=-1.0 must be > 0"),
        (["sweep.mode2=max"], "sweep.mode2='max' is set without sweep.metric2"),
        (["sweep.name=../outside"], "sweep.name='../outside' is not a plain folder name"),
        (["sweep.name=a/b"], "sweep.name='a/b' is not a plain folder name"),
        (["search_space=nope"], "search_space='nope' is neither a bundled search space nor an existing .yaml file"),
    ],
)
def test_bad_override_one_line(no_ray: None, capsys: pytest.CaptureFixture[str], overrides: list[str], expected: str) -> None:
    arguments = overrides if any(o.startswith("search_space=") for o in overrides) else ["search_space=smoke", *overrides]
    assert main(["launch", *arguments]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("mtsweep launch: error: ")
    assert expected in lines[0]


def test_space_drawing_invalid_trial(no_ray: None, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    space = tmp_path / "big.yaml"
    space.write_text("params:\n  task.pool_size: 600\n  pool.batch_size: {choice: [64, 1024]}\n  mts.features: {choice: [[loss], [loss, confidence_x]]}\n")
    assert main(["launch", f"search_space={space}"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2, lines
    assert any("pool.batch_size=1024 is larger than the pool (task.pool_size=600)" in line for line in lines)
    assert any("mts.features contains unknown group 'confidence_x'" in line for line in lines)


def test_param_and_trial_problems_listed_together(no_ray: None, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    space = tmp_path / "mixed.yaml"
    space.write_text("params:\n  task.pool_size: 600\n  pool.batch_size: {choice: [64, 1024]}\n  mts.lr: {float: [1.0, 0.5]}\n")
    assert main(["launch", f"search_space={space}", "sweep.searcher=bayes"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 3, lines
    assert any("mts.lr" in line for line in lines)
    assert any("pool.batch_size=1024 is larger than the pool (task.pool_size=600)" in line for line in lines)
    assert any("sweep.searcher='bayes' is not allowed" in line for line in lines)


def _write_file_task(path: Path, meta: int) -> Path:
    import numpy as np

    counts = {"pool": 200, "meta": meta, "val": 60, "test": 60}
    split = np.concatenate([np.full(count, name) for name, count in counts.items()]).astype(str)
    rng = np.random.default_rng(0)
    np.savez(path, x=rng.normal(size=(len(split), 8)).astype(np.float32), y=rng.integers(0, 3, len(split)), split=split)
    return path


def test_file_task_data_checked_before_launch(no_ray: None, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    enough = _write_file_task(tmp_path / "enough.npz", meta=60)
    small = _write_file_task(tmp_path / "small.npz", meta=20)
    space = tmp_path / "files.yaml"
    space.write_text(
        "params:\n  task.name: file\n  pool.batch_size: 32\n  mts.meta_batch_size: 50\n"
        f"  task.path: {{choice: [{enough}, {small}]}}\n"
    )
    assert main(["launch", f"search_space={space}"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert f"task.path={str(small)!r}" in lines[0]
    assert "mts.meta_batch_size=50 is larger than the meta set (20 samples)" in lines[0]


def test_status_after_data_file_removed(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from sweep.launch_config import load_launch_config
    from sweep.launcher import create_experiment

    data = _write_file_task(tmp_path / "data.npz", meta=60)
    space = tmp_path / "file.yaml"
    space.write_text(f"params:\n  task.name: file\n  task.path: {data}\n  pool.batch_size: 32\n  mts.meta_batch_size: 50\n  seed: {{choice: [0, 1]}}\n")
    config, parsed = load_launch_config([f"search_space={space}", f"sweep.root={tmp_path / 'experiments'}", "sweep.name=moved"])
    experiment = create_experiment(config, parsed)
    data.unlink()

    assert main(["status", str(experiment.path)]) == 0
    assert "not started  2" in capsys.readouterr().out


def test_type_error_does_not_hide_other_problems(no_ray: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["launch", "search_space=smoke", "train.momentum=fast", "sweep.searcher=bogus", "sweep.num_samples=-3"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 3, lines
    assert any("train.momentum=fast" in line for line in lines)
    assert any("sweep.searcher='bogus' is not allowed" in line for line in lines)
    assert any("sweep.num_samples=-3 must be an integer >= 1" in line for line in lines)


def test_baseline_hint_only_for_batch_problems(no_ray: None, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    space = tmp_path / "small.yaml"
    space.write_text("params:\n  task.pool_size: 300\n  pool.batch_size: 32\n")
    assert main(["launch", f"search_space={space}", "mts.lr=-1"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert any("mts.lr=-1.0 must be > 0" in line for line in lines), lines
    assert not any("set baseline_batch_size" in line for line in lines), lines
    assert main(["launch", f"search_space={space}", "baseline_batch_size=512"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert any("uniform baseline: pool.batch_size=512" in line and "set baseline_batch_size" in line for line in lines), lines


def test_range_on_baseline_key_rejected(no_ray: None, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    space = tmp_path / "lr.yaml"
    space.write_text("params:\n  train.lr: {float: [1.0e-4, 1.0e-2], log: true}\n")
    assert main(["launch", f"search_space={space}"]) == 2
    err = capsys.readouterr().err
    assert "train.lr changes the uniform baseline, so it must be a choice or a fixed value" in err


def test_cli_bad_space_exits_before_ray(tmp_path: Path) -> None:
    space = tmp_path / "empty.yaml"
    space.write_text("params:\n  pool.batch_size: {choice: []}\n")
    root = tmp_path / "experiments"
    command = [sys.executable, "-m", "sweep.cli", "launch", f"search_space={space}", f"sweep.root={root}"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "mtsweep launch: error: search space 'empty': pool.batch_size choice list is empty or not a list ([]); give at least one value"
    ]
    assert not root.exists()


def test_cmaes_needs_its_package(capsys: pytest.CaptureFixture[str], no_ray: None) -> None:
    import importlib.util

    if importlib.util.find_spec("cmaes") is None:
        assert main(["launch", "search_space=smoke", "sweep.searcher=cmaes"]) == 2
        assert "sweep.searcher='cmaes' needs the cmaes package" in capsys.readouterr().err
    else:
        with pytest.raises(AssertionError, match="went past validation"):
            main(["launch", "search_space=smoke", "sweep.searcher=cmaes"])


def test_unreachable_cluster_one_line(no_ray: None, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # The port was free a moment ago and nothing listens on it now.
    overrides = ["search_space=smoke", "cluster=remote", f"cluster.address=127.0.0.1:{port}", f"sweep.root={tmp_path / 'runs'}"]
    assert main(["launch", *overrides]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert f"nothing accepts connections at 127.0.0.1:{port}" in lines[0]
    assert not (tmp_path / "runs").exists()
