"""Speed of the analysis store: `mtsweep best` and `mtsweep analyze` on a large experiment.

    python benchmarks/analysis_speed.py            # 10,000 trials x 50 reports
    python benchmarks/analysis_speed.py --quick    # 1,000 trials x 20 reports

The script builds an experiment folder in a temporary directory: a `config.yaml`, a SQLite
database with the analysis tables and an Optuna study of the same trials (batch size, feature
subset, meta learning rate, seed). Most trials are bulk-inserted with rows computed the way the
store computes them. A few hundred go through `AnalysisStore.write_report`, which measures the
write rate of the driver's callback. It then times the `best` and `analyze` command handlers in this process
(imports already done) and `best` once more in a fresh Python process, imports included.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import sqlalchemy as sa
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.results import append_result, markdown_table  # noqa: E402
from sweep.analysis.cli import analyze_command, best_command  # noqa: E402
from sweep.analysis.store import AnalysisStore, reports_table, trials_table  # noqa: E402

BATCH_SIZES = (32, 64, 128, 256, 512, 1024, 2048)
FEATURES = (["loss"], ["loss", "class"], ["loss", "class", "source"], ["loss", "confidence", "position"])
SEARCHED = ["pool.batch_size", "mts.features", "mts.lr", "seed"]
NAME = "speed"
# Trials written one report at a time through the public API, to measure the callback's write rate.
API_TRIALS = 200


def trial_params(rng: np.random.Generator) -> dict[str, Any]:
    return {
        "pool.batch_size": int(rng.choice(BATCH_SIZES)),
        "mts.features": list(FEATURES[int(rng.integers(len(FEATURES)))]),
        "mts.lr": float(10 ** rng.uniform(-4, -2)),
        "seed": int(rng.integers(5)),
    }


def trial_curve(params: dict[str, Any], epochs: int, rng: np.random.Generator) -> list[dict[str, float]]:
    """Return synthetic epoch reports: gain rising then flat, GSNR growing as B**0.7."""
    batch = params["pool.batch_size"]
    peak = 0.05 - 0.01 * abs(math.log2(batch / 256)) + 0.01 * len(params["mts.features"]) / 4
    gsnr = 0.5 * batch**0.7 * math.exp(rng.normal(0, 0.1))
    reports = []
    for epoch in range(1, epochs + 1):
        gain = peak * (1 - math.exp(-epoch / 5)) + rng.normal(0, 0.003)
        reports.append({
            "epoch": epoch, "epochs": epochs, "val_gain": gain, "val_acc": 0.5 + gain, "test_acc": 0.48 + gain,
            "test_gain": gain - 0.02, "gsnr": gsnr, "noise_scale": 300.0, "b_eff": batch / 4, "samples_per_sec": 1000.0,
            "wall_time": float(epoch),
        })
    return reports


def summary_row(experiment_id: int, trial_id: str, params: dict[str, Any], reports: list[dict[str, float]]) -> dict[str, Any]:
    """Return the trial row the store would hold after these reports (best epoch by val_gain)."""
    best = max(reports, key=lambda report: (report["val_gain"], -report["epoch"]))
    last = reports[-1]
    now = time.time()
    return {
        "experiment_id": experiment_id, "trial_id": trial_id, "status": "finished", "params_json": json.dumps(params, sort_keys=True),
        "config_json": None, "node": "127.0.0.1", "started_at": now, "ended_at": now, "updated_at": now, "num_failures": 0,
        "failure_reason": None, "epochs": last["epochs"], "num_reports": len(reports), "last_epoch": last["epoch"],
        "best_epoch": best["epoch"], "best_val_gain": best["val_gain"], "best_val_acc": best["val_acc"],
        "best_test_acc": best["test_acc"], "best_test_gain": best["test_gain"], "last_val_gain": last["val_gain"],
        "last_val_acc": last["val_acc"], "last_test_acc": last["test_acc"], "last_test_gain": last["test_gain"],
        "last_gsnr": last["gsnr"], "last_gsnr_epoch": last["epoch"], "last_noise_scale": last["noise_scale"],
        "last_metrics_json": json.dumps({key: value for key, value in last.items() if key not in ("epoch", "epochs")}, sort_keys=True),
    }


def report_rows(experiment_id: int, trial_id: str, reports: list[dict[str, float]]) -> Iterator[dict[str, Any]]:
    columns = [column.name for column in reports_table.columns]
    for report in reports:
        row = {name: None for name in columns}
        row.update({key: value for key, value in report.items() if key in row})
        row.update(experiment_id=experiment_id, trial_id=trial_id, reported_at=time.time(), extra_json="{}")
        yield row


def fill(folder: Path, trials: int, epochs: int, seed: int) -> dict[str, float]:
    """Fill the experiment's store and Optuna study; return the fill timings."""
    url = f"sqlite:///{folder / 'sweep.db'}"
    rng = np.random.default_rng(seed)
    store = AnalysisStore(url)
    experiment_id = store.ensure_experiment(NAME, str(folder), "val_gain", "max", SEARCHED)
    all_params, finals = [], []

    started = time.perf_counter()
    api_trials = min(API_TRIALS, trials)
    for index in range(api_trials):
        params = trial_params(rng)
        reports = trial_curve(params, epochs, rng)
        store.start_trial(experiment_id, f"t{index:05d}", params)
        for report in reports:
            store.write_report(experiment_id, f"t{index:05d}", report["epoch"], report)
        store.end_trial(experiment_id, f"t{index:05d}", "finished")
        all_params.append(params)
        finals.append(reports[-1]["val_gain"])
    api_seconds = time.perf_counter() - started

    started = time.perf_counter()
    with store.engine.begin() as connection:
        for index in range(api_trials, trials):
            params = trial_params(rng)
            reports = trial_curve(params, epochs, rng)
            connection.execute(sa.insert(trials_table), [summary_row(experiment_id, f"t{index:05d}", params, reports)])
            connection.execute(sa.insert(reports_table), list(report_rows(experiment_id, f"t{index:05d}", reports)))
            all_params.append(params)
            finals.append(reports[-1]["val_gain"])
    bulk_seconds = time.perf_counter() - started
    store.close()

    started = time.perf_counter()
    fill_study(url, all_params, finals)
    study_seconds = time.perf_counter() - started
    return {"api_reports_per_s": api_trials * epochs / api_seconds, "bulk_s": bulk_seconds, "study_s": study_seconds}


def fill_study(url: str, all_params: list[dict[str, Any]], finals: list[float]) -> None:
    """Add one COMPLETE Optuna trial per store trial, list choices as JSON text as the searcher stores them."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    distributions = {
        "pool.batch_size": optuna.distributions.CategoricalDistribution(list(BATCH_SIZES)),
        "mts.features": optuna.distributions.CategoricalDistribution([json.dumps(choice) for choice in FEATURES]),
        "mts.lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True),
        "seed": optuna.distributions.CategoricalDistribution(list(range(5))),
    }
    study = optuna.create_study(study_name=NAME, storage=url, direction="maximize")
    frozen = [
        optuna.trial.create_trial(params={**params, "mts.features": json.dumps(params["mts.features"])}, distributions=distributions, value=value)
        for params, value in zip(all_params, finals)
    ]
    study.add_trials(frozen)


def write_config(folder: Path) -> None:
    params = {path: {"choice": [0]} for path in SEARCHED}
    config = {"sweep": {"name": NAME, "metric": "val_gain", "mode": "max"}, "storage": {"url": None}, "space": {"name": NAME, "params": params}}
    (folder / "config.yaml").write_text(yaml.safe_dump(config))


def time_handler(handler: Any, **options: Any) -> float:
    args = argparse.Namespace(**options)
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        handler(args)
    return time.perf_counter() - started


def time_fresh_best(folder: Path) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "sweep.analysis.cli", "best", str(folder), "--top", "5"], check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 trials x 20 reports instead of 10,000 x 50")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic trials")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    trials, epochs = (1000, 20) if args.quick else (10000, 50)

    with tempfile.TemporaryDirectory(prefix="mtsweep-analysis-speed-") as temporary:
        folder = Path(temporary) / NAME
        folder.mkdir()
        write_config(folder)
        fill_timings = fill(folder, trials, epochs, args.seed)
        best_options = {"experiment": str(folder), "metric": "val_gain", "top": None, "where": [], "per": None, "json": False}
        rows = [
            ["best --top 5", round(time_handler(best_command, **best_options), 3)],
            ["best --per pool.batch_size", round(time_handler(best_command, **{**best_options, "per": "pool.batch_size"}), 3)],
            ["best --where seed=0 --json", round(time_handler(best_command, **{**best_options, "where": ["seed=0"], "json": True}), 3)],
            ["analyze", round(time_handler(analyze_command, experiment=str(folder), x="pool.batch_size", where=[]), 2)],
            ["best --top 5, fresh process (imports included)", round(time_fresh_best(folder), 2)],
        ]
        size_mb = (folder / "sweep.db").stat().st_size / 1e6

    table = markdown_table(["command", "seconds"], rows)
    notes = (
        f"{trials} trials x {epochs} reports in one SQLite file ({size_mb:.0f} MB with the Optuna study). "
        f"Store writes through `AnalysisStore.write_report` (the callback's path, one transaction per report): "
        f"{fill_timings['api_reports_per_s']:.0f} reports/s. Goals: best < 1 s, analyze < 30 s. "
        "`analyze` includes loading the Optuna study, PED-ANOVA importances over all trials and fANOVA "
        "over a random sample of at most 250. The fresh-process time includes Python start-up and the "
        "imports of the CLI (SQLAlchemy, Optuna), not torch."
    )
    print(table)
    print(notes)
    append_result(f"Analysis speed, {trials} trials x {epochs} reports", table, notes)


if __name__ == "__main__":
    main()
