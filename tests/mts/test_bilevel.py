"""The bi-level step: exact, finite-difference and numeric meta-gradients agree."""

from __future__ import annotations

import pytest
import torch

from mts.bilevel import BilevelStep, MetaBatch, PoolBatch, l2rw_weights
from mts.config import MTSConfig
from mts.functional import flatten, meta_loss_at, parameters_of, per_sample_losses
from mts.metanet import MetaNetwork
from mts.models import MLP
from mts.weights import effective_batch_size, normalize_weights


def make_step(gradient: str = "exact", init_bias: float = 0.0, batch_norm: bool = False, seed: int = 0):
    torch.manual_seed(seed)
    model = MLP(input_dim=6, num_classes=3, hidden=[8], batch_norm=batch_norm).double()
    metanet = MetaNetwork(
        feature_dim=2, num_classes=3, num_sources=2, hidden=[5], embedding_dim=3,
        use_class=True, use_source=True, init_bias=init_bias,
    ).double()
    config = MTSConfig(gradient=gradient, virtual_lr=0.5, fd_radius=1e-3)
    count = 12
    batch = PoolBatch(
        index=torch.arange(count),
        x=torch.randn(count, 6, dtype=torch.float64),
        y=torch.randint(0, 3, (count,)),
        source=torch.randint(0, 2, (count,)),
        features=torch.randn(count, 2, dtype=torch.float64),
    )
    meta = MetaBatch(x=torch.randn(7, 6, dtype=torch.float64), y=torch.randint(0, 3, (7,)))
    return BilevelStep(model, metanet, config), batch, meta


def numeric_meta_gradient(step: BilevelStep, batch: PoolBatch, meta: MetaBatch, h: float = 1e-5) -> torch.Tensor:
    """Central differences of L_meta(theta'(phi)) in every coordinate of phi."""

    def meta_loss() -> float:
        theta = parameters_of(step.model)
        losses = per_sample_losses(step.model, theta, batch.x, batch.y)
        _, p, _ = step.normalized_weights(batch)
        grads = torch.autograd.grad((p * losses).sum(), list(theta.values()))
        virtual = {name: value - step.config.virtual_lr * g for (name, value), g in zip(theta.items(), grads)}
        return float(meta_loss_at(step.model, virtual, meta.x, meta.y).detach())

    result = []
    with torch.no_grad():
        for parameter in step.metanet.parameters():
            flat = parameter.view(-1)
            for j in range(flat.numel()):
                original = float(flat[j])
                flat[j] = original + h
                with torch.enable_grad():
                    upper = meta_loss()
                flat[j] = original - h
                with torch.enable_grad():
                    lower = meta_loss()
                flat[j] = original
                result.append((upper - lower) / (2 * h))
    return torch.tensor(result, dtype=torch.float64)


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def test_exact_matches_numeric_meta_gradient():
    step, batch, meta = make_step("exact")
    exact, _ = step.exact_meta_gradient(batch, meta)
    numeric = numeric_meta_gradient(step, batch, meta)
    assert relative_error(flatten(exact), numeric) < 1e-2


def test_finite_difference_matches_exact():
    step, batch, meta = make_step("finite_difference")
    approximate, _ = step.finite_difference_meta_gradient(batch, meta)
    exact, _ = step.exact_meta_gradient(batch, meta)
    assert flatten(exact).norm() > 0
    assert relative_error(flatten(approximate), flatten(exact)) < 1e-2


def test_finite_difference_matches_numeric_meta_gradient():
    step, batch, meta = make_step("finite_difference", seed=3)
    approximate, _ = step.finite_difference_meta_gradient(batch, meta)
    numeric = numeric_meta_gradient(step, batch, meta)
    assert relative_error(flatten(approximate), numeric) < 1e-2


def test_meta_gradient_dispatches_on_config():
    step, batch, meta = make_step("finite_difference")
    dispatched, _ = step.meta_gradient(batch, meta)
    direct, _ = step.finite_difference_meta_gradient(batch, meta)
    assert torch.equal(flatten(dispatched), flatten(direct))


def test_virtual_forward_leaves_batchnorm_statistics():
    step, batch, meta = make_step("exact", batch_norm=True)
    before = {name: value.clone() for name, value in step.model.named_buffers()}
    step.exact_meta_gradient(batch, meta)
    step.finite_difference_meta_gradient(batch, meta)
    step.per_sample_meta_gradients(batch, meta)
    for name, value in step.model.named_buffers():
        assert torch.equal(value, before[name]), name
    assert step.model.training


def test_per_sample_vmap_matches_loop():
    step, batch, meta = make_step("exact")
    vectorized = step.per_sample_meta_gradients(batch, meta)
    looped = step.per_sample_meta_gradients_looped(batch, meta)
    assert vectorized.shape == (12, sum(p.numel() for p in step.metanet.parameters()))
    assert relative_error(vectorized, looped) < 1e-8


def test_per_sample_mean_is_batch_meta_gradient():
    step, batch, meta = make_step("exact")
    per_sample = step.per_sample_meta_gradients(batch, meta)
    exact, _ = step.exact_meta_gradient(batch, meta)
    assert relative_error(per_sample.mean(dim=0), flatten(exact)) < 1e-6


def test_all_zero_weights_give_no_nan():
    # sigmoid(-1e4) underflows to exactly zero, the worst case for the normalization.
    step, batch, meta = make_step("exact", init_bias=-1e4)
    raw, p, floor_hit = step.normalized_weights(batch)
    assert float(raw.sum()) == 0.0
    assert floor_hit
    assert torch.isfinite(p).all()
    assert float(p.sum()) == 0.0
    assert effective_batch_size(p) == 0.0
    for gradient in ("exact", "finite_difference"):
        step.config.gradient = gradient
        grads, meta_loss = step.meta_gradient(batch, meta)
        assert torch.isfinite(flatten(grads)).all(), gradient
        assert meta_loss == pytest.approx(meta_loss)


def test_normalized_weights_sum_to_one_above_floor():
    raw = torch.tensor([0.2, 0.3, 0.5, 1.0])
    p, floor_hit = normalize_weights(raw, eps=1e-3)
    assert not floor_hit
    assert float(p.sum()) == pytest.approx(1.0)
    assert effective_batch_size(torch.full((8,), 1 / 8)) == pytest.approx(8.0)


def test_l2rw_weights_clip_negative_alignment():
    step, batch, meta = make_step("exact")
    weights = l2rw_weights(step.model, batch.x, batch.y, meta, alpha=0.5)
    assert (weights >= 0).all()
    assert float(weights.sum()) == pytest.approx(1.0)
    # A meta batch equal to the pool batch aligns every sample with the meta gradient on average.
    same = MetaBatch(x=batch.x, y=batch.y)
    assert float(l2rw_weights(step.model, batch.x, batch.y, same, alpha=0.5).sum()) == pytest.approx(1.0)
