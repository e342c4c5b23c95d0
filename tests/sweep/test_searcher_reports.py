"""Intermediate values reach the Optuna study once per epoch, also when a resumed trial replays epochs."""

from __future__ import annotations

import warnings
from pathlib import Path

import optuna

from sweep.search_space import parse_search_space
from sweep.searcher import SweepSearch


def _searcher(database: Path) -> SweepSearch:
    space, problems = parse_search_space({"params": {"mts.lr": {"float": [0.001, 0.1], "log": True}}}, "test space")
    assert not problems
    storage = optuna.storages.RDBStorage(f"sqlite:///{database}")
    return SweepSearch(space, metrics=["val_gain"], modes=["max"], sampler=optuna.samplers.RandomSampler(seed=0),
                       storage=storage, study_name="reports")


def test_replayed_epochs_reported_once(tmp_path: Path) -> None:
    searcher = _searcher(tmp_path / "sweep.db")
    assert searcher.suggest("t1") is not None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Optuna warns when a step is reported twice
        for epoch, value in [(1, 0.1), (2, 0.2), (1, 0.9), (2, 0.9), (3, 0.3)]:
            searcher.on_trial_result("t1", {"val_gain": value, "epoch": epoch, "training_iteration": 99})
        # A diverged trial's last result repeats its last epoch's values at the next epoch.
        searcher.on_trial_result("t1", {"val_gain": 0.3, "epoch": 4, "diverged": True})

    trial = optuna.load_study(study_name="reports", storage=f"sqlite:///{tmp_path / 'sweep.db'}").get_trials()[0]
    assert trial.intermediate_values == {1: 0.1, 2: 0.2, 3: 0.3}


def test_restarted_driver_skips_stored_epochs(tmp_path: Path) -> None:
    first = _searcher(tmp_path / "sweep.db")
    assert first.suggest("t1") is not None
    first.on_trial_result("t1", {"val_gain": 0.1, "epoch": 1})
    first.on_trial_result("t1", {"val_gain": 0.2, "epoch": 2})
    state = tmp_path / "searcher.pkl"
    first.save(str(state))

    # Epoch 3 reaches the study after the state was saved, as when a driver is killed.
    first.on_trial_result("t1", {"val_gain": 0.3, "epoch": 3})
    second = _searcher(tmp_path / "sweep.db")
    second.restore(str(state))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        second.on_trial_result("t1", {"val_gain": 0.5, "epoch": 2})
        second.on_trial_result("t1", {"val_gain": 0.5, "epoch": 3})
        second.on_trial_result("t1", {"val_gain": 0.4, "epoch": 4})

    trial = optuna.load_study(study_name="reports", storage=f"sqlite:///{tmp_path / 'sweep.db'}").get_trials()[0]
    assert trial.intermediate_values == {1: 0.1, 2: 0.2, 3: 0.3, 4: 0.4}
