"""The feature-group interface: named blocks of meta-network input columns.

A search space switches groups on and off, so each group is one class registered under its name.
Groups come in four kinds: `online` groups are computed from every pool batch, `static` groups
(class, source) enter the meta-network as learned embeddings, `offline` groups are computed once per
task before training, and `tracked` groups keep per-sample buffers across epochs.

A group's life: `prepare(context)` once before training (offline work, buffer allocation),
`compute(batch)` for every pool batch, `observe(batch)` after every training step's forward pass
(tracked groups update their buffers there), and `state_dict`/`load_state_dict` so that a resumed
run restores the buffers exactly.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

from mts.errors import ConfigError
from mts.tasks.base import Split

if TYPE_CHECKING:
    from mts.config import RunConfig
    from mts.tasks.base import Task

logger = logging.getLogger(__name__)

KINDS = ("online", "static", "offline", "tracked")


@dataclasses.dataclass
class FeatureBatch:
    """The data of one pool batch that an online feature group may read.

    Everything here is detached from the graph: features are inputs to the meta-network, not
    functions of the classifier parameters.
    """

    index: torch.Tensor  # (N,) positions of the samples in the pool
    x: torch.Tensor  # (N, d)
    y: torch.Tensor  # (N,)
    source: torch.Tensor  # (N,)
    logits: torch.Tensor  # (N, C) classifier output at the current parameters
    losses: torch.Tensor  # (N,) per-sample cross-entropy
    embeddings: torch.Tensor | None = None  # (N, h) penultimate layer of the same forward pass
    meta_embeddings: torch.Tensor | None = None  # (M, h) penultimate layer of the current meta batch


@dataclasses.dataclass
class FeatureContext:
    """The task data a feature group may read before training: everything but the quality tags.

    The quality tags are left out on purpose, so no feature can be computed from them. `shared`
    lets groups reuse one expensive result (the warm-up classifier) within one featurizer.
    """

    config: RunConfig
    num_classes: int
    sources: tuple[str, ...]
    pool: Split
    meta: Split
    embeddings: dict[str, np.ndarray] | None
    shared: dict[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_task(cls, task: Task, config: RunConfig) -> FeatureContext:
        return cls(
            config=config,
            num_classes=task.num_classes,
            sources=task.sources,
            pool=task.pool,
            meta=task.meta,
            embeddings=task.embeddings,
        )

    @property
    def real_source(self) -> int | None:
        """Index of the source named `real` in `sources`, or None when the pool has no real samples."""
        return self.sources.index("real") if "real" in self.sources else None


class FeatureGroup:
    """One named block of meta-network input columns."""

    name: ClassVar[str]
    kind: ClassVar[str]
    # Continuous columns this group adds; embedding groups (class, source) add none.
    width: ClassVar[int] = 0
    # True when `compute` reads `FeatureBatch.meta_embeddings`, which the method then fills.
    needs_meta_embeddings: ClassVar[bool] = False

    def prepare(self, context: FeatureContext) -> None:
        """Do the work needed once before training; most groups need none."""
        del context

    def compute(self, batch: FeatureBatch) -> torch.Tensor:
        """Return the (N, width) columns of this group for one batch."""
        raise NotImplementedError

    def observe(self, batch: FeatureBatch) -> None:
        """Update per-sample buffers from a training step's forward pass; only tracked groups do."""
        del batch

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        del state


FEATURE_GROUPS: dict[str, type[FeatureGroup]] = {}


def register(group: type[FeatureGroup]) -> type[FeatureGroup]:
    """Class decorator that makes a feature group selectable by its name."""
    if group.kind not in KINDS:
        raise ValueError(f"feature group {group.name!r} has kind {group.kind!r}; allowed: {', '.join(KINDS)}")
    FEATURE_GROUPS[group.name] = group
    return group


def standardize_within_batch(columns: torch.Tensor) -> torch.Tensor:
    """Z-score each column over the batch; a constant column becomes zeros."""
    mean = columns.mean(dim=0, keepdim=True)
    std = columns.std(dim=0, unbiased=False, keepdim=True)
    return (columns - mean) / std.clamp_min(1e-6)


def standardize_over_pool(columns: np.ndarray) -> torch.Tensor:
    """Z-score each column of an (n_pool, k) offline matrix over the whole pool, as float32."""
    return standardize_within_batch(torch.as_tensor(np.asarray(columns, dtype=np.float64))).float()


def check_feature_names(names: list[str]) -> list[str]:
    """Return one problem line per unknown or repeated name in `mts.features`."""
    problems = []
    allowed = ", ".join(sorted(FEATURE_GROUPS))
    if not names:
        problems.append(f"mts.features=[] selects no feature group; choose one or more of: {allowed}")
    for name in names:
        if name not in FEATURE_GROUPS:
            problems.append(f"mts.features contains unknown group {name!r}; allowed: {allowed}")
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        problems.append(f"mts.features lists {', '.join(duplicates)} more than once; list each group once")
    return problems


class Featurizer:
    """The selected feature groups, assembled into one meta-network input."""

    def __init__(self, names: list[str]) -> None:
        problems = check_feature_names(list(names))
        if problems:
            raise ConfigError(problems[0])
        self.names = list(names)
        self.groups = [FEATURE_GROUPS[name]() for name in self.names]
        self.use_class = "class" in self.names
        self.use_source = "source" in self.names
        self.needs_meta_embeddings = any(group.needs_meta_embeddings for group in self.groups)

    @property
    def width(self) -> int:
        return sum(group.width for group in self.groups)

    def prepare(self, context: FeatureContext) -> None:
        """Prepare every group once before training, in the order of `mts.features`."""
        for group in self.groups:
            group.prepare(context)

    def compute(self, batch: FeatureBatch) -> torch.Tensor:
        """Return the (N, width) continuous meta-network input of one pool batch."""
        columns = [group.compute(batch) for group in self.groups if group.width > 0]
        if not columns:
            return batch.losses.new_zeros((batch.losses.shape[0], 0))
        return torch.cat(columns, dim=1)

    def observe(self, batch: FeatureBatch) -> None:
        for group in self.groups:
            group.observe(batch)

    def state_dict(self) -> dict[str, Any]:
        return {group.name: group.state_dict() for group in self.groups}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for group in self.groups:
            group.load_state_dict(state.get(group.name, {}))
