"""Kill the driver of a running sweep, then `mtsweep resume` it to exactly its num_samples trials."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from sweep_results import count_rows, load_study, read_results

from sweep.cli import main

NUM_SAMPLES = 8  # enough that trials remain after two finish and Tune saves its state
COMPLETE = optuna.trial.TrialState.COMPLETE


def _complete_count(path: Path) -> int:
    return count_rows(path, "select count(*) from trials where state = 'COMPLETE'")


def _complete_trials(path: Path) -> list[optuna.trial.FrozenTrial]:
    return load_study(path, "resumed").get_trials(states=(COMPLETE,))


def _launch_and_kill(root: Path, ray_address: str) -> Path:
    """Start `mtsweep launch` as a driver process and SIGKILL it once two trials have finished."""
    command = [
        sys.executable, "-m", "sweep.cli", "launch", "search_space=smoke", f"sweep.root={root}", "sweep.name=resumed",
        f"sweep.num_samples={NUM_SAMPLES}", "sweep.max_concurrent_trials=2", "cluster=remote", f"cluster.address={ray_address}",
    ]
    driver = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())
    path = root / "resumed"
    deadline = time.monotonic() + 240
    try:
        while _complete_count(path) < 2:
            assert driver.poll() is None, f"the driver exited early with code {driver.returncode}"
            assert time.monotonic() < deadline, "no two trials finished within 240 s"
            time.sleep(0.1)
        _wait_for_tune_state_save(path / "tune", after=time.time())
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    return path


def _wait_for_tune_state_save(tune_folder: Path, after: float, timeout_s: float = 10.0) -> None:
    """Wait until Tune saves its experiment state again, so that it records the finished trials.

    NOTE: a driver killed between a trial's last checkpoint and Tune's next state save leaves a
    resume point that names the trial's deleted earlier checkpoint, and that trial then fails its
    retries. Users can meet this race too; the test kills the driver after a save to test resume
    itself rather than the race.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        states = list(tune_folder.glob("experiment_state-*.json"))
        if states and max(state.stat().st_mtime for state in states) > after:
            return
        time.sleep(0.05)


def test_resume_after_killed_driver(ray_address: str, experiments: Path) -> None:
    from ray.tune import ExperimentAnalysis

    path = _launch_and_kill(experiments, ray_address)
    finished_before = {trial.user_attrs["tune_trial_id"]: trial for trial in _complete_trials(path)}
    results_before = read_results(path)
    assert len(finished_before) < NUM_SAMPLES
    time.sleep(3)  # Ray ends the killed driver's trial actors

    assert main(["resume", str(path)]) == 0

    tune_trials = ExperimentAnalysis(str(path / "tune")).trials
    assert len(tune_trials) == NUM_SAMPLES
    assert all(trial.status == "TERMINATED" for trial in tune_trials)
    tune_ids = {trial.trial_id for trial in tune_trials}

    study = load_study(path, "resumed")
    counted = [trial for trial in study.get_trials() if trial.user_attrs.get("status") != "orphaned"]
    assert len(counted) == NUM_SAMPLES
    assert {trial.user_attrs["tune_trial_id"] for trial in counted} == tune_ids
    assert all(trial.state == COMPLETE for trial in counted)
    numbers = sorted(trial.number for trial in study.get_trials())
    assert numbers == list(range(len(numbers)))  # one study, continued

    results_after = read_results(path)
    for trial_id, before in finished_before.items():
        assert trial_id in tune_ids
        after = study.get_trials()[before.number]
        assert after.value == pytest.approx(before.value)
        rows = results_after[trial_id]
        assert [row["epoch"] for row in rows] == [1, 2, 3]  # not rerun: no repeated epochs
        assert rows[0]["trial_started_at"] == results_before[trial_id][0]["trial_started_at"]

    # The analysis store saw the killed driver's reports and the resumed ones: each epoch once.
    with contextlib.closing(sqlite3.connect(path / "sweep.db")) as connection:
        counts = connection.execute("SELECT trial_id, epoch, COUNT(*) FROM analysis_reports GROUP BY trial_id, epoch").fetchall()
    assert all(count == 1 for _, _, count in counts)
    assert {trial_id for trial_id, _, _ in counts} == tune_ids
    assert len(counts) == NUM_SAMPLES * 3

