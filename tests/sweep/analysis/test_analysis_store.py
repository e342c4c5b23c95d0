"""The analysis store: idempotent upserts, the per-trial summary, SQLite settings, PostgreSQL SQL."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from analysis_data import epoch_result
from sqlalchemy.dialects import postgresql

from sweep.analysis.store import AnalysisStore, _upsert_statement, reports_table


@pytest.fixture()
def store(tmp_path: Path) -> AnalysisStore:
    return AnalysisStore(f"sqlite:///{tmp_path / 'sweep.db'}")


def test_resumed_trial_leaves_each_report_once(store: AnalysisStore) -> None:
    experiment_id = store.ensure_experiment("resume")
    store.start_trial(experiment_id, "t", {"pool.batch_size": 64})
    for epoch in (1, 2, 3):
        assert store.write_report(experiment_id, "t", epoch, epoch_result(epoch, 0.01 * epoch))
    # The driver was killed; the restored trial reports epochs 2 and 3 again, then 4.
    store.start_trial(experiment_id, "t", {"pool.batch_size": 64})
    assert not store.write_report(experiment_id, "t", 2, epoch_result(2, 0.02))
    assert not store.write_report(experiment_id, "t", 3, epoch_result(3, 0.03))
    assert store.write_report(experiment_id, "t", 4, epoch_result(4, 0.04, epochs=4))
    epochs = [report["epoch"] for report in store.reports(experiment_id, "t")]
    assert epochs == [1, 2, 3, 4]
    (trial,) = store.trials(experiment_id)
    assert trial["num_reports"] == 4
    assert trial["best_epoch"] == 4
    assert trial["last_epoch"] == 4


def test_changed_report_recomputes_summary(store: AnalysisStore) -> None:
    experiment_id = store.ensure_experiment("rerun")
    for epoch, gain in ((1, 0.01), (2, 0.09), (3, 0.05)):
        store.write_report(experiment_id, "t", epoch, epoch_result(epoch, gain))
    # A retried attempt without a checkpoint trains epoch 2 again and measures less.
    store.write_report(experiment_id, "t", 2, epoch_result(2, 0.02))
    (trial,) = store.trials(experiment_id)
    assert trial["best_epoch"] == 3
    assert trial["best_val_gain"] == pytest.approx(0.05)
    assert trial["best_test_acc"] == pytest.approx(0.85)
    assert trial["num_reports"] == 3
    assert len(store.reports(experiment_id)) == 3


def test_summary_tracks_best_epoch_and_last_gsnr(store: AnalysisStore) -> None:
    experiment_id = store.ensure_experiment("summary")
    store.start_trial(experiment_id, "t", {"seed": 0})
    store.write_report(experiment_id, "t", 1, epoch_result(1, 0.02, gsnr=2.0))
    store.write_report(experiment_id, "t", 2, epoch_result(2, 0.06, gsnr=3.0))
    store.write_report(experiment_id, "t", 3, epoch_result(3, 0.04, gsnr=float("nan")))
    (trial,) = store.trials(experiment_id)
    assert trial["best_epoch"] == 2
    assert trial["best_val_gain"] == pytest.approx(0.06)
    assert trial["best_test_acc"] == pytest.approx(0.84)  # test accuracy of epoch 2, not the best test
    assert trial["last_val_gain"] == pytest.approx(0.04)
    assert trial["last_gsnr"] == pytest.approx(3.0)  # NaN at epoch 3 keeps the last measurement
    assert trial["last_gsnr_epoch"] == 2
    assert trial["last_metrics"]["samples_per_sec"] == pytest.approx(103.0)


def test_ensure_experiment_is_idempotent(store: AnalysisStore) -> None:
    first = store.ensure_experiment("twice", "/runs/twice", "val_gain", "max", ["seed"])
    assert store.ensure_experiment("twice") == first
    record = store.experiment("twice")
    assert record is not None
    assert record.searched_params == ("seed",)  # a caller that knows less erases nothing
    assert record.path == "/runs/twice"


def test_end_trial_records_status_and_reason(store: AnalysisStore) -> None:
    experiment_id = store.ensure_experiment("ends")
    store.start_trial(experiment_id, "t", {"seed": 0})
    store.end_trial(experiment_id, "t", "errored", failure_reason="RuntimeError: boom", num_failures=3)
    (trial,) = store.trials(experiment_id)
    assert trial["status"] == "errored"
    assert trial["failure_reason"] == "RuntimeError: boom"
    assert trial["num_failures"] == 3
    assert trial["ended_at"] is not None
    with pytest.raises(ValueError, match="not a trial status"):
        store.end_trial(experiment_id, "t", "exploded")


def test_diverged_report_marks_trial(store: AnalysisStore) -> None:
    experiment_id = store.ensure_experiment("nan")
    result = {**epoch_result(2, 0.01), "diverged": True, "status": "diverged", "error": "loss is nan at step 7", "train_loss": float("nan")}
    store.write_report(experiment_id, "t", 2, result)
    (trial,) = store.trials(experiment_id)
    assert trial["status"] == "diverged"
    assert trial["failure_reason"] == "loss is nan at step 7"
    (report,) = store.reports(experiment_id)
    assert report["train_loss"] is None


def test_sqlite_uses_wal_and_busy_timeout(store: AnalysisStore) -> None:
    with store.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000


def test_reader_does_not_create_tables(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    reader = AnalysisStore(url, create=False)
    assert reader.experiment("anything") is None
    assert not sa.inspect(reader.engine).has_table("analysis_trials")


def test_postgresql_upsert_compiles_on_conflict() -> None:
    columns = ("experiment_id", "trial_id", "epoch", "val_gain")
    statement = _upsert_statement("postgresql", reports_table, columns, ("val_gain",))
    sql = str(statement.compile(dialect=postgresql.dialect()))
    assert "INSERT INTO analysis_reports (experiment_id, trial_id, epoch, val_gain)" in sql
    assert "ON CONFLICT (experiment_id, trial_id, epoch) DO UPDATE SET val_gain = excluded.val_gain" in sql
    keep = _upsert_statement("postgresql", reports_table, columns, ())
    assert "ON CONFLICT (experiment_id, trial_id, epoch) DO NOTHING" in str(keep.compile(dialect=postgresql.dialect()))
