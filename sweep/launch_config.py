"""The config of `mtsweep launch`: a run config plus the search space, sweep, storage and cluster.

`load_launch_config` composes the `launch` primary config, reads the search space, applies the
space's `sweep:` defaults under the command-line overrides, and checks everything, so that every
problem is reported in one line each before Ray starts or a folder is created.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import os
import re
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mts.config import RunConfig
from mts.errors import MtsError
from mts.validation import config_problems
from sweep.config import compose_valid_overrides, to_run_config
from sweep.errors import ConfigProblems
from sweep.search_space import SearchSpace, affects_baseline, bundled_names, parse_search_space, read_search_space

logger = logging.getLogger(__name__)

SEARCHERS = ("tpe", "random", "grid", "cmaes", "nsga2")
SCHEDULERS = ("none", "asha")
MODES = ("max", "min")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
# One path component: the experiment folder under sweep.root and the Optuna study name.
EXPERIMENT_NAME = re.compile(r"[A-Za-z0-9._-]+")
# Metrics a trial reports every epoch that a sweep may optimize.
OBJECTIVES = ("val_gain", "val_acc", "best_val_acc", "wall_time", "samples_per_sec", "gsnr", "b_eff")


@dataclasses.dataclass
class SweepConfig:
    """How many trials run, how they are chosen, scheduled and retried, and where results go."""

    num_samples: int = 20  # trials in total, counting the finished ones of a resumed sweep
    max_concurrent_trials: int = 0  # 0: as many as the cluster's CPUs allow (CPUs / cpus_per_trial)
    cpus_per_trial: float = 1.0  # CPUs reserved per trial (fractional allowed); torch threads = max(1, floor)
    gpus_per_trial: float = 0.0  # GPUs reserved per trial (fractional allowed)
    searcher: str = "tpe"  # tpe | random | grid | cmaes | nsga2 (nsga2 needs metric2)
    seed: int = 0  # seed of the Optuna sampler
    scheduler: str = "none"  # none | asha (early stopping over epochs; single objective only)
    asha_grace_period: int = 1  # epochs every trial runs before ASHA may stop it
    asha_reduction_factor: float = 3.0  # ASHA keeps 1 / reduction_factor of the trials at each rung
    max_failures: int = 2  # retries of a trial that raised, each resuming from its last checkpoint
    metric: str = "val_gain"  # the objective reported every epoch
    mode: str = "max"  # max | min
    metric2: Optional[str] = None  # a second objective (e.g. wall_time) for multi-objective search
    mode2: str = "min"  # max | min, for metric2
    root: str = "experiments"  # parent folder of the experiment folders
    name: Optional[str] = None  # experiment folder name; None: <date>-<time>-<search space>
    progress_interval_s: float = 10.0  # seconds between two printed trial tables
    state_save_s: float = 2.0  # seconds between saves of Ray Tune's experiment state (resume point)


@dataclasses.dataclass
class StorageConfig:
    """The one SQL database of an experiment: Optuna study, baselines and analysis store."""

    url: Optional[str] = None  # SQLAlchemy URL; None: sqlite:///<experiment>/sweep.db


@dataclasses.dataclass
class ClusterConfig:
    """The Ray cluster that runs the trials."""

    mode: str = "local"  # local: embedded Ray on this machine; remote: the cluster at `address`
    address: Optional[str] = None  # remote only: ray://host:10001 (Ray Client) or host:6379
    num_cpus: Optional[int] = None  # embedded Ray only: CPUs Ray may use; None: all cores
    num_gpus: Optional[int] = None  # embedded Ray only: GPUs Ray may use; None: all detected
    include_dashboard: bool = False  # embedded Ray only: start the dashboard (bound to 127.0.0.1)


@dataclasses.dataclass
class LaunchConfig(RunConfig):
    """A run config (the base of every trial) plus the options of `mtsweep launch`."""

    search_space: Optional[str] = None  # bundled search-space name or path to a .yaml file
    sweep: SweepConfig = dataclasses.field(default_factory=SweepConfig)
    storage: StorageConfig = dataclasses.field(default_factory=StorageConfig)
    cluster: ClusterConfig = dataclasses.field(default_factory=ClusterConfig)
    baseline_batch_size: Optional[int] = None  # pool batch of the uniform baseline; None: the uniform preset's
    log_level: str = "INFO"  # DEBUG | INFO | WARNING | ERROR
    # Filled at launch and saved with the experiment, so a resume uses the space it started with.
    space: dict[str, Any] = dataclasses.field(default_factory=dict)


ConfigStore.instance().store(name="launch_schema", node=LaunchConfig)


def load_launch_config(overrides: list[str], space: SearchSpace | None = None) -> tuple[LaunchConfig, SearchSpace]:
    """Compose, complete and check the launch config; raise `ConfigProblems` listing every problem.

    `space` replaces the `search_space=` file, for sweeps defined in Python.
    """
    # Invalid overrides and search-space parameters do not stop the checks, so that one run lists
    # them together with the problems of the sweep options and of the trials the rest can draw.
    composed, early_problems = compose_valid_overrides(overrides, config_name="launch")
    if space is None:
        try:
            space, space_problems = _read_space(composed.get("search_space"))
        except ConfigProblems as err:
            raise ConfigProblems([*early_problems, *err.problems]) from None
        early_problems += space_problems
    composed.search_space = space.name

    early_problems += _overridden_space_keys(space, overrides)
    problems = early_problems + _apply_sweep_defaults(composed, space, overrides)
    problems += [f"{key} is missing; give it on the command line, e.g. {key}=VALUE" for key in sorted(OmegaConf.missing_keys(composed))]
    if problems != early_problems:
        raise ConfigProblems(problems)
    try:
        config: LaunchConfig = to_run_config(composed)
    except ConfigProblems as err:
        raise ConfigProblems([*early_problems, *err.problems]) from None
    if config.baseline_batch_size is None:
        others = [override for override in overrides if not override.startswith("method=")]
        uniform, _ = compose_valid_overrides([*others, "method=uniform"], config_name="launch")
        config.baseline_batch_size = int(uniform.pool.batch_size)
    config.space = space.to_dict()
    try:
        check_launch_config(config, space)
    except ConfigProblems as err:
        raise ConfigProblems(early_problems + err.problems) from None
    if early_problems:
        raise ConfigProblems(early_problems)
    if config.sweep.searcher == "grid" and config.sweep.num_samples != space.grid_size():
        logger.warning(
            "sweep.num_samples=%d but the grid has %d points; the sweep %s",
            config.sweep.num_samples, space.grid_size(),
            "repeats random grid points" if config.sweep.num_samples > space.grid_size() else "leaves grid points out",
        )
    return config, space


def _overridden_space_keys(space: SearchSpace, overrides: list[str]) -> list[str]:
    """Return a line for each command-line key that the search space also sets.

    Every trial takes the space's value, so the command-line value would be silently ignored.
    """
    space_keys = set(space.to_dict().get("params", {}))
    problems = []
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if key in space_keys:
            problems.append(
                f"{override!r} sets {key}, which search space {space.name!r} also sets, so trials would ignore it; "
                "change the value in the search space or copy the space to a file and edit it there"
            )
    return problems


def _read_space(reference: Any) -> tuple[SearchSpace, list[str]]:
    """Return the search space (of its valid parameters, when some are invalid) and its problems."""
    if not reference:
        raise ConfigProblems([f"search_space is missing; give search_space=NAME with NAME one of: {', '.join(bundled_names())}, or a .yaml path"])
    space, problems = read_search_space(str(reference), partial=True)
    if space is None:
        raise ConfigProblems(problems)
    return space, problems


def load_saved_config(path: Path) -> tuple[LaunchConfig, SearchSpace]:
    """Read the resolved config an experiment saved at launch, with its search space."""
    if not path.is_file():
        raise ConfigProblems([f"{path} not found; give the folder that `mtsweep launch` printed"])
    saved = OmegaConf.merge(OmegaConf.structured(LaunchConfig), OmegaConf.load(path))
    config: LaunchConfig = to_run_config(saved)
    space, problems = parse_search_space(config.space, config.space.get("name", path.parent.name))
    if space is None:
        raise ConfigProblems(problems)
    # The data files were checked at launch. A file moved since then must not stop `status` or `best`.
    check_launch_config(config, space, check_data=False)
    return config, space


def _apply_sweep_defaults(composed: Any, space: SearchSpace, overrides: list[str]) -> list[str]:
    """Set the space's `sweep:` defaults on keys the command line did not override."""
    given = {override.split("=", 1)[0].lstrip("+~") for override in overrides}
    problems = []
    for key, value in space.sweep_defaults.items():
        if key not in composed.sweep:
            allowed = ", ".join(field.name for field in dataclasses.fields(SweepConfig))
            problems.append(f"search space {space.name!r}: unknown sweep option {key!r}; allowed: {allowed}")
        elif f"sweep.{key}" not in given:
            composed.sweep[key] = value
    return problems


def check_launch_config(config: LaunchConfig, space: SearchSpace, check_data: bool = True) -> None:
    """Raise `ConfigProblems` with every problem of the sweep options and of the trials it can draw.

    `check_data=False` leaves out the checks that read a `file` task's data files.
    """
    problems = sweep_problems(config, space)
    problems += trial_problems(config, space, check_data)
    if problems:
        raise ConfigProblems(problems)


def sweep_problems(config: LaunchConfig, space: SearchSpace) -> list[str]:
    """Return the problems of the sweep, storage and cluster options."""
    sweep = config.sweep
    problems = _choice_problems(config)
    problems += _range_problems(sweep)
    problems += _objective_problems(sweep, space)
    if sweep.searcher == "cmaes" and importlib.util.find_spec("cmaes") is None:
        problems.append("sweep.searcher='cmaes' needs the cmaes package, which is not installed; run pip install cmaes")

    problems += _name_problems(sweep)
    problems += _cluster_problems(config.cluster)
    if config.cluster.num_cpus is not None and config.cluster.num_cpus < sweep.cpus_per_trial:
        problems.append(f"cluster.num_cpus={config.cluster.num_cpus} is below sweep.cpus_per_trial={sweep.cpus_per_trial}; no trial could start")
    local_cpus = os.cpu_count() or 1
    if config.cluster.mode == "local" and config.cluster.num_cpus is None and sweep.cpus_per_trial > local_cpus:
        # Ray would wait forever for a node that can hold one trial.
        problems.append(
            f"sweep.cpus_per_trial={sweep.cpus_per_trial} is more than this machine's {local_cpus} CPUs; "
            f"allowed with cluster=local: up to {local_cpus}"
        )
    if config.storage.url is not None and "://" not in config.storage.url:
        problems.append(f"storage.url={config.storage.url!r} is not an SQLAlchemy URL; e.g. sqlite:////abs/path/sweep.db or postgresql://user@host/db")
    return problems


def _choice_problems(config: LaunchConfig) -> list[str]:
    sweep = config.sweep
    problems = []
    for key, value, allowed in (
        ("sweep.searcher", sweep.searcher, SEARCHERS),
        ("sweep.scheduler", sweep.scheduler, SCHEDULERS),
        ("sweep.mode", sweep.mode, MODES),
        ("sweep.mode2", sweep.mode2, MODES),
        ("sweep.metric", sweep.metric, OBJECTIVES),
        ("log_level", config.log_level, LOG_LEVELS),
    ):
        if value not in allowed:
            problems.append(f"{key}={value!r} is not allowed; choose one of: {', '.join(allowed)}")
    if sweep.metric2 is None and sweep.mode2 != "min":
        problems.append(f"sweep.mode2={sweep.mode2!r} is set without sweep.metric2, so it would be ignored; set sweep.metric2 or drop sweep.mode2")
    if sweep.metric2 is not None and sweep.metric2 not in OBJECTIVES:
        problems.append(f"sweep.metric2={sweep.metric2!r} is not allowed; choose one of: {', '.join(OBJECTIVES)}")
    return problems


def _range_problems(sweep: SweepConfig) -> list[str]:
    problems = []
    for key, value, minimum in (
        ("sweep.num_samples", sweep.num_samples, 1),
        ("sweep.max_concurrent_trials", sweep.max_concurrent_trials, 0),
        ("sweep.max_failures", sweep.max_failures, 0),
        ("sweep.asha_grace_period", sweep.asha_grace_period, 1),
    ):
        if value < minimum:
            problems.append(f"{key}={value} must be an integer >= {minimum}")
    if sweep.cpus_per_trial <= 0:
        problems.append(f"sweep.cpus_per_trial={sweep.cpus_per_trial} must be > 0 (fractions such as 0.5 are allowed)")
    if sweep.gpus_per_trial < 0:
        problems.append(f"sweep.gpus_per_trial={sweep.gpus_per_trial} must be >= 0")
    if sweep.asha_reduction_factor <= 1:
        problems.append(f"sweep.asha_reduction_factor={sweep.asha_reduction_factor} must be > 1")
    if sweep.progress_interval_s <= 0 or sweep.state_save_s <= 0:
        problems.append("sweep.progress_interval_s and sweep.state_save_s must be > 0 seconds")
    return problems


def _name_problems(sweep: SweepConfig) -> list[str]:
    """The experiment name becomes a folder under sweep.root and the Optuna study name, so it must
    be one plain path component: `../x` or `a/b` would place the experiment outside the root."""
    if sweep.name is None:
        return []
    name = str(sweep.name)
    if not EXPERIMENT_NAME.fullmatch(name) or name in (".", ".."):
        return [
            f"sweep.name={name!r} is not a plain folder name; allowed: letters, digits, '.', '_' and '-' "
            "(no path separators, not '.' or '..'); set sweep.root to choose the parent folder"
        ]
    return []


def _cluster_problems(cluster: ClusterConfig) -> list[str]:
    if cluster.mode not in ("local", "remote"):
        return [f"cluster.mode={cluster.mode!r} is not allowed; choose cluster=local or cluster=remote"]
    if cluster.mode == "remote" and not cluster.address:
        return ["cluster=remote needs cluster.address, e.g. cluster.address=ray://head:10001"]
    if cluster.mode == "local" and cluster.address:
        return [f"cluster.address={cluster.address!r} is set with cluster=local; use cluster=remote to connect to it"]
    if cluster.mode == "remote" and (cluster.num_cpus is not None or cluster.num_gpus is not None or cluster.include_dashboard):
        return ["cluster.num_cpus, cluster.num_gpus and cluster.include_dashboard apply only to cluster=local; unset them"]
    return []


def _objective_problems(sweep: SweepConfig, space: SearchSpace) -> list[str]:
    problems = []
    if sweep.searcher == "nsga2" and sweep.metric2 is None:
        problems.append("sweep.searcher='nsga2' optimizes two objectives; set sweep.metric2, e.g. sweep.metric2=wall_time")
    if sweep.metric2 is not None and sweep.searcher in ("grid", "cmaes"):
        problems.append(f"sweep.searcher={sweep.searcher!r} supports one objective only; unset sweep.metric2 or use nsga2, tpe or random")
    if sweep.metric2 is not None and sweep.scheduler == "asha":
        problems.append("sweep.scheduler='asha' stops trials on one metric only; unset sweep.metric2 or use sweep.scheduler=none")
    if sweep.metric2 is not None and sweep.metric2 == sweep.metric:
        problems.append(f"sweep.metric2={sweep.metric2!r} repeats sweep.metric; give a different second objective")
    if sweep.searcher == "grid":
        ranges = [param.path for param in space.searched if param.kind != "choice"]
        if ranges:
            problems.append(f"sweep.searcher='grid' needs every parameter to be a choice; {ranges[0]} is a range")
    return problems


def trial_problems(config: LaunchConfig, space: SearchSpace, check_data: bool = True) -> list[str]:
    """Return the problems of the trial configs at the edges of the space, e.g. a batch above the pool."""
    problems: list[str] = []
    seen: set[str] = set()
    for combination in space.edge_combinations():
        trial = apply_params(config, combination)
        for problem in config_problems(trial):
            if problem not in seen:
                seen.add(problem)
                problems.append(f"search space {space.name!r}: {problem}")
    if config.baseline_batch_size is not None:
        for combination in space.baseline_combinations():
            baseline = baseline_config(config, combination, config.baseline_batch_size)
            for problem in config_problems(baseline):
                if problem not in seen:
                    seen.add(problem)
                    # baseline_batch_size fixes a pool batch problem only; the others come from the base config.
                    hint = "; set baseline_batch_size" if problem.startswith("pool.batch_size") else ""
                    problems.append(f"uniform baseline: {problem}{hint}")
    for problem in file_task_problems(config, space) if check_data else []:
        if problem not in seen:
            seen.add(problem)
            problems.append(f"search space {space.name!r}: {problem}")
    ranges = [param.path for param in space.searched if param.kind != "choice" and _is_baseline_key(param.path)]
    for path in ranges:
        problems.append(
            f"search space {space.name!r}: {path} changes the uniform baseline, so it must be a choice or a fixed "
            "value (each value needs its own baseline run), not a range"
        )
    return problems


def file_task_problems(config: LaunchConfig, space: SearchSpace) -> list[str]:
    """Return the problems that depend on a `file` task's data, e.g. a meta set below the meta batch.

    Each data file that the edge trials name is loaded once.

    Generated tasks need no such check: their split sizes are config keys that `config_problems` reads.
    """
    from mts.methods import METHODS
    from mts.tasks import build_task
    from mts.validation import task_problems

    loaded: dict[str, Any] = {}
    problems: list[str] = []
    for combination in space.edge_combinations():
        trial = apply_params(config, combination)
        if trial.task.name != "file" or config_problems(trial):
            continue
        key = str(trial.task.path)
        try:
            if key not in loaded:
                loaded[key] = build_task(trial.task)
            task = loaded[key]
            trainable = len(METHODS[trial.method].pool_indices(task))
        except MtsError as err:
            problems += [line if key in line else f"task.path={key!r}: {line}" for line in str(err).splitlines()]
            continue
        problems += [f"task.path={key!r}: {problem}" for problem in task_problems(trial, task, trainable)]
    return problems


def _is_baseline_key(path: str) -> bool:
    return affects_baseline(path)


# Trial and baseline configs ------------------------------------------------------------------


def run_config_dict(config: RunConfig) -> dict[str, Any]:
    """Return the run-config part of a launch config as a plain dict."""
    names = {field.name for field in dataclasses.fields(RunConfig)}
    return {name: dataclasses.asdict(config)[name] for name in names}


def apply_params(base: RunConfig | dict[str, Any], params: dict[str, Any]) -> RunConfig:
    """Return the run config `base` with dotted `params` set; raise `ConfigProblems` on a bad type."""
    base_dict = run_config_dict(base) if isinstance(base, RunConfig) else base
    merged = OmegaConf.merge(OmegaConf.structured(RunConfig), base_dict)
    for path, value in params.items():
        try:
            OmegaConf.update(merged, path, value, merge=False)
        except OmegaConfBaseException as err:
            raise ConfigProblems([f"{path}={value!r}: {str(err).splitlines()[0]}"]) from err
    return to_run_config(merged)


def baseline_config(base: RunConfig | dict[str, Any], params: dict[str, Any], batch_size: int) -> RunConfig:
    """Return the `uniform` config that a trial of `base` with `params` is measured against."""
    baseline = apply_params(base, {path: value for path, value in params.items() if _is_baseline_key(path)})
    baseline.method = "uniform"
    baseline.pool.batch_size = int(batch_size)
    return baseline
