"""Per-sample feature groups: the meta-network's inputs, one selectable block each."""

from __future__ import annotations

from mts.features import basic  # noqa: F401 - registers the basic groups
from mts.features.base import (
    FEATURE_GROUPS,
    FeatureBatch,
    FeatureGroup,
    Featurizer,
    check_feature_names,
    register,
    standardize_within_batch,
)

__all__ = [
    "FEATURE_GROUPS",
    "FeatureBatch",
    "FeatureGroup",
    "Featurizer",
    "check_feature_names",
    "register",
    "standardize_within_batch",
]
