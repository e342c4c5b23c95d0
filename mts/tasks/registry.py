"""The task registry: one builder class per task, looked up by name.

A bundled or user task is one module that subclasses `BaseTaskBuilder` and decorates it with
`register_task`. `build_task` in `mts.tasks` validates the config against the builder, then loads
the task from the disk cache or builds and caches it.
"""

from __future__ import annotations

import abc
import logging
import math
from typing import ClassVar, TypeVar

from mts.config import TaskConfig
from mts.errors import ConfigError
from mts.tasks.base import Task

logger = logging.getLogger(__name__)

_REGISTRY: dict[str, type[BaseTaskBuilder]] = {}

# Config fields that change the arrays of every generated task. A builder lists its own extra
# fields in `cache_fields`; `cache_dir` and `path` never change the arrays of a cached task.
COMMON_CACHE_FIELDS = ("name", "seed", "pool_size", "meta_size", "val_size", "test_size", "mixture")


class BaseTaskBuilder(abc.ABC):
    """Builds one task from a `TaskConfig`; subclasses set `name` and implement `build`.

    An instance is a `TaskBuilder`: calling it with a config returns the task. `validate` returns
    a list of one-line problems instead of raising, so that `build_task` can report every problem
    of a config at once.
    """

    name: ClassVar[str]
    # Generated tasks are cached on disk; a task read from the user's own file is not.
    cacheable: ClassVar[bool] = True
    cache_fields: ClassVar[tuple[str, ...]] = COMMON_CACHE_FIELDS
    # Pool generators and their default fractions; empty for tasks without generators.
    default_mixture: ClassVar[dict[str, float]] = {}

    def __call__(self, config: TaskConfig) -> Task:
        return self.build(config)

    @abc.abstractmethod
    def build(self, config: TaskConfig) -> Task:
        """Build the task's arrays; `config` has already passed `validate`."""

    def validate(self, config: TaskConfig) -> list[str]:
        """Return every problem of `config` for this task, one line each; empty when valid."""
        problems = _check_common_fields(config)
        if self.default_mixture:
            problems.extend(_check_mixture(config.mixture, tuple(self.default_mixture)))
        elif config.mixture:
            problems.append(
                f"task.mixture={config.mixture!r} is not used by task {self.name!r}, which has no "
                "pool generators; remove task.mixture"
            )
        return problems

    def generation_constants(self) -> dict[str, object]:
        """Return the module constants that shape the generated arrays, as plain JSON values.

        They are part of the cache key, so that editing a generator's arguments, a quality tag or
        the default mixture in the code rebuilds cached tasks instead of serving stale arrays.
        Builders with such constants extend this dict.
        """
        return {"default_mixture": dict(self.default_mixture)}

    def mixture(self, config: TaskConfig) -> dict[str, float]:
        """Return the pool mixture of `config`, or the task's default when none is given."""
        return dict(config.mixture) if config.mixture else dict(self.default_mixture)


BuilderT = TypeVar("BuilderT", bound=type[BaseTaskBuilder])


def register_task(cls: BuilderT) -> BuilderT:
    """Register a builder class under its `name`; use as a class decorator."""
    name = cls.name
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        raise ValueError(f"task name {name!r} is registered twice: {_REGISTRY[name]} and {cls}")
    _REGISTRY[name] = cls
    return cls


def registered_names() -> tuple[str, ...]:
    """Return the names of all registered tasks, in registration order."""
    return tuple(_REGISTRY)


def get_builder(name: str) -> BaseTaskBuilder:
    """Return a builder instance for the task `name`, or raise ConfigError for an unknown name."""
    if name not in _REGISTRY:
        raise ConfigError(
            f"task.name={name!r} is not a known task; use one of {', '.join(_REGISTRY)}"
        )
    return _REGISTRY[name]()


def validate_task_config(config: TaskConfig) -> BaseTaskBuilder:
    """Check `config` and return its builder; raise one ConfigError listing every problem."""
    builder = get_builder(config.name)
    problems = builder.validate(config)
    if problems:
        raise ConfigError("\n".join(problems))
    return builder


def _is_int(value: object) -> bool:
    # bool is an int subclass, but `pool_size=True` is a typo, not a size.
    return isinstance(value, int) and not isinstance(value, bool)


def _check_common_fields(config: TaskConfig) -> list[str]:
    problems = []
    if not _is_int(config.seed) or config.seed < 0:
        problems.append(f"task.seed={config.seed!r} is invalid; use an integer >= 0")
    for key in ("pool_size", "meta_size", "val_size", "test_size"):
        value = getattr(config, key)
        if not _is_int(value) or value < 1:
            problems.append(f"task.{key}={value!r} is invalid; use an integer >= 1")
    return problems


def _check_mixture(mixture: dict[str, float], generators: tuple[str, ...]) -> list[str]:
    problems = []
    for key, fraction in mixture.items():
        if key not in generators:
            problems.append(
                f"task.mixture has an unknown generator {key!r}; use names from "
                f"{', '.join(generators)}"
            )
        elif not isinstance(fraction, (int, float)) or isinstance(fraction, bool):
            problems.append(f"task.mixture.{key}={fraction!r} is not a number; use a fraction >= 0")
        elif not math.isfinite(fraction) or fraction < 0:
            problems.append(f"task.mixture.{key}={fraction!r} is invalid; use a finite fraction >= 0")
    if mixture and not problems and sum(mixture.values()) <= 0:
        problems.append(
            f"task.mixture={mixture!r} has no positive fraction; give at least one generator a "
            "fraction > 0"
        )
    return problems
