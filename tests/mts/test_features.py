"""Feature groups: formulas on hand-made inputs, standardization, honesty, training and resume."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from small_runs import make_small

from mts import ConfigError, RunConfig, Trainer
from mts.config import TaskConfig
from mts.features import FEATURE_GROUPS, FeatureBatch, FeatureContext, Featurizer, standardize_over_pool, standardize_within_batch
from mts.features.confidence import confidence_columns
from mts.features.dynamics import DynamicsFeature
from mts.features.online_position import meta_cosine_columns, top_k_mean
from mts.features.position import (
    distance_percentile,
    domain_probability,
    neighbour_columns,
    prototype_cosine,
    stratified_folds,
)
from mts.features.warmup import forgetting_events, warmup_outputs
from mts.tasks import build_task
from mts.tasks.base import Task

CONTINUOUS_GROUPS = [name for name, group in FEATURE_GROUPS.items() if group.width > 0]
SMALL_TASK = TaskConfig(name="mnist1d_shift", pool_size=600, meta_size=40, val_size=100, test_size=100)


def small_config(features: list[str], cache_dir: str, **changes: object) -> RunConfig:
    config = RunConfig(method="mts", task=dataclasses.replace(SMALL_TASK, cache_dir=cache_dir))
    config.mts.features = list(features)
    config.mts.feature_warmup_epochs = 2
    return make_small(config, **changes)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Two threads next to another busy process are many times slower than one on a small machine.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def task() -> Task:
    # The task comes from the shared task cache; offline features go to each test's own folder.
    return build_task(SMALL_TASK)


def batch_of(task: Task, index: torch.Tensor, logits: torch.Tensor, meta_count: int = 32) -> FeatureBatch:
    y = torch.as_tensor(task.pool.y[index.numpy()], dtype=torch.long)
    losses = torch.nn.functional.cross_entropy(logits, y, reduction="none")
    generator = torch.Generator().manual_seed(1)
    return FeatureBatch(
        index=index,
        x=torch.as_tensor(task.pool.x[index.numpy()]),
        y=y,
        source=torch.as_tensor(task.pool.source[index.numpy()]),
        logits=logits,
        losses=losses,
        embeddings=torch.randn(len(index), 16, generator=generator),
        meta_embeddings=torch.randn(meta_count, 16, generator=generator),
    )


# Formulas on hand-made inputs ------------------------------------------------------------------


def test_confidence_columns_known_logits():
    # Softmax of [ln 3, 0, 0] is [0.6, 0.2, 0.2]; of [0, 0, 0] is uniform.
    logits = torch.tensor([[math.log(3.0), 0.0, 0.0], [0.0, 0.0, 0.0]])
    columns = confidence_columns(logits, torch.tensor([0, 1]))
    label_prob, margin, entropy, el2n = columns.T
    assert label_prob.tolist() == pytest.approx([0.6, 1 / 3], abs=1e-6)
    assert margin.tolist() == pytest.approx([0.4, 0.0], abs=1e-6)
    expected_entropy = -(0.6 * math.log(0.6) + 2 * 0.2 * math.log(0.2))
    assert entropy.tolist() == pytest.approx([expected_entropy, math.log(3)], abs=1e-6)
    assert el2n[0].item() == pytest.approx(math.sqrt(0.4**2 + 0.2**2 + 0.2**2), abs=1e-6)
    assert el2n[1].item() == pytest.approx(math.sqrt((2 / 3) ** 2 + 2 / 9), abs=1e-6)


def test_confidence_margin_negative_when_wrong():
    columns = confidence_columns(torch.tensor([[0.0, math.log(4.0)]]), torch.tensor([0]))
    assert columns[0, 1].item() == pytest.approx(0.2 - 0.8, abs=1e-6)


def test_prototype_cosine_of_prototype_is_one():
    reference = torch.tensor([[1.0, 0.0], [3.0, 2.0], [0.0, -5.0]])
    reference_labels = torch.tensor([0, 0, 1])
    points = torch.tensor([[2.0, 1.0], [2.0, 1.0], [0.0, 5.0]])
    cosine = prototype_cosine(points, torch.tensor([0, 1, 1]), reference, reference_labels, num_classes=2)
    assert cosine[0].item() == pytest.approx(1.0)
    assert cosine[1].item() == pytest.approx(2.0 * 0 + 1.0 * -5.0 / (math.sqrt(5) * 5))
    assert cosine[2].item() == pytest.approx(-1.0)


def test_prototype_cosine_class_without_reference_is_zero():
    cosine = prototype_cosine(torch.tensor([[1.0, 1.0]]), torch.tensor([1]), torch.tensor([[1.0, 0.0]]), torch.tensor([0]), 2)
    assert cosine.item() == 0.0


def test_knn_agreement_all_neighbours_disagree_is_zero():
    reference = torch.tensor([[1.0, 0.1], [1.0, -0.1], [0.9, 0.0], [-1.0, 0.0]])
    reference_labels = torch.tensor([1, 1, 1, 0])
    points = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    top_k, agreement = neighbour_columns(points, torch.tensor([0, 1]), reference, reference_labels, k=3)
    assert agreement[0].item() == 0.0
    assert agreement[1].item() == pytest.approx(1.0)
    # The only reference of label 0 points the other way, so its cosine is -1.
    assert top_k[0].item() == pytest.approx(-1.0)


def test_knn_agreement_weights_by_similarity():
    reference = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    _, agreement = neighbour_columns(torch.tensor([[1.0, 1.0]]), torch.tensor([0]), reference, torch.tensor([0, 1]), k=2)
    assert agreement.item() == pytest.approx(0.5)
    _, agreement = neighbour_columns(torch.tensor([[2.0, 1.0]]), torch.tensor([0]), reference, torch.tensor([0, 1]), k=2)
    assert agreement.item() == pytest.approx(2 / 3)


def test_neighbours_exclude_the_sample_itself():
    points = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 1])
    _, agreement = neighbour_columns(points, labels, points, labels, k=1, exclude=torch.tensor([0, 1]))
    assert agreement.tolist() == [0.0, 0.0]


def test_distance_percentile_farthest_is_one():
    points = torch.tensor([[0.0], [1.0], [-1.0], [10.0], [5.0]])
    percentile = distance_percentile(points, torch.tensor([0, 0, 0, 0, 1]), num_classes=2)
    # Class 0 mean is 2.5: distances 2.5, 1.5, 3.5, 7.5.
    assert percentile.tolist() == pytest.approx([0.5, 0.25, 0.75, 1.0, 1.0])


def test_domain_probability_separates_domains():
    rng = np.random.default_rng(0)
    points = np.concatenate([rng.normal(3.0, 1.0, (40, 2)), rng.normal(-3.0, 1.0, (200, 2))])
    is_real = np.arange(240) < 40
    probability = domain_probability(points, is_real, seed=0)
    assert probability[:40].mean() > 0.9
    assert probability[40:].mean() < 0.1


def test_stratified_folds_balance_classes():
    labels = np.array([1] * 10 + [0] * 40)
    fold = stratified_folds(labels, folds=5, seed=0)
    for number in range(5):
        assert (labels[fold == number] == 1).sum() == 2
        assert (labels[fold == number] == 0).sum() == 8


def test_forgetting_right_wrong_right_is_one_event():
    history = torch.tensor([[True, True, False], [False, True, False], [True, False, True]])
    assert forgetting_events(history).tolist() == [1, 1, 0]


def test_dynamics_right_wrong_right():
    group = DynamicsFeature()
    group.allocate(pool_size=3)
    index, y = torch.tensor([1]), torch.tensor([0])
    # Label probabilities 0.75, 0.25, 0.75 from logits [ln 3, 0], [0, ln 3], [ln 3, 0].
    for logits in ([math.log(3.0), 0.0], [0.0, math.log(3.0)], [math.log(3.0), 0.0]):
        logits = torch.tensor([logits])
        losses = torch.nn.functional.cross_entropy(logits, y, reduction="none")
        group.observe(FeatureBatch(index=index, x=torch.zeros(1, 1), y=y, source=y, logits=logits, losses=losses))
    mean_prob, std_prob, fraction_correct, forgetting, margin, loss_ema = group.raw_columns(torch.tensor([1, 0]))[0].tolist()
    assert forgetting == 1.0
    assert fraction_correct == pytest.approx(2 / 3)
    assert mean_prob == pytest.approx(7 / 12)
    assert std_prob == pytest.approx(math.sqrt(2) * 0.25 * 2 / 3)
    assert margin == pytest.approx(math.log(3.0) / 3)
    losses = [-math.log(0.75), -math.log(0.25), -math.log(0.75)]
    assert loss_ema == pytest.approx(0.5 * (0.5 * losses[0] + 0.5 * losses[1]) + 0.5 * losses[2])
    assert group.raw_columns(torch.tensor([0])).tolist() == [[0.0] * 6]


def test_meta_cosine_columns_known_vectors():
    meta = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    columns = meta_cosine_columns(torch.tensor([[1.0, 0.0]]), meta, k=2)
    assert columns[0, 0].item() == pytest.approx((1.0 + 1 / math.sqrt(2)) / 2)
    assert columns[0, 1].item() == pytest.approx(1 / math.sqrt(2))


@pytest.mark.parametrize("k", [1, 3, 7, 12])
def test_top_k_mean_matches_torch_topk(k):
    similarity = torch.randn(9, 7, generator=torch.Generator().manual_seed(k))
    expected = similarity.topk(min(k, 7), dim=1).values.mean(dim=1)
    assert torch.allclose(top_k_mean(similarity, k), expected, atol=1e-6)


# Standardization -------------------------------------------------------------------------------


def test_standardize_within_batch_zero_mean_unit_std():
    columns = standardize_within_batch(torch.tensor([[1.0, 5.0], [2.0, 5.0], [3.0, 5.0], [6.0, 5.0]]))
    assert columns[:, 0].mean().item() == pytest.approx(0.0, abs=1e-6)
    assert columns[:, 0].std(unbiased=False).item() == pytest.approx(1.0, abs=1e-5)
    assert columns[:, 1].abs().max().item() == 0.0


def test_standardize_over_pool_zero_mean_unit_std():
    columns = standardize_over_pool(np.array([[0.0, 1.0], [10.0, 1.0], [20.0, 1.0]]))
    assert columns.dtype == torch.float32
    assert columns[:, 0].tolist() == pytest.approx([-math.sqrt(1.5), 0.0, math.sqrt(1.5)], abs=1e-5)
    assert columns[:, 1].tolist() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("name", ["position", "pruning_scores"])
def test_offline_groups_standardized_over_pool(task, cache_dir, name):
    featurizer = Featurizer([name])
    featurizer.prepare(FeatureContext.from_task(task, small_config([name], cache_dir)))
    everything = featurizer.compute(batch_of(task, torch.arange(len(task.pool)), torch.zeros(len(task.pool), 10)))
    assert everything.shape == (len(task.pool), FEATURE_GROUPS[name].width)
    assert everything.mean(dim=0).abs().max().item() < 1e-4
    # A constant column, if any, is all zeros; every other column has unit std.
    stds = everything.std(dim=0, unbiased=False)
    assert (((stds - 1).abs() < 1e-3) | (stds == 0)).all(), stds


# Honesty ---------------------------------------------------------------------------------------


def test_quality_tags_never_reach_features(task, tmp_path):
    permuted = dataclasses.replace(task, quality=np.random.default_rng(1).permutation(task.quality))
    assert (permuted.quality != task.quality).any()
    generator = torch.Generator().manual_seed(0)
    index = torch.randperm(len(task.pool), generator=generator)[:200]
    logits = torch.randn(200, task.num_classes, generator=generator)
    matrices = []
    # Separate cache folders, so the second run computes the warm-up instead of reading the first's.
    for variant, folder in ((task, "first"), (permuted, "second")):
        featurizer = Featurizer(CONTINUOUS_GROUPS)
        featurizer.prepare(FeatureContext.from_task(variant, small_config(CONTINUOUS_GROUPS, str(tmp_path / folder))))
        batch = batch_of(variant, index, logits)
        featurizer.observe(batch)
        matrices.append(featurizer.compute(batch))
    assert matrices[0].shape == (200, sum(FEATURE_GROUPS[name].width for name in CONTINUOUS_GROUPS))
    assert torch.equal(matrices[0], matrices[1])


def test_feature_context_has_no_quality(task, cache_dir):
    context = FeatureContext.from_task(task, small_config(["loss"], cache_dir))
    assert "quality" not in {field.name for field in dataclasses.fields(context)}


# Representations and caching -------------------------------------------------------------------


def test_offline_features_cached_on_disk(task, tmp_path):
    config = small_config(["position"], str(tmp_path))
    first = warmup_outputs(FeatureContext.from_task(task, config))
    assert len(list((tmp_path / "features").glob("warmup-*.npz"))) == 1
    second = warmup_outputs(FeatureContext.from_task(task, config))
    assert np.array_equal(first.pool_embeddings, second.pool_embeddings)
    assert np.array_equal(first.forgetting, second.forgetting)

    computed, loaded = Featurizer(["position"]), Featurizer(["position"])
    computed.prepare(FeatureContext.from_task(task, config))
    assert len(list((tmp_path / "features").glob("position-*.npz"))) == 1
    loaded.prepare(FeatureContext.from_task(task, config))
    assert torch.equal(computed.groups[0].columns, loaded.groups[0].columns)


def test_offline_cache_separates_settings(task, tmp_path):
    for k in (3, 5):
        Featurizer(["position"]).prepare(FeatureContext.from_task(task, small_config(["position"], str(tmp_path), mts__position_k=k)))
    assert len(list((tmp_path / "features").glob("position-*.npz"))) == 2


def test_position_with_task_embeddings(task, cache_dir):
    rng = np.random.default_rng(0)
    embeddings = {"pool": rng.normal(size=(len(task.pool), 6)), "meta": rng.normal(size=(len(task.meta), 6))}
    with_embeddings = dataclasses.replace(task, embeddings=embeddings)
    config = small_config(["position"], cache_dir, mts__position_representation="embeddings")
    featurizer = Featurizer(["position"])
    featurizer.prepare(FeatureContext.from_task(with_embeddings, config))
    raw = Featurizer(["position"])
    raw.prepare(FeatureContext.from_task(task, small_config(["position"], cache_dir, mts__position_representation="raw")))
    batch = batch_of(task, torch.arange(50), torch.zeros(50, 10))
    assert not torch.equal(featurizer.compute(batch), raw.compute(batch))


def test_embeddings_requested_without_embeddings(task, cache_dir):
    config = small_config(["loss", "position"], cache_dir, mts__position_representation="embeddings")
    with pytest.raises(ConfigError, match=r"mts\.position_representation=embeddings needs task embeddings"):
        Trainer(config, task=task)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"mts__position_representation": "pca"}, r"mts\.position_representation='pca' is not allowed"),
        ({"mts__position_k": 0}, r"mts\.position_k=0 must be an integer >= 1"),
        ({"mts__feature_warmup_epochs": 0}, r"mts\.feature_warmup_epochs=0 must be an integer >= 1"),
    ],
)
def test_invalid_feature_config_rejected(task, cache_dir, changes, expected):
    with pytest.raises(ConfigError, match=expected):
        Trainer(small_config(["loss"], cache_dir, **changes), task=task)


# Training --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [*CONTINUOUS_GROUPS, "all"])
def test_group_trains_two_epochs(task, cache_dir, name):
    features = ["loss", "class", "source", *[group for group in CONTINUOUS_GROUPS if group != "loss"]] if name == "all" else [name]
    trainer = Trainer(small_config(features, cache_dir), task=task)
    # The class and source embeddings add embedding_dim columns each.
    embedding_columns = 2 * trainer.config.mts.embedding_dim if name == "all" else 0
    expected_width = sum(FEATURE_GROUPS[group].width for group in features) + embedding_columns
    assert trainer.method.metanet.body[0].in_features == expected_width
    reports = list(trainer)
    assert [report.epoch for report in reports] == [1, 2]
    assert math.isfinite(reports[-1].train_loss)
    assert math.isfinite(reports[-1].gsnr)
    assert 0.0 <= reports[-1].weight_auc <= 1.0


def test_resume_with_dynamics_reproduces_next_epoch(task, cache_dir, tmp_path):
    config = small_config(["loss", "dynamics", "online_position", "position"], cache_dir, train__epochs=3)
    uninterrupted = list(Trainer(config, task=task))

    first = Trainer(config, task=task)
    first.run_epoch()
    first.run_epoch()
    first.save(tmp_path / "state.pt")
    resumed = Trainer(config, task=task)
    resumed.load(tmp_path / "state.pt")
    # Each epoch visits the full batches only; the remainder of the shuffled pool is dropped.
    visited_per_epoch = len(task.pool) // config.pool.batch_size * config.pool.batch_size
    assert resumed.method.featurizer.groups[1].buffers["visits"].sum().item() == 2 * visited_per_epoch
    third = resumed.run_epoch()

    timing = ("samples_per_sec", "wall_time")
    expected = {key: value for key, value in uninterrupted[2].to_dict().items() if key not in timing}
    actual = {key: value for key, value in third.to_dict().items() if key not in timing}
    assert actual == expected
