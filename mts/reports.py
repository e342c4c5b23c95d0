"""The per-epoch report: the one record that flows from the trainer to a sweep and its analysis."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional


@dataclasses.dataclass
class Reference:
    """The `uniform` result of the same task and seed, which gains are measured against."""

    val_acc: float  # best validation accuracy of the uniform run
    test_acc: float  # test accuracy of the uniform run's validation-selected model


@dataclasses.dataclass
class EpochReport:
    """Measurements of one epoch of training.

    Accuracies are fractions in [0, 1]; gains are differences of fractions. GSNR fields hold the
    latest measurement (NaN before the first one, and for methods without a meta-network).
    """

    epoch: int  # 1-based number of the finished epoch
    steps: int  # classifier updates so far
    train_loss: float  # mean weighted pool loss over the epoch
    val_acc: float
    val_loss: float
    test_acc: float  # reported, never used for selection
    best_epoch: int  # the epoch of the best val_acc so far
    best_val_acc: float
    best_test_acc: float  # test accuracy of the model with the best val_acc
    meta_loss: float  # mean meta loss over this epoch's meta updates
    gsnr: float  # median per-parameter GSNR of batch meta-gradients at the trial's pool batch size
    gsnr_pooled: float  # the same, as a ratio of sums over parameters
    gsnr_per_sample: float  # median per-parameter GSNR of per-sample meta-gradients
    noise_scale: float  # B_simple, the batch size where signal and noise power are equal
    w_mean: float  # mean raw weight
    p_max: float  # largest normalized weight
    b_eff: float  # mean effective batch size 1 / sum p^2
    floor_hits: float  # batches whose weight sum hit the floor eps * N
    weight_auc: float  # AUC of this epoch's weights, faithful against harmful (NaN without tags)
    samples_per_sec: float  # pool samples trained per second of this epoch
    wall_time: float  # seconds of training so far, across resumes
    val_gain: Optional[float] = None  # val_acc minus the uniform reference
    test_gain: Optional[float] = None  # best_test_acc minus the uniform reference
    gsnr_epoch: int = 0  # the epoch the GSNR fields were measured at; 0 before the first measurement

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def diverged(self) -> bool:
        return not math.isfinite(self.train_loss)
