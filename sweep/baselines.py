"""Baselines first: the `uniform` result of every task and seed a sweep can draw.

Every trial reports `val_gain`, its validation accuracy minus that of `uniform` training on the same
task, seed, model and schedule. Before the trials start, the launcher looks each baseline up in the
experiment's database (table `baselines`, keyed by a hash of the baseline's config) and trains the
missing ones as Ray tasks, in parallel, with the trials' resources. A resumed sweep, or a new sweep
on the same database, reuses them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from typing import Any

import sqlalchemy as sa

from mts import DivergenceError, Reference, RunConfig, Trainer
from sweep.errors import SweepError
from sweep.launch_config import LaunchConfig, baseline_config
from sweep.search_space import SearchSpace

logger = logging.getLogger(__name__)

metadata = sa.MetaData()

baselines_table = sa.Table(
    "baselines",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),  # sha256 of `config_json`
    sa.Column("config_json", sa.Text, nullable=False),  # the result-relevant part of the uniform config
    sa.Column("val_acc", sa.Float, nullable=False),  # best validation accuracy
    sa.Column("test_acc", sa.Float, nullable=False),  # test accuracy of the validation-selected model
    sa.Column("best_epoch", sa.Integer, nullable=False),
    sa.Column("wall_time", sa.Float, nullable=False),  # seconds of training
    sa.Column("created_at", sa.Float, nullable=False),  # Unix time
)

# Keys that change speed or cache location but not the baseline's result.
_IGNORED = {"train": ("threads", "eval_batch_size"), "task": ("cache_dir",)}


def baseline_identity(config: RunConfig) -> dict[str, Any]:
    """Return the part of a uniform config that determines its result."""
    identity = {
        "method": config.method,
        "seed": config.seed,
        "task": dataclasses.asdict(config.task),
        "model": dataclasses.asdict(config.model),
        "pool_batch_size": config.pool.batch_size,
        "train": dataclasses.asdict(config.train),
    }
    for section, keys in _IGNORED.items():
        for key in keys:
            identity[section].pop(key, None)
    return identity


def baseline_key(config: RunConfig) -> str:
    text = json.dumps(baseline_identity(config), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def create_tables(engine: sa.Engine) -> None:
    metadata.create_all(engine, checkfirst=True)


def stored_references(engine: sa.Engine, keys: list[str]) -> dict[str, Reference]:
    """Return the stored baselines among `keys`."""
    with engine.connect() as connection:
        rows = connection.execute(sa.select(baselines_table).where(baselines_table.c.key.in_(keys))).all()
    return {row.key: Reference(val_acc=row.val_acc, test_acc=row.test_acc) for row in rows}


def ensure_baselines(config: LaunchConfig, space: SearchSpace, engine: sa.Engine, threads: int) -> dict[str, dict[str, float]]:
    """Return the baseline of every combination the space can draw, training the missing ones.

    The result maps baseline key to `{"val_acc", "test_acc"}`, plain floats so that it passes to
    the trials through Ray's object store unchanged.
    """
    create_tables(engine)
    configs = {}
    # The searched values that tell baselines of one task and seed apart, for the log.
    searched = {param.path for param in space.searched} - {"seed", "task.name"}
    labels = {}
    for combination in space.baseline_combinations():
        baseline = baseline_config(config, combination, int(config.baseline_batch_size or config.pool.batch_size))
        configs[baseline_key(baseline)] = baseline
        labels[baseline_key(baseline)] = "".join(f", {path}={value}" for path, value in combination.items() if path in searched)
    references = stored_references(engine, list(configs))
    missing = {key: value for key, value in configs.items() if key not in references}
    logger.info("Baselines: %d needed, %d stored, %d to train", len(configs), len(references), len(missing))
    if missing:
        _train_missing(config, missing, engine, threads, labels)
        references = stored_references(engine, list(configs))
    return {key: {"val_acc": ref.val_acc, "test_acc": ref.test_acc} for key, ref in references.items()}


def _train_missing(config: LaunchConfig, missing: dict[str, RunConfig], engine: sa.Engine, threads: int, labels: dict[str, str]) -> None:
    import ray

    remote = ray.remote(num_cpus=config.sweep.cpus_per_trial, num_gpus=config.sweep.gpus_per_trial, max_retries=0)(train_baseline)
    pending = {}
    for key, baseline in missing.items():
        baseline.train.threads = threads
        pending[remote.remote(dataclasses.asdict(baseline))] = key
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        key = pending.pop(done[0])
        try:
            result = ray.get(done[0])
        except ray.exceptions.RayTaskError as err:
            for ref in pending:
                ray.cancel(ref)
            identity = baseline_identity(missing[key])
            raise SweepError(
                f"uniform baseline (task {identity['task']['name']}, seed {identity['seed']}) failed: "
                f"{str(err.cause).splitlines()[0] if err.cause else err}; fix the base config and launch again"
            ) from err
        save_baseline(engine, key, missing[key], result)
        logger.info(
            "Baseline trained: task %s, seed %d%s: val_acc=%.4f test_acc=%.4f (%.1f s)",
            missing[key].task.name, missing[key].seed, labels.get(key, ""),
            result["val_acc"], result["test_acc"], result["wall_time"],
        )


def train_baseline(config_dict: dict[str, Any]) -> dict[str, float]:
    """Train one uniform run to the end (in a Ray worker) and return its validation-selected result."""
    from sweep.launch_config import apply_params

    config = apply_params(config_dict, {})
    last = None
    try:
        for report in Trainer(config):
            last = report
    except DivergenceError as err:
        raise SweepError(f"the uniform baseline diverged at epoch {err.epoch}: {err}") from err
    if last is None:
        raise SweepError("the uniform baseline trained no epoch")
    return {"val_acc": last.best_val_acc, "test_acc": last.best_test_acc, "best_epoch": last.best_epoch, "wall_time": last.wall_time}


def save_baseline(engine: sa.Engine, key: str, config: RunConfig, result: dict[str, float]) -> None:
    """Store one trained baseline under `key`, unless a concurrent launcher stored it first."""
    row = {
        "key": key,
        "config_json": json.dumps(baseline_identity(config), sort_keys=True),
        "val_acc": result["val_acc"],
        "test_acc": result["test_acc"],
        "best_epoch": int(result["best_epoch"]),
        "wall_time": result["wall_time"],
        "created_at": time.time(),
    }
    with engine.begin() as connection:
        # A concurrent launcher on the same database may have stored the same baseline meanwhile.
        exists = connection.execute(sa.select(baselines_table.c.key).where(baselines_table.c.key == key)).first()
        if exists is None:
            connection.execute(sa.insert(baselines_table).values(**row))
