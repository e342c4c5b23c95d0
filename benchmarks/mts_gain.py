"""MTS against uniform training on a bundled task, and the meta-gradient GSNR at two batch sizes.

    python benchmarks/mts_gain.py                 # mnist1d_shift, seed 0, default config
    python benchmarks/mts_gain.py --quick         # 5 epochs, for a smoke check

Runs `uniform`, `oracle` and `mts` (loss feature only) at pool batch 64 and 512 with the default
config of `mtsweep run`, so each row is what `mtsweep run method=... pool.batch_size=...` prints,
and appends the table to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.results import append_result, markdown_table  # noqa: E402
from mts.tasks import build_task  # noqa: E402
from sweep.config import load_run_config  # noqa: E402

logger = logging.getLogger(__name__)

RUNS = [
    ("uniform", []),
    ("oracle", []),
    ("mts", ["pool.batch_size=64", "mts.features=[loss]"]),
    ("mts", ["pool.batch_size=512", "mts.features=[loss]"]),
]


def run_one(method: str, overrides: list[str], common: list[str]) -> dict[str, float]:
    from mts import Trainer

    config = load_run_config([f"method={method}", *common, *overrides])
    started = time.perf_counter()
    reports = list(Trainer(config, task=build_task(config.task)))
    last = reports[-1]
    measured = [report.gsnr for report in reports if not math.isnan(report.gsnr)]
    return {
        "batch": config.pool.batch_size,
        "test_acc": last.best_test_acc,
        "val_acc": last.best_val_acc,
        "gsnr": last.gsnr,
        "gsnr_mean": sum(measured) / len(measured) if measured else math.nan,
        "gsnr_per_sample": last.gsnr_per_sample,
        "b_eff": last.b_eff,
        "weight_auc": last.weight_auc,
        "seconds": time.perf_counter() - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="mnist1d_shift")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="5 epochs instead of the default schedule")
    parser.add_argument("--no-write", action="store_true", help="print the table without appending it")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    common = [f"task={args.task}", f"seed={args.seed}", f"task.seed={args.seed}", "train.threads=1"]
    if args.quick:
        common.append("train.epochs=5")
    results = [(method, overrides, run_one(method, overrides, common)) for method, overrides in RUNS]
    uniform = results[0][2]["test_acc"]

    header = ["method", "pool batch", "test acc", "gain (pts)", "val acc", "GSNR (last)", "GSNR (mean)",
              "GSNR per sample", "B_eff", "weight AUC", "seconds"]
    rows = []
    for method, overrides, result in results:
        rows.append([
            method, result["batch"], result["test_acc"], round((result["test_acc"] - uniform) * 100, 2), result["val_acc"],
            result["gsnr"], result["gsnr_mean"], result["gsnr_per_sample"], result["b_eff"], result["weight_auc"],
            round(result["seconds"], 1),
        ])
    table = markdown_table(header, rows)
    print(table)
    if not args.no_write:
        append_result(f"MTS against uniform on {args.task}, seed {args.seed}", table,
                      notes="Test accuracy is that of the model with the best validation accuracy; "
                      "GSNR is the median per-parameter GSNR of K batch meta-gradients at the run's pool batch.")


if __name__ == "__main__":
    main()
