"""Cost of one MTS step relative to a plain weighted step of the same model and batch.

    python benchmarks/step_cost.py            # pool batch 64, 256, 1024 on mnist1d_shift
    python benchmarks/step_cost.py --quick    # fewer repetitions

For each pool batch, a `uniform` trainer (fixed weights: forward, backward, optimizer step) and
`mts` trainers (exact and finite-difference meta-gradients, meta_interval 1 and 5) train on the
same batches. Timings are interleaved round by round, so a machine that slows down for a while
slows every variant alike, and the ratio is the median over rounds.
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

VARIANTS = [
    ("exact", 1),
    ("finite_difference", 1),
    ("exact", 5),
    ("finite_difference", 5),
]


def make_trainer(method: str, batch_size: int, task, gradient: str = "exact", interval: int = 1) -> Trainer:
    config = RunConfig(method=method)
    config.pool.batch_size = batch_size
    config.mts.gradient = gradient
    config.mts.interval = interval
    config.gsnr.enabled = False
    config.train.threads = 1
    return Trainer(config, task=task)


def time_steps(trainer: Trainer, batches: list[torch.Tensor]) -> float:
    """Return seconds per step over `batches`."""
    started = time.perf_counter()
    for index in batches:
        trainer._train_step(index)
    return (time.perf_counter() - started) / len(batches)


def measure(batch_size: int, task, rounds: int, steps: int) -> list[list[object]]:
    generator = torch.Generator().manual_seed(0)
    plain = make_trainer("uniform", batch_size, task)
    variants = {key: make_trainer("mts", batch_size, task, *key) for key in VARIANTS}
    times: dict[object, list[float]] = {"plain": [], **{key: [] for key in VARIANTS}}
    for round_number in range(rounds + 1):
        batches = [torch.randperm(len(task.pool), generator=generator)[:batch_size] for _ in range(steps)]
        measured = {"plain": time_steps(plain, batches)}
        for key, trainer in variants.items():
            measured[key] = time_steps(trainer, batches)
        if round_number > 0:  # the first round warms up allocators and caches
            for key, value in measured.items():
                times[key].append(value)
    plain_ms = statistics.median(times["plain"]) * 1000
    rows = []
    for gradient, interval in VARIANTS:
        ratios = [value / base for value, base in zip(times[(gradient, interval)], times["plain"])]
        rows.append([batch_size, gradient, interval, round(plain_ms, 2),
                     round(statistics.median(times[(gradient, interval)]) * 1000, 2), round(statistics.median(ratios), 2)])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds of 5 steps at pool batch 64 and 256")
    parser.add_argument("--no-write", action="store_true", help="print the table without appending it")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)

    task = build_task(RunConfig().task)
    batch_sizes = (64, 256) if args.quick else (64, 256, 1024)
    rounds, steps = (2, 5) if args.quick else (7, 20)
    rows = [row for batch_size in batch_sizes for row in measure(batch_size, task, rounds, steps)]
    header = ["pool batch", "meta-gradient", "meta_interval", "plain step (ms)", "MTS step (ms)", "ratio"]
    table = markdown_table(header, rows)
    print(table)
    if not args.no_write:
        append_result(
            "MTS step cost against a plain weighted step (mnist1d_shift, 256-256 MLP, 1 thread)", table,
            notes=f"Median over {rounds} interleaved rounds of {steps} steps; ratio = MTS step time / plain step time. "
            "Goal: <= 2.5 at meta_interval 1 with the faster meta-gradient.",
        )


if __name__ == "__main__":
    main()
