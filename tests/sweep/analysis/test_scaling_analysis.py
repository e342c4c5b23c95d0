"""Scaling analysis: confidence intervals, the power-law fit, importances, the report and its files."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import optuna
import pytest
from analysis_data import epoch_result, fill_scaling_store, make_folder
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from sweep.analysis import scaling
from sweep.analysis.errors import AnalysisError
from sweep.analysis.folder import open_folder
from sweep.analysis.report import analyze_experiment
from sweep.analysis.scaling import fit_power_law, mean_interval, parameter_importances
from sweep.analysis.store import AnalysisStore


def test_power_law_recovers_known_exponent() -> None:
    rng = np.random.default_rng(3)
    batch_sizes = np.repeat([32, 64, 128, 256, 512, 1024, 2048], 3)
    gsnr = 0.02 * batch_sizes**0.8 * np.exp(rng.normal(0.0, 0.1, batch_sizes.size))
    fit = fit_power_law(batch_sizes, gsnr)
    assert abs(fit.exponent - 0.8) / 0.8 < 0.05
    assert fit.coefficient == pytest.approx(0.02, rel=0.3)
    assert fit.r_squared > 0.95
    assert fit.points == 21
    assert fit.exponent - fit.exponent_half_width < 0.8 < fit.exponent + fit.exponent_half_width


def test_power_law_exact_points() -> None:
    fit = fit_power_law([10, 100, 1000], [3.0, 30.0, 300.0])
    assert fit.exponent == pytest.approx(1.0)
    assert fit.coefficient == pytest.approx(0.3)
    assert fit.r_squared == pytest.approx(1.0)


def test_power_law_needs_two_batch_sizes() -> None:
    with pytest.raises(AnalysisError, match="two or more distinct x"):
        fit_power_law([64, 64, 64], [1.0, 1.1, 0.9])
    with pytest.raises(AnalysisError, match="two or more distinct x"):
        fit_power_law([64, 128], [1.0, -1.0])


@pytest.mark.parametrize(("batch_sizes", "warned"), [([64, 256], True), ([64, 128, 256], False)])
def test_gsnr_fit_on_two_batch_sizes_noted(batch_sizes: list[int], warned: bool) -> None:
    trials = [{"params": {"pool.batch_size": b}, "last_gsnr": 0.01 * b * (1 + 0.1 * seed)} for b in batch_sizes for seed in range(2)]
    notes: list[str] = []
    fit = scaling._gsnr_fit(trials, "pool.batch_size", notes)
    assert fit is not None
    assert any("rests on 2 distinct pool.batch_size values" in note for note in notes) == warned


def test_mean_interval_matches_t_table() -> None:
    interval = mean_interval([1.0, 2.0, 3.0])
    # Standard error 1/sqrt(3); t(0.975, 2 degrees of freedom) = 4.3027.
    assert interval.mean == pytest.approx(2.0)
    assert interval.half_width == pytest.approx(4.3027 / math.sqrt(3), rel=1e-4)
    single = mean_interval([5.0, float("nan")])
    assert single.n == 1
    assert math.isnan(single.half_width)


def test_analyze_writes_report_plots_and_scaling_run(tmp_path: Path) -> None:
    folder = make_folder(tmp_path, "batch", searched=["pool.batch_size", "seed"])
    fill_scaling_store(f"sqlite:///{folder / 'sweep.db'}", "batch", exponent=0.7).close()
    result, report = analyze_experiment(open_folder(folder))
    assert [point.x for point in result.points] == [32, 64, 128, 256, 512]
    assert all(point.trials == 3 for point in result.points)
    assert result.gsnr_fit is not None
    assert abs(result.gsnr_fit.exponent - 0.7) / 0.7 < 0.05
    assert result.best_x == 256
    assert result.noise_scale_median == pytest.approx(200.0)
    assert result.predicted_x == 256
    text = report.read_text()
    assert "| 256 | 3 | 0, 1, 2 |" in text
    assert "no Optuna study named 'batch'" in text
    for name in ("gsnr_scaling.png", "gain_scaling.png"):
        assert (folder / "analysis" / name).stat().st_size > 1000
    events = EventAccumulator(str(folder / "tensorboard" / "scaling"))
    events.Reload()
    gsnr = {event.step: event.value for event in events.Scalars("scaling/gsnr")}
    assert sorted(gsnr) == [32, 64, 128, 256, 512]
    assert gsnr[256] == pytest.approx(result.points[3].values["gsnr"].mean, rel=1e-5)
    fitted = {event.step: event.value for event in events.Scalars("scaling/gsnr_fit")}
    assert fitted[512] == pytest.approx(result.gsnr_fit(512), rel=1e-5)
    assert {"scaling/val_gain", "scaling/test_gain", "scaling/val_gain_low"} <= set(events.Tags()["scalars"])


def test_analyze_where_stated_in_report(tmp_path: Path) -> None:
    folder = make_folder(tmp_path, "batch", searched=["pool.batch_size", "seed"])
    fill_scaling_store(f"sqlite:///{folder / 'sweep.db'}", "batch", exponent=0.7).close()
    result, report = analyze_experiment(open_folder(folder), where=["seed=0"])
    assert all(point.trials == 1 for point in result.points)
    assert result.trials_filtered_out == 10
    assert "Filtered by `--where seed=0`: 10 trials of the experiment left out." in report.read_text()


def test_analyze_twice_keeps_one_value_per_step(tmp_path: Path) -> None:
    folder = make_folder(tmp_path, "twice", searched=["pool.batch_size", "seed"])
    fill_scaling_store(f"sqlite:///{folder / 'sweep.db'}", "twice").close()
    analyze_experiment(open_folder(folder))
    analyze_experiment(open_folder(folder))
    events = EventAccumulator(str(folder / "tensorboard" / "scaling"))
    events.Reload()
    assert [event.step for event in events.Scalars("scaling/gsnr")] == [32, 64, 128, 256, 512]


def _study(url: str, name: str, trials: int) -> None:
    study = optuna.create_study(study_name=name, storage=url, direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(trials):
        trial = study.ask()
        batch = trial.suggest_categorical("pool.batch_size", [32, 128, 512])
        lr = trial.suggest_float("mts.lr", 1e-4, 1e-2, log=True)
        study.tell(trial, math.log2(batch) + 0.01 * math.log10(lr))


def test_importances_rank_the_parameter_that_matters(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    _study(url, "imp", 16)
    notes: list[str] = []
    importances = parameter_importances(url, "imp", ["pool.batch_size", "mts.lr"], notes)
    assert notes == []
    assert set(importances) == {"fANOVA", "PED-ANOVA"}
    for evaluator, values in importances.items():
        assert values["pool.batch_size"] > values["mts.lr"], evaluator


def test_fanova_samples_large_studies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    _study(url, "large", 16)
    monkeypatch.setattr(scaling, "FANOVA_MAX_TRIALS", 8)
    notes: list[str] = []
    importances = parameter_importances(url, "large", ["pool.batch_size", "mts.lr"], notes)
    assert notes == ["fANOVA ran on a random sample of 8 of the 16 completed trials, because its cost grows faster than linearly with trials"]
    assert set(importances["fANOVA"]) == {"pool.batch_size", "mts.lr"}


def test_importances_skipped_with_note(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    _study(url, "one", 1)
    notes: list[str] = []
    assert parameter_importances(url, "one", ["pool.batch_size", "mts.lr"], notes) == {}
    assert "the study has 1 completed trial(s)" in notes[0]
    notes = []
    _study(url, "single", 6)
    assert parameter_importances(url, "single", ["pool.batch_size"], notes) == {}
    assert "1 parameter(s) vary (pool.batch_size)" in notes[0]


def test_analyze_float_key_skips_tensorboard(tmp_path: Path) -> None:
    folder = make_folder(tmp_path, "lr", searched=["mts.lr"])
    store = AnalysisStore(f"sqlite:///{folder / 'sweep.db'}")
    experiment_id = store.ensure_experiment("lr", None, "val_gain", "max", ["mts.lr"])
    for index, lr in enumerate((0.001, 0.01, 0.1)):
        store.start_trial(experiment_id, f"t{index}", {"mts.lr": lr})
        store.write_report(experiment_id, f"t{index}", 1, epoch_result(1, 0.01 * index, epochs=1))
        store.end_trial(experiment_id, f"t{index}", "finished")
    store.close()
    result, report = analyze_experiment(open_folder(folder), x_key="mts.lr")
    assert [point.x for point in result.points] == [0.001, 0.01, 0.1]
    assert result.best_x == 0.1
    assert "mts.lr takes non-integer values" in report.read_text()
    assert not (folder / "tensorboard" / "scaling").exists()
    # The noise scale is a batch size: it predicts nothing about a learning rate.
    assert result.predicted_x is None
    assert "noise scale" not in report.read_text()


def test_analyze_non_numeric_key_rejected(tmp_path: Path) -> None:
    folder = make_folder(tmp_path, "features", searched=["mts.features"])
    store = AnalysisStore(f"sqlite:///{folder / 'sweep.db'}")
    experiment_id = store.ensure_experiment("features", None, "val_gain", "max", ["mts.features"])
    for index, features in enumerate((["loss"], ["loss", "class"])):
        store.start_trial(experiment_id, f"t{index}", {"mts.features": features})
        store.write_report(experiment_id, f"t{index}", 1, epoch_result(1, 0.01 * index, epochs=1))
        store.end_trial(experiment_id, f"t{index}", "finished")
    store.close()
    with pytest.raises(AnalysisError, match="--x mts.features has no numeric value"):
        analyze_experiment(open_folder(folder), x_key="mts.features")
    assert not (folder / "analysis" / "report.md").exists()
