"""Failure policy: retried-then-errored trials, diverged trials and ASHA-pruned trials, with the
other trials finishing and every outcome recorded in Ray Tune and in the Optuna study."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import yaml
from fakes import FaultFactory, ScriptedFactory
from sweep_results import load_study, read_results

from sweep.analysis.store import AnalysisStore
from sweep.cli import main
from sweep.launch_config import load_launch_config
from sweep.launcher import create_experiment, run_sweep

FAIL, PRUNED, COMPLETE = optuna.trial.TrialState.FAIL, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.COMPLETE
SMALL = {
    "task.pool_size": 600,
    "task.val_size": 200,
    "task.test_size": 200,
    "mts.meta_batch_size": 50,
    "gsnr.draws": 4,
    "gsnr.per_sample_batch": 32,
    "pool.batch_size": 64,
}


def _space_file(folder: Path, params: dict, sweep: dict) -> Path:
    path = folder / "space.yaml"
    path.write_text(yaml.safe_dump({"params": {**SMALL, **params}, "sweep": sweep}))
    return path


def test_errored_and_diverged_trials_recorded(ray_address: str, experiments: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    space = _space_file(tmp_path, {"seed": {"choice": [0, 1, 2, 3]}, "train.epochs": 3}, {"searcher": "grid", "num_samples": 4})
    config, space = load_launch_config([f"search_space={space}", f"sweep.root={experiments}", "sweep.name=faults", "sweep.max_failures=1"])
    log = tmp_path / "attempts.jsonl"
    # Seed 0 raises after one epoch of every attempt, and seed 1 gets NaN parameters after epoch 1.
    # Seed 3 raises ConfigError before it trains.
    factory = FaultFactory(str(log), {0: "raise", 1: "nan", 3: "config"})
    summary = run_sweep(create_experiment(config, space), trainer_factory=factory)

    assert summary.counts == {"errored": 2, "diverged": 1, "finished": 1}
    attempts = [json.loads(line) for line in log.read_text().splitlines()]
    starts = {seed: [a["start_epoch"] for a in attempts if a["seed"] == seed] for seed in (0, 1, 2, 3)}
    assert starts[0] == [0, 1]  # one retry (max_failures=1), resumed from the epoch-1 checkpoint
    assert starts[1] == [0]  # diverged trials are not retried
    assert starts[2] == [0]
    assert starts[3] == [None]  # an invalid config is not retried either

    path = experiments / "faults"
    results = read_results(path)
    by_seed = {rows[-1]["config"]["seed"]: rows for rows in results.values() if rows}
    assert by_seed[1][-1]["diverged"] is True
    assert by_seed[1][-1]["status"] == "diverged"
    assert by_seed[1][-1]["epoch"] == 2
    assert [row["epoch"] for row in by_seed[2]] == [1, 2, 3]
    assert by_seed[3][-1]["errored"] is True
    assert "injected invalid value" in by_seed[3][-1]["error"]

    states = {trial.params["seed"]: (trial.state, trial.user_attrs["status"]) for trial in load_study(path, "faults").get_trials()}
    assert states == {0: (FAIL, "errored"), 1: (FAIL, "diverged"), 2: (COMPLETE, "finished"), 3: (FAIL, "errored")}
    # Each epoch of the finished trial reached Optuna once, at its epoch number.
    finished = [trial for trial in load_study(path, "faults").get_trials() if trial.params["seed"] == 2]
    assert sorted(finished[0].intermediate_values) == [1, 2, 3]

    # mtsweep status lists each errored or diverged trial with its reason under the counts.
    capsys.readouterr()
    assert main(["status", str(path)]) == 0
    status_lines = capsys.readouterr().out.splitlines()
    assert any("errored: " in line and "injected invalid value" in line for line in status_lines)
    assert any("diverged: " in line for line in status_lines)

    store = AnalysisStore(f"sqlite:///{path / 'sweep.db'}", create=False)
    experiment = store.experiment("faults")
    assert experiment is not None
    stored = {trial["params"]["seed"]: trial for trial in store.trials(experiment.id)}
    store.close()
    assert stored[3]["status"] == "errored"
    assert "injected invalid value" in stored[3]["failure_reason"]
    assert stored[3]["num_reports"] in (0, None)


def test_asha_stopped_trials_pruned_in_study(ray_address: str, experiments: Path, tmp_path: Path) -> None:
    params = {"mts.lr": {"float": [0.001, 0.1], "log": True}, "train.epochs": 4, "seed": 0}
    space = _space_file(tmp_path, params, {"searcher": "random", "num_samples": 8})
    overrides = [
        f"search_space={space}", f"sweep.root={experiments}", "sweep.name=asha", "sweep.scheduler=asha",
        "sweep.asha_reduction_factor=2", "sweep.max_concurrent_trials=2",
    ]
    config, space = load_launch_config(overrides)
    # Scripted trials: val_acc = 0.5 + mts.lr * epoch, so ASHA compares trials by their mts.lr.
    run_sweep(create_experiment(config, space), trainer_factory=ScriptedFactory(epoch_seconds=0.3))

    path = experiments / "asha"
    results = read_results(path)
    assert len(results) == 8
    stopped = {trial_id for trial_id, rows in results.items() if rows[-1]["epoch"] < 4}
    assert stopped, "ASHA stopped no trial; the scripted metrics should make it stop some"
    trials = {trial.user_attrs["tune_trial_id"]: trial for trial in load_study(path, "asha").get_trials()}
    assert set(trials) == set(results)
    for trial_id, trial in trials.items():
        if trial_id in stopped:
            assert trial.state == PRUNED, trial_id
            assert trial.user_attrs["status"] == "pruned"
        else:
            assert trial.state == COMPLETE, trial_id
    assert sum(trial.state == PRUNED for trial in trials.values()) == len(stopped)


@pytest.mark.parametrize(("counts", "code"), [({"finished": 1, "errored": 1}, 1), ({"finished": 1, "diverged": 1}, 0), ({"finished": 2}, 0)])
def test_report_exit_code_by_status(capsys: pytest.CaptureFixture[str], counts: dict[str, int], code: int) -> None:
    from sweep.cli import _report
    from sweep.launcher import SweepSummary

    failures = [("abc123", status, "boom") for status in counts if status in ("errored", "diverged")]
    assert _report(SweepSummary(path=Path("/x"), num_samples=2, counts=counts, failures=failures)) == code
    out = capsys.readouterr().out
    for _, status, _ in failures:
        assert f"trial abc123 {status}: boom" in out
    assert ("1 trial(s) errored" in out) == (code == 1)
