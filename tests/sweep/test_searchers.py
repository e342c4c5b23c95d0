"""Two-objective NSGA-II search and fractional CPUs per trial."""

from __future__ import annotations

from pathlib import Path

import optuna
import yaml
from fakes import ScriptedFactory
from sweep_results import load_study, peak_concurrency, read_results

from sweep.launch_config import load_launch_config
from sweep.launcher import create_experiment, run_sweep


def test_nsga2_half_cpu_trials(ray_address: str, experiments: Path, tmp_path: Path) -> None:
    space = tmp_path / "space.yaml"
    params = {"mts.lr": {"float": [0.001, 0.1], "log": True}, "train.epochs": 3, "seed": 0, "task.pool_size": 600}
    space.write_text(yaml.safe_dump({"params": params}))
    overrides = [
        f"search_space={space}", f"sweep.root={experiments}", "sweep.name=nsga2", "sweep.searcher=nsga2",
        "sweep.metric2=wall_time", "sweep.mode2=min", "sweep.num_samples=4", "sweep.cpus_per_trial=0.5",
    ]
    config, space = load_launch_config(overrides)
    summary = run_sweep(create_experiment(config, space), trainer_factory=ScriptedFactory(epoch_seconds=1.0))
    assert summary.counts == {"finished": 4}

    path = experiments / "nsga2"
    study = load_study(path, "nsga2")
    assert study.directions == [optuna.study.StudyDirection.MAXIMIZE, optuna.study.StudyDirection.MINIMIZE]
    results = read_results(path)
    for trial in study.get_trials():
        rows = results[trial.user_attrs["tune_trial_id"]]
        assert trial.values == [rows[-1]["val_gain"], rows[-1]["wall_time"]]

    # Half a CPU per trial on 2 CPUs: up to four trials at once, each with one torch thread.
    intervals = [(rows[0]["trial_started_at"], rows[-1]["reported_at"]) for rows in results.values()]
    assert peak_concurrency(intervals) >= 3
