"""The analysis callback inside a real Ray Tune run on the session's local Ray instance."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from analysis_data import make_folder
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from sweep.analysis.callback import AnalysisCallback
from sweep.analysis.store import AnalysisStore


@pytest.fixture(scope="module")
def tune_run(ray_address: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict[str, Any]]]:
    """Three trials: `ok` trains 3 epochs, `flaky` fails once after epoch 2 and restarts, `broken` always fails."""
    from ray import tune

    root = tmp_path_factory.mktemp("tune_callback")
    folder = make_folder(root, "tiny", searched=["pool.batch_size", "kind"])
    markers = root / "markers"
    markers.mkdir()

    # Defined here so that Ray pickles it by value: workers cannot import the tests folder.
    def trainable(config: dict[str, Any]) -> None:
        attempt_marker = markers / config["kind"]
        first_attempt = not attempt_marker.exists()
        attempt_marker.touch()
        for epoch in (1, 2, 3):
            if config["kind"] == "broken" or (config["kind"] == "flaky" and first_attempt and epoch == 3):
                raise RuntimeError(f"injected failure of {config['kind']} before epoch {epoch}")
            gain = 0.01 * epoch * config["pool.batch_size"] / 64
            tune.report({"epoch": epoch, "epochs": 3, "val_gain": gain, "val_acc": 0.5 + gain, "test_acc": 0.4 + gain, "gsnr": 2.0 * epoch})

    callback = AnalysisCallback(f"sqlite:///{folder / 'sweep.db'}", "tiny", folder, ["pool.batch_size", "kind"])
    space = {"kind": tune.grid_search(["ok", "flaky", "broken"]), "pool.batch_size": 64}
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1}),
        param_space=space,
        tune_config=tune.TuneConfig(max_concurrent_trials=2, reuse_actors=False),
        run_config=tune.RunConfig(
            name="tune", storage_path=str(folder), callbacks=[callback], failure_config=tune.FailureConfig(max_failures=1), verbose=0
        ),
    )
    grid = tuner.fit()
    kinds = {result.config["kind"]: result.metrics.get("trial_id") for result in grid}
    store = AnalysisStore(f"sqlite:///{folder / 'sweep.db'}", create=False)
    experiment = store.experiment("tiny")
    assert experiment is not None
    trials = {trial["params"]["kind"]: {**trial, "reports": store.reports(experiment.id, trial["trial_id"])} for trial in store.trials(experiment.id)}
    assert set(trials) == set(kinds)
    return folder, trials


def test_tune_run_stores_every_report_once(tune_run: tuple[Path, dict[str, dict[str, Any]]]) -> None:
    _, trials = tune_run
    assert [report["epoch"] for report in trials["ok"]["reports"]] == [1, 2, 3]
    # The flaky trial reported epochs 1 and 2 twice (no checkpoint, so it restarted from scratch).
    assert [report["epoch"] for report in trials["flaky"]["reports"]] == [1, 2, 3]
    assert trials["broken"]["reports"] == []


def test_tune_run_records_statuses(tune_run: tuple[Path, dict[str, dict[str, Any]]]) -> None:
    _, trials = tune_run
    assert trials["ok"]["status"] == "finished"
    assert trials["flaky"]["status"] == "finished"
    assert trials["flaky"]["num_failures"] == 1
    assert "injected failure of flaky" in trials["flaky"]["failure_reason"]
    assert trials["broken"]["status"] == "errored"
    assert trials["broken"]["num_failures"] == 2
    assert "injected failure of broken before epoch 1" in trials["broken"]["failure_reason"]
    assert trials["ok"]["node"] == "127.0.0.1"
    assert trials["ok"]["best_val_gain"] == pytest.approx(0.03)


def test_tune_run_writes_scalars(tune_run: tuple[Path, dict[str, dict[str, Any]]]) -> None:
    folder, trials = tune_run
    for kind in ("ok", "flaky"):
        events = EventAccumulator(str(folder / "tensorboard" / f"trial_{trials[kind]['trial_id']}"))
        events.Reload()
        assert [event.step for event in events.Scalars("val_gain")] == [1, 2, 3], kind
        assert [event.value for event in events.Scalars("gsnr")] == pytest.approx([2.0, 4.0, 6.0]), kind
