"""Cost of measuring GSNR: vmap against a Python loop, and the share of a trial spent measuring.

    python benchmarks/gsnr_cost.py            # per-sample meta-gradients at batch 64 and 256, one full trial
    python benchmarks/gsnr_cost.py --quick    # batch 64 only and a 10-epoch trial

Part 1 computes the per-sample meta-gradients of one pool batch with `torch.func.vmap` and with a
loop of autograd calls, interleaved, and reports the speed-up. Part 2 trains `mts` with the default
config of `mtsweep run` and times every GSNR measurement inside it.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.results import append_result, markdown_table  # noqa: E402
from mts import RunConfig, Trainer  # noqa: E402
from mts.tasks import build_task  # noqa: E402
from sweep.config import load_run_config  # noqa: E402


def per_sample_speedup(trainer: Trainer, batch_size: int, rounds: int) -> list[object]:
    method = trainer.method
    vectorized, looped = [], []
    # The first vmap call traces the function; it is a one-time cost per process, left out here.
    method.per_sample_meta_gradients(trainer._draw_pool(batch_size), trainer._draw_meta())
    for _ in range(rounds):
        batch, meta = trainer._draw_pool(batch_size), trainer._draw_meta()
        started = time.perf_counter()
        method.per_sample_meta_gradients(batch, meta)
        vectorized.append(time.perf_counter() - started)
        started = time.perf_counter()
        method.bilevel.per_sample_meta_gradients_looped(method.pool_batch(batch), meta)
        looped.append(time.perf_counter() - started)
    fast, slow = statistics.median(vectorized), statistics.median(looped)
    return [batch_size, round(fast * 1000, 1), round(slow * 1000, 1), round(slow / fast, 1)]


def measurement_share(overrides: list[str]) -> list[object]:
    config = load_run_config(["method=mts", "train.threads=1", *overrides])
    trainer = Trainer(config, task=build_task(config.task))
    spent: list[float] = []
    measure = trainer._measure_gsnr

    def timed_measure() -> None:
        started = time.perf_counter()
        measure()
        spent.append(time.perf_counter() - started)

    trainer._measure_gsnr = timed_measure  # type: ignore[method-assign]
    started = time.perf_counter()
    for _ in trainer:
        pass
    total = time.perf_counter() - started
    return [config.pool.batch_size, config.train.epochs, config.gsnr.every_epochs, config.gsnr.draws,
            len(spent), round(sum(spent), 2), round(total, 2), f"{sum(spent) / total:.1%}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="batch 64 only and a 10-epoch trial")
    parser.add_argument("--no-write", action="store_true", help="print the tables without appending them")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)

    config = RunConfig(method="mts")
    config.train.threads = 1
    trainer = Trainer(config, task=build_task(config.task))
    sizes = (64,) if args.quick else (64, 256)
    speed_rows = [per_sample_speedup(trainer, size, rounds=2 if args.quick else 5) for size in sizes]
    speed_table = markdown_table(["pool batch", "vmap (ms)", "loop (ms)", "speed-up"], speed_rows)

    share_rows = [measurement_share(["train.epochs=10"] if args.quick else [])]
    share_table = markdown_table(
        ["pool batch", "epochs", "every n epochs", "draws K", "measurements", "GSNR seconds", "trial seconds", "share"],
        share_rows,
    )
    print(speed_table, share_table, sep="\n\n")
    if not args.no_write:
        append_result("Per-sample meta-gradients: vmap against a loop (mnist1d_shift, 1 thread)", speed_table,
                      notes="Median over interleaved rounds. Goal: >= 10x at batch 256.")
        append_result("Share of an MTS trial spent measuring GSNR (default config, 1 thread)", share_table,
                      notes="Each measurement takes K batch meta-gradients and one per-sample batch. Goal: <= 5%.")


if __name__ == "__main__":
    main()
