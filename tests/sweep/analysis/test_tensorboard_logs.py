"""The analysis callback driven by fake trials: store rows, TensorBoard scalars and HParams agree."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from analysis_data import SEARCHED, FakeTrial, epoch_result, make_folder
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import metadata, plugin_data_pb2

from sweep.analysis.callback import AnalysisCallback, apply_dotted
from sweep.analysis.store import AnalysisStore
from sweep.analysis.tensorboard import hparam_value


def reload(folder: Path) -> EventAccumulator:
    events = EventAccumulator(str(folder))
    events.Reload()
    return events


def hparams_data(events: EventAccumulator, tag: str) -> plugin_data_pb2.HParamsPluginData:
    return plugin_data_pb2.HParamsPluginData.FromString(events.PluginTagToContent(metadata.PLUGIN_NAME)[tag])


@pytest.fixture()
def logged(tmp_path: Path) -> tuple[Path, AnalysisCallback]:
    """Two trials through the callback's hooks: one finishes, one diverges at epoch 2."""
    folder = make_folder(tmp_path, "logs")
    callback = AnalysisCallback(f"sqlite:///{folder / 'sweep.db'}", "logs", folder, SEARCHED, base_config={"pool": {"batch_size": 32}, "seed": 0})
    callback.setup()
    good = FakeTrial("good", {"pool.batch_size": np.int64(128), "mts.features": ["loss", "class"], "seed": 1, "train.epochs": 3})
    bad = FakeTrial("bad", {"pool.batch_size": 512, "mts.features": ["loss"], "seed": 0, "train.epochs": 3})
    for trial in (good, bad):
        callback.on_trial_start(0, [good, bad], trial)
    for epoch, gain in ((1, 0.02), (2, 0.05), (3, 0.04)):
        good.last_result = epoch_result(epoch, gain, gsnr=epoch * 1.5)
        callback.on_trial_result(0, [good, bad], good, good.last_result)
    bad.last_result = epoch_result(1, 0.01)
    callback.on_trial_result(0, [good, bad], bad, bad.last_result)
    bad.last_result = {**epoch_result(1, 0.01), "epoch": 2, "diverged": True, "status": "diverged", "error": "loss is nan"}
    callback.on_trial_result(0, [good, bad], bad, bad.last_result)
    for trial in (good, bad):
        callback.on_trial_complete(0, [good, bad], trial)
    callback.on_experiment_end([good, bad])
    return folder, callback


def test_scalars_match_store(logged: tuple[Path, AnalysisCallback]) -> None:
    folder, _ = logged
    store = AnalysisStore(f"sqlite:///{folder / 'sweep.db'}", create=False)
    experiment = store.experiment("logs")
    assert experiment is not None
    for trial_id in ("good", "bad"):
        events = reload(folder / "tensorboard" / f"trial_{trial_id}")
        reports = store.reports(experiment.id, trial_id)
        for tag in ("val_gain", "val_acc", "test_acc", "gsnr", "samples_per_sec"):
            logged_values = [(event.step, event.value) for event in events.Scalars(tag)]
            stored = [(report["epoch"], report[tag]) for report in reports]
            assert [step for step, _ in logged_values] == [epoch for epoch, _ in stored], (trial_id, tag)
            assert [value for _, value in logged_values] == pytest.approx([value for _, value in stored], rel=1e-6), (trial_id, tag)


def test_trial_rows_hold_status_config_node(logged: tuple[Path, AnalysisCallback]) -> None:
    folder, _ = logged
    store = AnalysisStore(f"sqlite:///{folder / 'sweep.db'}", create=False)
    trials = {trial["trial_id"]: trial for trial in store.trials(store.experiment("logs").id)}
    assert trials["good"]["status"] == "finished"
    assert trials["bad"]["status"] == "diverged"
    assert trials["bad"]["failure_reason"] == "loss is nan"
    assert trials["good"]["params"]["pool.batch_size"] == 128
    assert trials["good"]["config"]["pool"]["batch_size"] == 128  # base 32, overridden by the trial
    assert trials["good"]["node"] == "127.0.0.1"
    assert trials["good"]["best_epoch"] == 2


def test_hparams_hold_features_and_batch_size(logged: tuple[Path, AnalysisCallback]) -> None:
    folder, _ = logged
    session = hparams_data(reload(folder / "tensorboard" / "trial_good"), metadata.SESSION_START_INFO_TAG).session_start_info
    assert session.hparams["mts.features"].string_value == "loss,class"
    assert session.hparams["pool.batch_size"].number_value == 128
    assert session.hparams["seed"].number_value == 1
    assert "train.epochs" not in session.hparams  # fixed, not searched
    experiment = hparams_data(reload(folder / "tensorboard"), metadata.EXPERIMENT_TAG).experiment
    assert [info.name for info in experiment.hparam_infos] == SEARCHED
    assert {"val_gain", "test_acc", "gsnr"} <= {info.name.tag for info in experiment.metric_infos}


def test_reported_again_epoch_logged_once(tmp_path: Path) -> None:
    folder = make_folder(tmp_path, "again")
    callback = AnalysisCallback(f"sqlite:///{folder / 'sweep.db'}", "again", folder, SEARCHED)
    trial = FakeTrial("t", {"pool.batch_size": 64, "mts.features": ["loss"], "seed": 0})
    callback.on_trial_start(0, [trial], trial)
    for epoch in (1, 2):
        callback.on_trial_result(0, [trial], trial, epoch_result(epoch, 0.01 * epoch))
    # Tune pickles the callback with its state; the restored one continues the same trial.
    restored = pickle.loads(pickle.dumps(callback))
    restored.on_trial_start(0, [trial], trial)
    for epoch in (2, 3):
        restored.on_trial_result(0, [trial], trial, epoch_result(epoch, 0.01 * epoch))
    restored.on_experiment_end([trial])
    callback.on_experiment_end([trial])
    events = reload(folder / "tensorboard" / "trial_t")
    assert [event.step for event in events.Scalars("val_gain")] == [1, 2, 3]
    store = AnalysisStore(f"sqlite:///{folder / 'sweep.db'}", create=False)
    assert [report["epoch"] for report in store.reports(store.experiment("again").id)] == [1, 2, 3]


def test_errored_trial_keeps_last_error_line(tmp_path: Path) -> None:
    folder = make_folder(tmp_path, "errors")
    error_file = tmp_path / "error.txt"
    error_file.write_text("Failure # 1\nTraceback ...\nRuntimeError: injected failure after epoch 2\n")
    callback = AnalysisCallback(f"sqlite:///{folder / 'sweep.db'}", "errors", folder, SEARCHED)
    trial = FakeTrial("t", {"seed": 0}, num_failures=3, error_file=str(error_file))
    callback.on_trial_start(0, [trial], trial)
    callback.on_trial_error(0, [trial], trial)
    store = AnalysisStore(f"sqlite:///{folder / 'sweep.db'}", create=False)
    (row,) = store.trials(store.experiment("errors").id)
    assert row["status"] == "errored"
    assert row["failure_reason"] == "RuntimeError: injected failure after epoch 2"
    assert row["num_failures"] == 3


@pytest.mark.parametrize(
    ("value", "expected"),
    [(["loss", "class"], "loss,class"), (np.int64(64), 64), (np.float32(0.5), 0.5), (True, True), (None, "none"), ({"a": 1}, '{"a": 1}')],
)
def test_hparam_values_readable(value: object, expected: object) -> None:
    converted = hparam_value(value)
    assert converted == expected
    assert type(converted) is type(expected)


def test_apply_dotted_sets_nested_keys() -> None:
    base = {"pool": {"batch_size": 32, "shuffle": True}, "seed": 0}
    assert apply_dotted(base, {"pool.batch_size": 64, "mts.lr": 0.1}) == {"pool": {"batch_size": 64, "shuffle": True}, "seed": 0, "mts": {"lr": 0.1}}
    assert base["pool"]["batch_size"] == 32
