"""Measures of selection quality against hidden quality tags (evaluation only)."""

from __future__ import annotations

import numpy as np


def weight_auc(weights: np.ndarray, quality: np.ndarray) -> float:
    """Return the ROC AUC of `weights` for telling faithful (1) from harmful (0) samples.

    It is the probability that a random faithful sample weighs more than a random harmful one, ties
    counting half (the Mann-Whitney U statistic). NaN when either class is absent.
    """
    weights = np.asarray(weights, dtype=np.float64)
    quality = np.asarray(quality)
    faithful = quality == 1
    positives, negatives = int(faithful.sum()), int((~faithful).sum())
    if positives == 0 or negatives == 0:
        return float("nan")
    ranks = _average_ranks(weights)
    rank_sum = float(ranks[faithful].sum())
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """Return 1-based ranks with ties sharing their average rank."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    ranks = np.empty(len(values), dtype=np.float64)
    start = 0
    while start < len(values):
        end = start
        while end + 1 < len(values) and sorted_values[end + 1] == sorted_values[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return ranks
