"""The trainer: every method on every bundled task, exact resume, reports and selection."""

from __future__ import annotations

import dataclasses
import math

import pytest
from small_runs import make_small

from mts import ConfigError, DivergenceError, Reference, RunConfig, Trainer
from mts.config import METHODS, TaskConfig
from mts.tasks import build_task

SMALL_TASKS = {
    "mnist1d_shift": TaskConfig(name="mnist1d_shift", pool_size=600, meta_size=40, val_size=100, test_size=100),
    "digits_synth": TaskConfig(name="digits_synth", pool_size=600, meta_size=40, val_size=100, test_size=100, seed_size=200),
}
TIMING_FIELDS = ("samples_per_sec", "wall_time")


def small_config(method: str, task: str = "mnist1d_shift", **changes) -> RunConfig:
    config = RunConfig(method=method, task=dataclasses.replace(SMALL_TASKS[task]))
    return make_small(config, **changes)


@pytest.fixture(scope="module")
def tasks():
    return {name: build_task(task) for name, task in SMALL_TASKS.items()}


@pytest.mark.parametrize("task_name", sorted(SMALL_TASKS))
@pytest.mark.parametrize("method", METHODS)
def test_method_runs_two_epochs(tasks, task_name, method):
    reports = list(Trainer(small_config(method, task_name), task=tasks[task_name]))
    assert [report.epoch for report in reports] == [1, 2]
    last = reports[-1]
    assert 0.0 <= last.val_acc <= 1.0
    assert math.isfinite(last.train_loss)
    assert last.steps == 2 * (len(Trainer(small_config(method, task_name), task=tasks[task_name]).trainable) // 128)
    if method in ("mts", "mwnet"):
        assert math.isfinite(last.gsnr)
        assert math.isfinite(last.gsnr_per_sample)
        assert not math.isnan(last.noise_scale)
        assert math.isfinite(last.meta_loss)
    else:
        assert math.isnan(last.gsnr)
    if method != "oracle":
        assert 0.0 <= last.weight_auc <= 1.0


@pytest.mark.parametrize("gradient", ["exact", "finite_difference"])
def test_resume_reproduces_next_epoch(tasks, tmp_path, gradient):
    config = small_config("mts", train__epochs=3, mts__gradient=gradient)
    uninterrupted = list(Trainer(config, task=tasks["mnist1d_shift"]))

    first = Trainer(config, task=tasks["mnist1d_shift"])
    first.run_epoch()
    first.run_epoch()
    first.save(tmp_path / "state.pt")
    resumed = Trainer(config, task=tasks["mnist1d_shift"])
    resumed.load(tmp_path / "state.pt")
    third = resumed.run_epoch()

    expected = {key: value for key, value in uninterrupted[2].to_dict().items() if key not in TIMING_FIELDS}
    actual = {key: value for key, value in third.to_dict().items() if key not in TIMING_FIELDS}
    assert actual == expected


def test_best_model_is_chosen_by_validation(tasks):
    trainer = Trainer(small_config("uniform", train__epochs=4), task=tasks["mnist1d_shift"])
    reports = list(trainer)
    best = max(reports, key=lambda report: report.val_acc)
    assert reports[-1].best_epoch == best.epoch
    assert reports[-1].best_test_acc == best.test_acc
    trainer.model.load_state_dict(trainer.best_model_state)
    assert trainer.evaluate(trainer.val)[0] == pytest.approx(best.val_acc)


def test_gains_measured_against_reference(tasks):
    reference = Reference(val_acc=0.5, test_acc=0.25)
    report = next(iter(Trainer(small_config("uniform"), task=tasks["mnist1d_shift"], reference=reference)))
    assert report.val_gain == pytest.approx(report.val_acc - 0.5)
    assert report.test_gain == pytest.approx(report.best_test_acc - 0.25)


def test_nan_loss_raises_divergence(tasks):
    config = small_config("uniform", train__lr=1e30, train__optimizer="sgd")
    with pytest.raises(DivergenceError) as caught:
        list(Trainer(config, task=tasks["mnist1d_shift"]))
    assert caught.value.epoch >= 1
    assert "lower train.lr" in str(caught.value)


def test_oracle_trains_on_faithful_samples_only(tasks):
    task = tasks["mnist1d_shift"]
    trainer = Trainer(small_config("oracle"), task=task)
    assert set(task.quality[trainer.trainable.numpy()]) == {1}


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"pool__batch_size": 100000}, "pool.batch_size=100000 is larger than the pool"),
        ({"train__lr": -0.1}, "train.lr=-0.1 must be > 0"),
        ({"mts__lr": 0.0}, "mts.lr=0.0 must be > 0"),
        ({"mts__gradient": "second_order"}, "mts.gradient='second_order' is not allowed"),
    ],
)
def test_invalid_config_names_key_and_value(tasks, changes, expected):
    with pytest.raises(ConfigError, match=expected.replace(".", r"\.").replace("(", r"\(")):
        Trainer(small_config("mts", **changes), task=tasks["mnist1d_shift"])


def test_meta_batch_larger_than_meta_set_rejected(tasks):
    with pytest.raises(ConfigError, match=r"mts\.meta_batch_size=500 is larger than the meta set \(task\.meta_size=40\)"):
        Trainer(small_config("mts", mts__meta_batch_size=500), task=tasks["mnist1d_shift"])
