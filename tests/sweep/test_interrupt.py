"""Ctrl-C on a sweep's driver: running trials show as `interrupted` everywhere, then resume finishes them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import yaml
from sweep_results import count_rows, load_study

from sweep.analysis.store import AnalysisStore
from sweep.cli import main

NUM_SAMPLES = 4
RUNNING, COMPLETE = optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.COMPLETE


def _reported_epochs(path: Path) -> int:
    return count_rows(path, "select count(*) from trial_intermediate_values")


def _complete_count(path: Path) -> int:
    return count_rows(path, "select count(*) from trials where state = 'COMPLETE'")


def _store_statuses(path: Path) -> list[str]:
    store = AnalysisStore(f"sqlite:///{path / 'sweep.db'}", create=False)
    try:
        experiment = store.experiment("stopped")
        assert experiment is not None
        return sorted(trial["status"] for trial in store.trials(experiment.id))
    finally:
        store.close()


def test_ctrl_c_marks_trials_interrupted(ray_address: str, experiments: Path, tmp_path: Path, capsys) -> None:
    space = tmp_path / "space.yaml"
    params = {"task.pool_size": 600, "task.val_size": 200, "task.test_size": 200, "mts.meta_batch_size": 50,
              "gsnr.enabled": False, "pool.batch_size": 64, "train.epochs": {"choice": [4, 150]}, "seed": {"choice": [0, 1]}}
    space.write_text(yaml.safe_dump({"params": params}))
    command = [
        sys.executable, "-m", "sweep.cli", "launch", f"search_space={space}", f"sweep.root={experiments}",
        "sweep.name=stopped", f"sweep.num_samples={NUM_SAMPLES}", "sweep.searcher=grid", "sweep.max_concurrent_trials=2",
        "cluster=remote", f"cluster.address={ray_address}",
    ]
    driver = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    path = experiments / "stopped"
    deadline = time.monotonic() + 240
    try:
        # Stop once a short trial has finished and a long one is training.
        while _complete_count(path) < 1 or _reported_epochs(path) < 8:
            assert driver.poll() is None, f"the driver exited early with code {driver.returncode}"
            assert time.monotonic() < deadline, "no trial finished within 240 s"
            time.sleep(0.2)
        driver.send_signal(signal.SIGINT)
        out, err = driver.communicate(timeout=120)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()

    assert driver.returncode == 1, err[-3000:]
    final_table = out[out.rindex("trial "):]
    assert "interrupted" in final_table
    assert "finished" in final_table
    assert "pruned" not in final_table
    assert "Tuner.restore" not in out + err
    assert f"continue it with: mtsweep resume {path}" in out

    study = load_study(path, "stopped")
    running = [trial for trial in study.get_trials() if trial.state == RUNNING]
    assert running, "no trial was running at Ctrl-C"
    assert {trial.user_attrs["status"] for trial in running} == {"interrupted"}
    assert "interrupted" in _store_statuses(path)

    capsys.readouterr()
    assert main(["status", str(path)]) == 0
    assert "interrupted" in capsys.readouterr().out

    assert main(["resume", str(path)]) == 0
    resumed_out = capsys.readouterr().out
    resumed_table = resumed_out[resumed_out.rindex("trial "):]
    assert "interrupted" not in resumed_table
    rows = [line.split() for line in resumed_table.splitlines()[1:NUM_SAMPLES + 1]]
    assert [row[1] for row in rows] == ["finished"] * NUM_SAMPLES
    trials = load_study(path, "stopped").get_trials()
    assert len(trials) == NUM_SAMPLES
    assert {trial.state for trial in trials} == {COMPLETE}
    assert {trial.user_attrs["status"] for trial in trials} == {"finished"}
    assert _store_statuses(path) == ["finished"] * NUM_SAMPLES

    # Resuming a sweep whose trials have all ended prints so and starts nothing.
    capsys.readouterr()
    started = time.monotonic()
    assert main(["resume", str(path)]) == 0
    assert "nothing to resume" in capsys.readouterr().out
    assert time.monotonic() - started < 10
