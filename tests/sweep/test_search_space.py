"""Search-space format and checks: one problem line per mistake, naming the key, value and rule."""

from __future__ import annotations

import json

import optuna
import pytest

from sweep.search_space import (
    SearchSpace,
    SpaceSampler,
    bundled_names,
    decode_choice,
    encode_choice,
    parse_search_space,
    read_search_space,
)


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"pool.batchsize": {"choice": [32]}}, "unknown parameter 'pool.batchsize'; did you mean pool.batch_size?"),
        ({"nothing.here": 3}, "unknown parameter 'nothing.here'"),
        ({"pool.batch_size": {"choice": []}}, "pool.batch_size choice list is empty"),
        ({"mts.lr": {"float": [0.1, 0.01]}}, "mts.lr range has low=0.1 >= high=0.01"),
        ({"mts.lr": {"float": [0.0, 0.1], "log": True}}, "mts.lr log range [0.0, 0.1] touches zero"),
        ({"mts.interval": {"int": [-2, 4], "log": True}}, "touches zero or below"),
        ({"pool.batch_size": {"float": [1.0, 8.0]}}, "pool.batch_size is an int key and cannot take a float range"),
        ({"pool.batch_size": {"choice": ["big"]}}, "pool.batch_size choice 'big' is not an int"),
        ({"train.lr": {"choice": ["1.0e6"]}}, "YAML reads '1.0e6' as text, write it with a signed exponent such as 1.0e+6"),
        ({"task": "file"}, "unknown parameter 'task'; to choose the task, set task.name"),
        ({"mts.features": {"choice": [["loss"], "class"]}}, "mts.features choice 'class' is not a list"),
        ({"mts.features": {"choice": [["loss"], ["loss"]]}}, "lists the choice [\"loss\"] twice"),
        ({"mts.lr": {"float": [0.1, 0.2], "log": True, "step": 0.01}}, "sets both step and log"),
        ({"mts.lr": {"choice": [0.1], "float": [0.1, 0.2]}}, "must have exactly one of choice, int, float, value"),
        ({"train.threads": {"choice": [1, 2]}}, "train.threads is set from sweep.cpus_per_trial"),
    ],
)
def test_bad_param_gives_one_line(params: dict, expected: str) -> None:
    space, problems = parse_search_space({"params": params}, "bad")
    assert space is None
    assert len(problems) == 1
    assert expected in problems[0]
    assert "\n" not in problems[0]


def test_every_problem_listed_at_once() -> None:
    params = {"pool.batch_size": {"choice": []}, "mts.lr": {"float": [1.0, 0.5]}, "bogus.key": 1}
    _, problems = parse_search_space({"params": params, "extra": 1}, "bad")
    assert len(problems) == 4


def test_missing_params_rejected() -> None:
    _, problems = parse_search_space({"sweep": {"num_samples": 3}}, "bad")
    assert problems == ["search space 'bad': `params` must be a non-empty mapping of run-config keys to specs"]


def test_bundled_spaces_parse() -> None:
    assert {"smoke", "batch_scaling", "feature_ablation", "meta_lr", "paper"} <= set(bundled_names())
    for name in bundled_names():
        space, problems = read_search_space(name)
        assert problems == [], name
        assert space is not None and space.searched, name


def test_bundled_spaces_start_with_command() -> None:
    from sweep.search_space import SEARCH_SPACE_DIR

    for name in bundled_names():
        first = (SEARCH_SPACE_DIR / f"{name}.yaml").read_text().splitlines()[0]
        assert first == f"# mtsweep launch search_space={name}", name


def test_unknown_space_name_lists_bundled() -> None:
    space, problems = read_search_space("smok")
    assert space is None
    assert "search_space='smok' is neither a bundled search space nor an existing .yaml file" in problems[0]
    assert "smoke" in problems[0]


def test_list_choice_encoded_for_optuna() -> None:
    choices = (["loss"], ["loss", "class"])
    assert encode_choice(["loss", "class"]) == json.dumps(["loss", "class"])
    assert decode_choice('["loss", "class"]', choices) == ["loss", "class"]
    assert encode_choice(64) == 64


def test_sampler_suggests_decoded_values() -> None:
    data = {"params": {"mts.features": {"choice": [["loss"], ["loss", "class"]]}, "mts.lr": {"float": [1e-4, 1e-2], "log": True}, "train.epochs": 2}}
    space, _ = parse_search_space(data, "s")
    assert isinstance(space, SearchSpace)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    values = SpaceSampler(space)(trial)
    assert values["mts.features"] in (["loss"], ["loss", "class"])
    assert trial.params["mts.features"] == json.dumps(values["mts.features"])
    assert values["train.epochs"] == 2
    assert 1e-4 <= values["mts.lr"] <= 1e-2


def test_baseline_combinations_cover_seeds_and_task() -> None:
    data = {"params": {"seed": {"choice": [0, 1]}, "task.pool_size": {"choice": [600, 800]}, "pool.batch_size": {"choice": [32, 64]}}}
    space, _ = parse_search_space(data, "s")
    combinations = space.baseline_combinations()
    assert len(combinations) == 4  # the pool batch does not change the uniform baseline
    assert {(c["seed"], c["task.pool_size"]) for c in combinations} == {(0, 600), (0, 800), (1, 600), (1, 800)}
