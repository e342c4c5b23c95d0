"""MTS: Meta-learning for Training-data Selection, usable without Ray.

A meta-network maps per-sample features to a weight; the classifier trains on the weighted
synthetic pool, and the meta-network learns so that one virtual training step lowers the loss on a
small real meta set. See `Trainer` for the entry point.
"""

from __future__ import annotations

from mts.config import (
    GSNRConfig,
    ModelConfig,
    MTSConfig,
    PoolConfig,
    RunConfig,
    TaskConfig,
    TrainConfig,
)
from mts.errors import ConfigError, DivergenceError, MtsError, TaskError
from mts.reports import EpochReport, Reference

__all__ = [
    "ConfigError",
    "DivergenceError",
    "EpochReport",
    "GSNRConfig",
    "MTSConfig",
    "ModelConfig",
    "MtsError",
    "PoolConfig",
    "Reference",
    "RunConfig",
    "TaskConfig",
    "TaskError",
    "TrainConfig",
    "Trainer",
]


def __getattr__(name: str) -> object:
    # The trainer imports torch, which takes seconds. Commands that only read a sweep's database
    # (mtsweep best, status) import `mts` for its config and errors, so they should not pay for it.
    if name == "Trainer":
        from mts.trainer import Trainer

        return Trainer
    raise AttributeError(f"module 'mts' has no attribute {name!r}")
