"""Checks of a run configuration, before any data is built or any training starts.

Each check returns problem lines instead of raising at the first one, so the user sees every
problem at once. A line names the key, the value received and what is allowed.
"""

from __future__ import annotations

from mts.config import META_GRADIENTS, METHODS, MODELS, OPTIMIZERS, POSITION_REPRESENTATIONS, RunConfig
from mts.features import check_feature_names
from mts.features.position import embedding_problem
from mts.tasks.base import Task


def config_problems(config: RunConfig) -> list[str]:
    """Return every problem found in `config` that can be seen without building the task."""
    from mts.tasks import TASK_NAMES

    problems: list[str] = []
    problems += _choice("method", config.method, METHODS)
    problems += _choice("task.name", config.task.name, TASK_NAMES)
    problems += _choice("model.name", config.model.name, MODELS)
    problems += _choice("train.optimizer", config.train.optimizer, OPTIMIZERS)
    problems += _choice("mts.gradient", config.mts.gradient, META_GRADIENTS)
    problems += _choice("mts.position_representation", config.mts.position_representation, POSITION_REPRESENTATIONS)

    for key, value in (
        ("train.lr", config.train.lr),
        ("mts.lr", config.mts.lr),
        ("mts.virtual_lr", config.mts.virtual_lr),
        ("mts.eps", config.mts.eps),
        ("mts.fd_radius", config.mts.fd_radius),
    ):
        problems += _positive(key, value)
    for key, value in (
        ("train.weight_decay", config.train.weight_decay),
        ("mts.weight_decay", config.mts.weight_decay),
        ("mts.warmup_epochs", config.mts.warmup_epochs),
        ("train.threads", config.train.threads),
    ):
        problems += _non_negative(key, value)
    for key, value, minimum in (
        ("train.epochs", config.train.epochs, 1),
        ("pool.batch_size", config.pool.batch_size, 2),
        ("mts.meta_batch_size", config.mts.meta_batch_size, 1),
        ("mts.interval", config.mts.interval, 1),
        ("mts.embedding_dim", config.mts.embedding_dim, 1),
        ("mts.position_k", config.mts.position_k, 1),
        ("mts.feature_warmup_epochs", config.mts.feature_warmup_epochs, 1),
        ("gsnr.draws", config.gsnr.draws, 2),
        ("gsnr.every_epochs", config.gsnr.every_epochs, 1),
        ("gsnr.per_sample_batch", config.gsnr.per_sample_batch, 2),
        ("train.eval_batch_size", config.train.eval_batch_size, 1),
    ):
        problems += _at_least(key, value, minimum)
    problems += _at_least("model.kernel_size", config.model.kernel_size, 1)
    if not 0 <= config.train.momentum < 1:
        problems.append(f"train.momentum={config.train.momentum} must be in [0, 1)")
    if config.task.path is not None and config.task.name != "file":
        problems.append(
            f"task.path={config.task.path!r} is only read by task=file, but task.name={config.task.name!r}; "
            "add task=file (in a search space, task.name: file) or remove task.path"
        )
    for key, sizes in (("model.hidden", config.model.hidden), ("model.channels", config.model.channels), ("mts.hidden", config.mts.hidden)):
        if any(size < 1 for size in sizes):
            problems.append(f"{key}={list(sizes)} has a non-positive width; every width must be >= 1")

    if config.method == "mts":
        problems += check_feature_names(list(config.mts.features))
    uses_meta = config.method in ("mts", "mwnet", "l2rw")
    if uses_meta and config.task.name != "file" and config.mts.meta_batch_size > config.task.meta_size >= 1:
        problems.append(
            f"mts.meta_batch_size={config.mts.meta_batch_size} is larger than the meta set "
            f"(task.meta_size={config.task.meta_size}); allowed: 1 to {config.task.meta_size}"
        )
    if config.task.name != "file" and config.pool.batch_size > config.task.pool_size >= 1:
        problems.append(
            f"pool.batch_size={config.pool.batch_size} is larger than the pool "
            f"(task.pool_size={config.task.pool_size}); allowed: 2 to {config.task.pool_size}"
        )
    return problems


def task_problems(config: RunConfig, task: Task, trainable_pool_size: int) -> list[str]:
    """Return the problems that depend on the built task, such as a batch larger than the pool."""
    problems = []
    if config.pool.batch_size > trainable_pool_size:
        problems.append(
            f"pool.batch_size={config.pool.batch_size} is larger than the pool samples "
            f"{config.method!r} trains on ({trainable_pool_size}); allowed: 2 to {trainable_pool_size}"
        )
    if config.method in ("mts", "mwnet", "l2rw") and config.mts.meta_batch_size > len(task.meta):
        problems.append(
            f"mts.meta_batch_size={config.mts.meta_batch_size} is larger than the meta set "
            f"({len(task.meta)} samples); allowed: 1 to {len(task.meta)}"
        )
    if _uses_task_embeddings(config):
        problem = embedding_problem(task.embeddings, len(task.pool), len(task.meta))
        problems += [problem] if problem else []
    return problems


def _uses_task_embeddings(config: RunConfig) -> bool:
    return config.method == "mts" and "position" in config.mts.features and config.mts.position_representation == "embeddings"


def _choice(key: str, value: str, allowed: tuple[str, ...]) -> list[str]:
    if value in allowed:
        return []
    return [f"{key}={value!r} is not allowed; choose one of: {', '.join(allowed)}"]


def _positive(key: str, value: float) -> list[str]:
    return [] if value > 0 else [f"{key}={value} must be > 0"]


def _non_negative(key: str, value: float) -> list[str]:
    return [] if value >= 0 else [f"{key}={value} must be >= 0"]


def _at_least(key: str, value: int, minimum: int) -> list[str]:
    return [] if value >= minimum else [f"{key}={value} must be an integer >= {minimum}"]
