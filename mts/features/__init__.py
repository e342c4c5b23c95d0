"""Per-sample feature groups: the meta-network's inputs, one selectable block each."""

from __future__ import annotations

# Imported for their registration side effect; the order sets the order of FEATURE_GROUPS.
from mts.features import basic  # noqa: F401  isort: skip
from mts.features import confidence  # noqa: F401  isort: skip
from mts.features import dynamics  # noqa: F401  isort: skip
from mts.features import position  # noqa: F401  isort: skip
from mts.features import online_position  # noqa: F401  isort: skip
from mts.features import pruning  # noqa: F401  isort: skip
from mts.features.base import (
    FEATURE_GROUPS,
    FeatureBatch,
    FeatureContext,
    FeatureGroup,
    Featurizer,
    check_feature_names,
    register,
    standardize_over_pool,
    standardize_within_batch,
)

__all__ = [
    "FEATURE_GROUPS",
    "FeatureBatch",
    "FeatureContext",
    "FeatureGroup",
    "Featurizer",
    "check_feature_names",
    "register",
    "standardize_over_pool",
    "standardize_within_batch",
]
