"""`best` and `analyze` keep working while another process writes to the same SQLite database."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import sqlalchemy as sa
from analysis_data import fill_scaling_store, make_folder

from sweep.analysis.folder import open_folder
from sweep.analysis.queries import best_configurations
from sweep.analysis.report import analyze_experiment
from sweep.analysis.store import AnalysisStore

WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from sweep.analysis.store import AnalysisStore

    store = AnalysisStore(sys.argv[1])
    experiment_id = store.ensure_experiment(sys.argv[2])
    stop, deadline = Path(sys.argv[3]), time.monotonic() + 60
    trial = 0
    while not stop.exists() and time.monotonic() < deadline:
        trial += 1
        store.start_trial(experiment_id, f"w{trial}", {"pool.batch_size": 64 * (1 + trial % 4), "seed": trial % 3})
        for epoch in range(1, 6):
            store.write_report(experiment_id, f"w{trial}", epoch, {"epoch": epoch, "val_gain": 0.001 * trial, "gsnr": 1.0 + epoch})
        store.end_trial(experiment_id, f"w{trial}", "finished")
    print(trial)
    """
)


def count_reports(url: str) -> int:
    engine = sa.create_engine(url)
    with engine.connect() as connection:
        count = connection.execute(sa.text("select count(*) from analysis_reports")).scalar_one()
    engine.dispose()
    return int(count)


def test_best_and_analyze_during_writes(tmp_path: Path) -> None:
    folder = make_folder(tmp_path, "busy", searched=["pool.batch_size", "seed"])
    url = f"sqlite:///{folder / 'sweep.db'}"
    fill_scaling_store(url, "busy").close()
    stop = tmp_path / "stop"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, url, "busy", str(stop)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        start = count_reports(url)
        while count_reports(url) == start and writer.poll() is None:
            time.sleep(0.05)
        seen = []
        for _ in range(2):
            reader = AnalysisStore(url, create=False)
            started = time.monotonic()
            result = best_configurations(reader, "busy", top=3)
            seen.append(result.considered)
            reader.close()
            assert time.monotonic() - started < 5.0
            analysis, report = analyze_experiment(open_folder(folder))
            assert analysis.trials_used >= 15
            assert report.is_file()
        assert writer.poll() is None  # every read above overlapped the writer
        stop.touch()
        stdout, stderr = writer.communicate(timeout=60)
    finally:
        if writer.poll() is None:
            writer.kill()
    assert writer.returncode == 0, stderr
    written = int(stdout.strip())
    assert seen == sorted(seen)  # each read returns the trials committed so far
    assert count_reports(url) == 15 * 3 + written * 5


def test_open_read_transaction_does_not_block_writer(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sweep.db'}"
    store = AnalysisStore(url)
    experiment_id = store.ensure_experiment("held")
    store.write_report(experiment_id, "t", 1, {"val_gain": 0.1})
    reader = AnalysisStore(url, create=False)
    with reader.engine.connect() as connection:
        # An open snapshot read, like the one a slow `mtsweep analyze` keeps while it reads.
        first = connection.execute(sa.text("select count(*) from analysis_reports")).scalar_one()
        started = time.monotonic()
        for epoch in range(2, 12):
            store.write_report(experiment_id, "t", epoch, {"val_gain": 0.1 * epoch})
        assert time.monotonic() - started < 5.0
        again = connection.execute(sa.text("select count(*) from analysis_reports")).scalar_one()
        assert first == again == 1  # the reader's snapshot is unchanged
    assert len(store.reports(experiment_id)) == 11
