"""Normalized per-sample weights and the statistics that show their concentration.

The weighted loss of a batch is `sum_i p_i l_i` with `p_i = w_i / S` and `S = sum_j w_j`.
Normalizing per batch keeps the effective learning rate independent of the meta-network's overall
scale. The sum is floored at `eps * N` so that a batch of near-zero weights cannot divide by zero
or blow the step up. The floor hits are counted. The effective batch size
`B_eff = 1 / sum_i p_i^2` (for weights summing to one) falls when a few samples take most of the
weight, which is the mechanism behind a poor meta-gradient GSNR.
"""

from __future__ import annotations

import dataclasses

import torch


def normalize_weights(raw: torch.Tensor, eps: float) -> tuple[torch.Tensor, bool]:
    """Return `p = w / max(sum w, eps * N)` and whether the floor was hit."""
    floor = eps * raw.shape[0]
    total = raw.sum()
    floor_hit = bool(total.detach() < floor)
    return raw / total.clamp_min(floor), floor_hit


def effective_batch_size(p: torch.Tensor) -> float:
    """Return Kish's effective sample size `(sum p_i)^2 / sum p_i^2`, or 0 when every weight is zero.

    It equals `1 / sum p_i^2` for weights that sum to one, and stays within [1, N] when the floor
    is hit and the normalized weights sum to less than one.
    """
    p = p.detach().double()
    square_sum = float((p**2).sum())
    return float(p.sum()) ** 2 / square_sum if square_sum > 0 else 0.0


@dataclasses.dataclass
class WeightStats:
    """Running per-epoch statistics of raw and normalized weights."""

    raw_sum: float = 0.0
    samples: int = 0
    p_max: float = 0.0
    b_eff_sum: float = 0.0
    batches: int = 0
    floor_hits: int = 0

    def update(self, raw: torch.Tensor, p: torch.Tensor, floor_hit: bool) -> None:
        self.raw_sum += float(raw.detach().sum())
        self.samples += int(raw.shape[0])
        self.p_max = max(self.p_max, float(p.detach().max())) if p.numel() else self.p_max
        self.b_eff_sum += effective_batch_size(p)
        self.batches += 1
        self.floor_hits += int(floor_hit)

    def summary(self) -> dict[str, float]:
        """Return mean raw weight, max normalized weight, mean B_eff and the floor-hit count."""
        return {
            "w_mean": self.raw_sum / self.samples if self.samples else float("nan"),
            "p_max": self.p_max if self.batches else float("nan"),
            "b_eff": self.b_eff_sum / self.batches if self.batches else float("nan"),
            "floor_hits": float(self.floor_hits),
        }
