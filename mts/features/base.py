"""The feature-group interface: named blocks of meta-network input columns.

A search space switches groups on and off, so each group is one class registered under its name.
Groups come in four kinds: `online` groups are computed from every pool batch, `static` groups
(class, source) enter the meta-network as learned embeddings, `offline` groups are computed once per
task before training, and `tracked` groups keep per-sample buffers across epochs.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import ClassVar

import torch

from mts.errors import ConfigError

logger = logging.getLogger(__name__)

KINDS = ("online", "static", "offline", "tracked")


@dataclasses.dataclass
class FeatureBatch:
    """What an online feature group may read about one pool batch.

    Everything here is detached from the graph: features are inputs to the meta-network, not
    functions of the classifier parameters.
    """

    index: torch.Tensor  # (N,) positions of the samples in the pool
    x: torch.Tensor  # (N, d)
    y: torch.Tensor  # (N,)
    source: torch.Tensor  # (N,)
    logits: torch.Tensor  # (N, C) classifier output at the current parameters
    losses: torch.Tensor  # (N,) per-sample cross-entropy


class FeatureGroup:
    """One named block of meta-network input columns."""

    name: ClassVar[str]
    kind: ClassVar[str]
    # Continuous columns this group adds; embedding groups (class, source) add none.
    width: ClassVar[int] = 0

    def compute(self, batch: FeatureBatch) -> torch.Tensor:
        """Return the (N, width) columns of this group for one batch."""
        raise NotImplementedError


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

    @property
    def width(self) -> int:
        return sum(group.width for group in self.groups)

    def compute(self, batch: FeatureBatch) -> torch.Tensor:
        """Return the (N, width) continuous meta-network input of one pool batch."""
        columns = [group.compute(batch) for group in self.groups if group.width > 0]
        if not columns:
            return batch.losses.new_zeros((batch.losses.shape[0], 0))
        return torch.cat(columns, dim=1)
