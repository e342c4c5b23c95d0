"""List-valued parameters and numpy integers reach the trainer, the Tune results and the study intact."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from fakes import ScriptedFactory
from sweep_results import load_study, read_results

from sweep.launch_config import load_launch_config
from sweep.launcher import create_experiment, run_sweep
from sweep.search_space import parse_search_space

FEATURE_CHOICES = [["loss"], ["loss", "class"], ["class", "source", "loss"]]


def test_numpy_and_list_params_intact(ray_address: str, experiments: Path, tmp_path: Path) -> None:
    data = {
        "params": {
            "pool.batch_size": {"choice": [np.int64(32), np.int32(64), np.int64(128)]},
            "mts.features": {"choice": [FEATURE_CHOICES[0], tuple(FEATURE_CHOICES[1]), np.array(FEATURE_CHOICES[2])]},
            "mts.interval": {"int": [np.int64(1), np.int64(3)]},
            "seed": np.int64(0),
            "train.epochs": np.int64(2),
            "task.pool_size": 600,
        },
    }
    space, problems = parse_search_space(data, "numpy")
    assert problems == []
    config, space = load_launch_config([f"sweep.root={experiments}", "sweep.name=numpy", "sweep.num_samples=4", "sweep.searcher=random"], space=space)
    log = tmp_path / "configs.jsonl"
    summary = run_sweep(create_experiment(config, space), trainer_factory=ScriptedFactory(str(log)))
    assert summary.counts == {"finished": 4}

    for line in log.read_text().splitlines():
        received = json.loads(line)["config"]
        assert received["pool.batch_size"][1] == "int"
        assert received["pool.batch_size"][0] in (32, 64, 128)
        assert received["mts.features"][1] == "list"
        assert received["mts.features"][0] in FEATURE_CHOICES
        assert received["seed"] == [0, "int"]

    path = experiments / "numpy"
    results = read_results(path)
    trials = {trial.user_attrs["tune_trial_id"]: trial for trial in load_study(path, "numpy").get_trials()}
    assert set(trials) == set(results)
    for trial_id, rows in results.items():
        config, params = rows[-1]["config"], trials[trial_id].params
        assert config["mts.features"] in FEATURE_CHOICES
        assert json.loads(params["mts.features"]) == config["mts.features"]
        assert type(params["pool.batch_size"]) is int
        assert params["pool.batch_size"] == config["pool.batch_size"]
        assert type(params["mts.interval"]) is int
        assert params["mts.interval"] == config["mts.interval"]
        assert config["seed"] == 0
