"""End to end: `mtsweep launch search_space=smoke` on a real 2-CPU Ray instance and SQLite."""

from __future__ import annotations

import json
import math
from pathlib import Path

import optuna
import pytest
import sqlalchemy as sa
from sweep_results import load_study, peak_concurrency, read_results

from sweep.cli import main

EPOCH_METRICS = ("val_acc", "val_gain", "test_acc", "gsnr", "gsnr_per_sample", "noise_scale", "w_mean", "p_max", "b_eff", "samples_per_sec")


@pytest.fixture(scope="module")
def smoke_sweep(ray_address: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("experiments")
    capture = tmp_path_factory.mktemp("capture") / "stdout.txt"
    import contextlib

    with capture.open("w") as out, contextlib.redirect_stdout(out):
        code = main(["launch", "search_space=smoke", f"sweep.root={root}", "sweep.name=smoke", "sweep.progress_interval_s=2"])
    assert code == 0
    return root / "smoke", capture.read_text()


def test_smoke_every_trial_reports_every_epoch(smoke_sweep: tuple[Path, str]) -> None:
    path, _ = smoke_sweep
    results = read_results(path)
    assert len(results) == 4
    for trial_id, rows in results.items():
        assert [row["epoch"] for row in rows] == [1, 2, 3], trial_id
        for row in rows:
            for key in EPOCH_METRICS:
                assert key in row, (trial_id, key)
            assert row["val_gain"] is not None
            assert math.isfinite(row["val_gain"])
            assert row["diverged"] is False
        assert rows[-1]["status"] == "finished"


def test_smoke_two_trials_run_at_once(smoke_sweep: tuple[Path, str]) -> None:
    path, _ = smoke_sweep
    intervals = [(rows[0]["trial_started_at"], rows[-1]["reported_at"]) for rows in read_results(path).values()]
    assert peak_concurrency(intervals) == 2


def test_smoke_study_matches_tune_trials(smoke_sweep: tuple[Path, str]) -> None:
    path, _ = smoke_sweep
    results = read_results(path)
    trials = load_study(path, "smoke").get_trials()
    assert len(trials) == len(results)
    by_tune_id = {trial.user_attrs["tune_trial_id"]: trial for trial in trials}
    assert set(by_tune_id) == set(results)
    for trial_id, rows in results.items():
        trial, config = by_tune_id[trial_id], rows[-1]["config"]
        assert trial.state == optuna.trial.TrialState.COMPLETE
        assert trial.user_attrs["status"] == "finished"
        assert trial.value == pytest.approx(rows[-1]["val_gain"])
        assert sorted(trial.intermediate_values) == [1, 2, 3]
        assert trial.params["pool.batch_size"] == config["pool.batch_size"]
        assert trial.params["seed"] == config["seed"]
        assert trial.params["mts.lr"] == pytest.approx(config["mts.lr"])
        assert json.loads(trial.params["mts.features"]) == config["mts.features"]
        assert isinstance(config["mts.features"], list)


def test_smoke_folder_holds_config_db_results(smoke_sweep: tuple[Path, str]) -> None:
    path, stdout = smoke_sweep
    assert f"experiment folder: {path}" in stdout
    assert "pool.batch_size" in stdout  # the trial table's header
    assert "4 finished" in stdout
    for name in ("config.yaml", "sweep.db", "tune", "tensorboard"):
        assert (path / name).exists(), name
    engine = sa.create_engine(f"sqlite:///{path / 'sweep.db'}")
    with engine.connect() as connection:
        rows = connection.execute(sa.text("select config_json from baselines")).all()
    seeds = sorted(json.loads(row.config_json)["seed"] for row in rows)
    assert seeds == [0, 1]


def test_status_counts_finished_trials(smoke_sweep: tuple[Path, str], capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = smoke_sweep
    assert main(["status", str(path)]) == 0
    out = capsys.readouterr().out
    assert "finished     4" in out
    assert "total        4 of 4" in out
