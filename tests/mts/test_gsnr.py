"""GSNR estimators recover known values from synthetic Gaussian gradients."""

from __future__ import annotations

import math

import pytest
import torch

from mts.gsnr import gsnr_from_samples, noise_scale


def gaussian_samples(count: int, mean: float, std: float, parameters: int = 2000, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return mean + std * torch.randn(count, parameters, generator=generator, dtype=torch.float64)


def test_recovers_known_gsnr():
    # E[g]^2 / Var[g] = 0.6^2 / 1.5^2 = 0.16
    summary = gsnr_from_samples(gaussian_samples(count=64, mean=0.6, std=1.5))
    assert summary.median == pytest.approx(0.16, rel=0.10)
    assert summary.pooled == pytest.approx(0.16, rel=0.10)


def test_bias_correction_removes_mean_square_bias():
    # With zero mean, the uncorrected m^2 / v would average 1/K; the corrected estimate is near 0.
    summary = gsnr_from_samples(gaussian_samples(count=8, mean=0.0, std=1.0, parameters=20000))
    assert abs(summary.pooled) < 0.02
    assert abs(summary.pooled) < 1 / 8 / 4


def test_grows_linearly_with_batch_size():
    per_sample = 0.05  # GSNR of a single i.i.d. sample: 0.5^2 / (sqrt(5))^2
    measured = {}
    for batch_size in (1, 4, 16, 64):
        draws = gaussian_samples(count=32 * batch_size, mean=0.5, std=math.sqrt(5), seed=batch_size)
        batch_means = draws.view(32, batch_size, -1).mean(dim=1)
        measured[batch_size] = gsnr_from_samples(batch_means).pooled
    for batch_size, value in measured.items():
        assert value == pytest.approx(per_sample * batch_size, rel=0.15), batch_size
    assert measured[64] > measured[16] > measured[4] > measured[1]


def test_noise_scale_is_batch_size_over_pooled_gsnr():
    summary = gsnr_from_samples(gaussian_samples(count=64, mean=0.6, std=1.5))
    assert noise_scale(summary, batch_size=32) == pytest.approx(32 / summary.pooled)
    pure_noise = gsnr_from_samples(gaussian_samples(count=4, mean=0.0, std=1.0, parameters=50, seed=2))
    if pure_noise.pooled <= 0:
        assert noise_scale(pure_noise, 32) == math.inf


def test_rejects_single_sample():
    with pytest.raises(ValueError, match="K >= 2"):
        gsnr_from_samples(torch.ones(1, 5))


def test_constant_parameters_are_left_out():
    samples = gaussian_samples(count=64, mean=0.6, std=1.5, parameters=100)
    samples[:, :10] = 3.0
    summary = gsnr_from_samples(samples)
    assert math.isfinite(summary.median)
