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
from mts.trainer import Trainer

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
