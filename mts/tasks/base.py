"""The task interface: four disjoint splits of one classification problem.

A task is what MTS trains on: a weighted `pool` (synthetic samples, maybe some real ones), a small
real `meta` set for the meta-gradient, a real `val` split for model selection and the sweep
objective, and a real `test` split that is only reported. The hidden per-sample `quality` tags of
the pool live on the task, not on the pool split, so that code handing a `Split` to a feature or a
model cannot pass the tags along by accident.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

SPLIT_NAMES = ("pool", "meta", "val", "test")


@dataclasses.dataclass(frozen=True)
class Split:
    """One split: inputs, labels and the index of each sample's source in `Task.sources`."""

    x: np.ndarray  # (n, d) float32
    y: np.ndarray  # (n,) int64
    source: np.ndarray  # (n,) int64, index into Task.sources

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclasses.dataclass(frozen=True)
class Task:
    """A classification problem with pool, meta, val and test splits.

    `quality` has one entry per pool sample (1 faithful, 0 harmful) or is None when the data
    carries no tags. It exists to evaluate selection and must never reach a feature, the
    meta-network or the sweep objective.
    """

    name: str
    num_classes: int
    sources: tuple[str, ...]  # source names; "real" for real samples
    pool: Split
    meta: Split
    val: Split
    test: Split
    quality: np.ndarray | None = None  # (n_pool,) int8
    # Optional user-supplied embeddings, one (n, k) float32 array per split name.
    embeddings: dict[str, np.ndarray] | None = None

    @property
    def input_dim(self) -> int:
        return int(self.pool.x.shape[1])

    def split(self, name: str) -> Split:
        if name not in SPLIT_NAMES:
            raise KeyError(f"unknown split {name!r}; expected one of {', '.join(SPLIT_NAMES)}")
        return getattr(self, name)


TaskBuilder = Callable[["TaskConfig"], Task]  # noqa: F821 - TaskConfig lives in mts.config
