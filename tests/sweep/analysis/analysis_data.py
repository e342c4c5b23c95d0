"""Known data for the analysis tests: experiment folders, a store with hand-made trials, fake Tune trials."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Optional

import numpy as np
import yaml

from sweep.analysis.store import AnalysisStore

SEARCHED = ["pool.batch_size", "mts.features", "seed"]

# trial id -> (pool.batch_size, mts.features, seed, final status, val_gain per epoch).
# Test accuracy is 0.9 - val_gain, so ranking by a test metric would reverse the order.
KNOWN_TRIALS: dict[str, tuple[int, list[str], int, str, list[float]]] = {
    "a": (64, ["loss"], 0, "finished", [0.01, 0.05, 0.03]),
    "b": (64, ["loss", "class"], 0, "finished", [0.02, 0.04, 0.08]),
    "c": (256, ["loss"], 0, "finished", [0.10, 0.06, 0.07]),
    "d": (256, ["loss", "class"], 1, "finished", [0.03, 0.09, 0.02]),
    "e": (1024, ["loss", "class"], 1, "diverged", [0.20]),
    "f": (1024, ["loss"], 1, "pruned", [0.07]),
}
REFERENCE_VAL_ACC = 0.5
REFERENCE_TEST_ACC = 0.5


def make_folder(root: Path, name: str, searched: list[str] = SEARCHED, url: Optional[str] = None) -> Path:
    """Write an experiment folder with the `config.yaml` keys the analysis commands read."""
    folder = root / name
    (folder / "tensorboard").mkdir(parents=True, exist_ok=True)
    params: dict[str, Any] = {path: {"choice": [0]} for path in searched}
    params["train.epochs"] = {"value": 3}
    config = {"sweep": {"name": name, "metric": "val_gain", "mode": "max"}, "storage": {"url": url}, "space": {"name": name, "params": params}}
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    return folder


def epoch_result(epoch: int, val_gain: float, epochs: int = 3, gsnr: float = 1.0, noise_scale: float = 100.0) -> dict[str, Any]:
    """Return a Tune-like result of one epoch; test accuracy is 0.9 - val_gain."""
    test_acc = 0.9 - val_gain
    return {
        "epoch": epoch, "epochs": epochs, "val_gain": val_gain, "val_acc": REFERENCE_VAL_ACC + val_gain,
        "test_acc": test_acc, "test_gain": test_acc - REFERENCE_TEST_ACC, "gsnr": gsnr, "noise_scale": noise_scale,
        "samples_per_sec": 100.0 + epoch, "wall_time": float(epoch), "status": "running", "diverged": False,
        "node_ip": "127.0.0.1",
    }


def fill_known_store(url: str, name: str) -> AnalysisStore:
    """Fill a store with `KNOWN_TRIALS` through the public write API."""
    store = AnalysisStore(url)
    experiment_id = store.ensure_experiment(name, None, "val_gain", "max", SEARCHED)
    for trial_id, (batch_size, features, seed, status, gains) in KNOWN_TRIALS.items():
        store.start_trial(experiment_id, trial_id, {"pool.batch_size": batch_size, "mts.features": features, "seed": seed})
        for epoch, gain in enumerate(gains, 1):
            store.write_report(experiment_id, trial_id, epoch, epoch_result(epoch, gain))
        store.end_trial(experiment_id, trial_id, status)
    return store


def fill_scaling_store(url: str, name: str, exponent: float = 0.7, coefficient: float = 0.5, seed: int = 0) -> AnalysisStore:
    """Fill a store with a batch-scaling sweep: GSNR = c * B**a with 5% log-normal noise, best gain at 256."""
    rng = np.random.default_rng(seed)
    store = AnalysisStore(url)
    experiment_id = store.ensure_experiment(name, None, "val_gain", "max", ["pool.batch_size", "seed"])
    for batch_size in (32, 64, 128, 256, 512):
        for run_seed in range(3):
            trial_id = f"b{batch_size}_s{run_seed}"
            store.start_trial(experiment_id, trial_id, {"pool.batch_size": batch_size, "seed": run_seed, "mts.features": ["loss", "class"]})
            gsnr = coefficient * batch_size**exponent * math.exp(rng.normal(0.0, 0.05))
            gain = 0.05 - 0.01 * abs(math.log2(batch_size / 256)) + rng.normal(0.0, 0.002)
            for epoch in (1, 2, 3):
                store.write_report(experiment_id, trial_id, epoch, epoch_result(epoch, gain, gsnr=gsnr, noise_scale=200.0))
            store.end_trial(experiment_id, trial_id, "finished")
    return store


@dataclasses.dataclass
class FakeLocation:
    hostname: Optional[str] = "127.0.0.1"


@dataclasses.dataclass
class FakeState:
    location: FakeLocation = dataclasses.field(default_factory=FakeLocation)


@dataclasses.dataclass
class FakeTrial:
    """The attributes of `ray.tune.experiment.Trial` that the analysis callback reads."""

    trial_id: str
    config: dict[str, Any]
    last_result: dict[str, Any] = dataclasses.field(default_factory=dict)
    num_failures: int = 0
    error_file: Optional[str] = None
    status: str = "RUNNING"
    temporary_state: FakeState = dataclasses.field(default_factory=FakeState)
