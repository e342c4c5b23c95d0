"""The launcher: an experiment folder, Ray, the uniform baselines, then a Ray Tune sweep.

    experiment = create_experiment(*load_launch_config(["search_space=smoke"]))
    summary = run_sweep(experiment)              # `mtsweep launch search_space=smoke`
    summary = run_sweep(open_experiment(path), resume=True)   # `mtsweep resume PATH`

An experiment folder contains `config.yaml` (the resolved launch config, search space included),
`sweep.db` (SQLite: the Optuna study, the baselines, and later the analysis store), `tune/` (Ray
Tune's results, trial checkpoints and experiment state) and `tensorboard/`.

The sweep is a `Tuner` with `SweepSearch` (Optuna, seeded, study in the experiment database),
`max_concurrent_trials`, per-trial CPU and GPU resources, an optional ASHA scheduler over epochs and
`FailureConfig(max_failures)`. Callbacks registered with `register_callback_factory` are added to
every new sweep; that is where the analysis store hooks in.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import socket
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from omegaconf import OmegaConf

from sweep.errors import SweepError
from sweep.launch_config import LaunchConfig, load_saved_config, run_config_dict
from sweep.search_space import SearchSpace

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
DATABASE_FILE = "sweep.db"
TUNE_FOLDER = "tune"
TENSORBOARD_FOLDER = "tensorboard"

# Each factory returns one more Ray Tune callback for a new sweep, e.g. the analysis store's writer.
CallbackFactory = Callable[["Experiment"], Any]
_CALLBACK_FACTORIES: list[CallbackFactory] = []


def register_callback_factory(factory: CallbackFactory) -> CallbackFactory:
    """Add a callback to every sweep started afterwards in this process; usable as a decorator."""
    _CALLBACK_FACTORIES.append(factory)
    return factory


@dataclasses.dataclass
class Experiment:
    """One sweep's folder and its resolved config."""

    path: Path
    config: LaunchConfig
    space: SearchSpace

    @property
    def name(self) -> str:
        return self.config.sweep.name or self.path.name

    @property
    def database_url(self) -> str:
        return self.config.storage.url or f"sqlite:///{(self.path / DATABASE_FILE).resolve()}"

    @property
    def tune_path(self) -> Path:
        return self.path / TUNE_FOLDER

    @property
    def tensorboard_path(self) -> Path:
        return self.path / TENSORBOARD_FOLDER


@dataclasses.dataclass
class SweepSummary:
    """How many trials of a sweep ended in each status."""

    path: Path
    num_samples: int
    counts: dict[str, int]
    # (trial id, status, reason) of every errored or diverged trial, from the analysis store.
    failures: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def unfinished(self) -> int:
        """Trials interrupted, still running or never started, as after Ctrl-C or a killed driver."""
        return sum(self.counts.get(status, 0) for status in ("interrupted", "running", "not started"))


# Experiment folders ----------------------------------------------------------------------------


def create_experiment(config: LaunchConfig, space: SearchSpace) -> Experiment:
    """Create a new experiment folder and save the resolved config into it."""
    name = config.sweep.name or f"{time.strftime('%Y%m%d-%H%M%S')}-{space.name}"
    path = Path(config.sweep.root).expanduser() / name
    if (path / CONFIG_FILE).exists():
        raise SweepError(f"experiment folder {path} already exists; continue it with `mtsweep resume {path}` or give another sweep.name")
    path.mkdir(parents=True, exist_ok=True)
    (path / TENSORBOARD_FOLDER).mkdir(exist_ok=True)
    config.sweep.name = name
    _write_atomically(path / CONFIG_FILE, OmegaConf.to_yaml(OmegaConf.structured(config)))
    return Experiment(path=path, config=config, space=space)


def open_experiment(path: str | Path) -> Experiment:
    """Open an existing experiment folder with the config it was launched with."""
    folder = Path(path).expanduser()
    config, space = load_saved_config(folder / CONFIG_FILE)
    return Experiment(path=folder, config=config, space=space)


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


# Ray -------------------------------------------------------------------------------------------


@contextlib.contextmanager
def ray_session(experiment: Experiment) -> Iterator[None]:
    """Connect to the configured Ray cluster, or start embedded Ray on 127.0.0.1; reuse a running one."""
    cluster = experiment.config.cluster
    if cluster.mode == "local" or _is_loopback(cluster.address or ""):
        # With this Ray constant off, Ray takes 127.0.0.1 as the node address instead of looking
        # up the machine's outward address; it is read when `ray` is first imported.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    if not sys.stdout.isatty():
        # Ray colors the "(train_trial pid=...)" prefix of worker lines it forwards; in a file or a
        # pipe those color codes are noise.
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")
    if cluster.mode == "local":
        # A new local Ray cluster uses token authentication by default. Naming it explicitly keeps
        # Ray from printing a notice about it on every launch.
        os.environ.setdefault("RAY_AUTH_MODE", "token")
    import ray

    if ray.is_initialized():
        logger.info("Using the Ray instance already running in this process")
        yield
        return
    if cluster.mode == "local":
        ray.init(
            num_cpus=cluster.num_cpus,
            num_gpus=cluster.num_gpus,
            include_dashboard=cluster.include_dashboard,
            dashboard_host="127.0.0.1",
            _node_ip_address="127.0.0.1",
            configure_logging=False,
            # By default `ray.init` starts one idle worker per CPU and waits for them. Trials run in
            # actors, which get workers of their own, so these workers only take CPU at the start:
            # about 1 to 3 s of `ray.init` on a busy 2-CPU machine. Baseline tasks start workers as needed.
            _system_config={"prestart_worker_first_driver": False},
        )
        logger.info("Started embedded Ray on 127.0.0.1 with %s", ray.cluster_resources())
    else:
        try:
            ray.init(address=cluster.address, configure_logging=False)
        except (ConnectionError, RuntimeError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise SweepError(
                f"could not connect to the Ray cluster at {cluster.address}: {first}; if the cluster uses token "
                f"authentication, set RAY_AUTH_MODE=token, then continue with `mtsweep resume {experiment.path}`"
            ) from None
        logger.info("Connected to the Ray cluster at %s: %s", cluster.address, ray.cluster_resources())
    try:
        yield
    finally:
        ray.shutdown()


def check_cluster_reachable(config: LaunchConfig, timeout_s: float = 3.0) -> None:
    """Raise `SweepError` when nothing accepts a connection at `cluster.address` (cluster=remote only).

    `ray.init` retries such an address for minutes and keeps printing warnings. This check
    reports a mistyped address or a stopped cluster in one line, before the experiment folder exists.
    """
    cluster = config.cluster
    if cluster.mode != "remote" or not cluster.address or cluster.address == "auto":
        return
    host, port = _host_and_port(cluster.address)
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except OSError as err:
        raise SweepError(
            f"cluster.address={cluster.address!r}: nothing accepts connections at {host}:{port} ({err.strerror or err}); "
            "start the cluster (e.g. cluster/local_cluster.sh start) or correct the address"
        ) from None


def _host_and_port(address: str) -> tuple[str, int]:
    """Return host and port of `host:port` or `ray://host:port`; Ray's defaults when the port is left out."""
    scheme, _, rest = address.rpartition("://")
    host, _, port = rest.partition(":")
    default = 10001 if scheme == "ray" else 6379
    return host, int(port) if port.isdigit() else default


def _is_loopback(address: str) -> bool:
    host = address.split("://", 1)[-1].rsplit(":", 1)[0]
    return host in ("127.0.0.1", "localhost")


def max_concurrent_trials(config: LaunchConfig) -> int:
    """Return the configured concurrency, or as many trials as the cluster's CPUs and GPUs hold."""
    if config.sweep.max_concurrent_trials > 0:
        return config.sweep.max_concurrent_trials
    import ray

    resources = ray.cluster_resources()
    fits = math.floor(resources.get("CPU", 1) / config.sweep.cpus_per_trial + 1e-9)
    if config.sweep.gpus_per_trial > 0:
        fits = min(fits, math.floor(resources.get("GPU", 0) / config.sweep.gpus_per_trial + 1e-9))
    if fits < 1:
        raise SweepError(
            f"the Ray cluster ({resources}) cannot hold one trial with sweep.cpus_per_trial={config.sweep.cpus_per_trial} "
            f"and sweep.gpus_per_trial={config.sweep.gpus_per_trial}; lower them or add nodes"
        )
    return fits


def trial_threads(config: LaunchConfig) -> int:
    """Return the torch threads of a trial: its whole CPUs, at least one."""
    return max(1, math.floor(config.sweep.cpus_per_trial + 1e-9))


# The sweep -------------------------------------------------------------------------------------


def run_sweep(
    experiment: Experiment,
    resume: bool = False,
    trainer_factory: Optional[Callable[..., Any]] = None,
    callbacks: tuple[Any, ...] = (),
) -> SweepSummary:
    """Train the baselines, then run (or continue) the sweep to `num_samples` trials; return the counts.

    Raises `SweepError` when a new sweep would reuse the study of another one in the same database.
    """
    import sqlalchemy as sa

    from sweep.baselines import ensure_baselines

    config = experiment.config
    if not resume and study_trials(experiment):
        raise SweepError(
            f"the database {experiment.database_url} already contains an Optuna study named {experiment.name!r}; "
            f"continue it with `mtsweep resume {experiment.path}` or give another sweep.name"
        )
    with ray_session(experiment):
        engine = sa.create_engine(experiment.database_url, **_engine_options(experiment.database_url))
        references = ensure_baselines(config, experiment.space, engine, trial_threads(config))
        engine.dispose()
        trainable = _build_trainable(experiment, references, trainer_factory)
        tuner = _build_tuner(experiment, trainable, resume, callbacks)
        with _without_tuner_restore_hint():
            tuner.fit()
    mark_interrupted(experiment)
    summary = sweep_summary(experiment)
    logger.info("Sweep %s: %s", experiment.name, ", ".join(f"{count} {status}" for status, count in sorted(summary.counts.items())))
    return summary


class _TunerRestoreHintFilter(logging.Filter):
    """Drop Ray Tune's "Resume experiment with: Tuner.restore(...)" warning after Ctrl-C.

    `mtsweep resume` is the way to continue a sweep; the CLI prints that command instead.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Experiment has been interrupted")


@contextlib.contextmanager
def _without_tuner_restore_hint() -> Iterator[None]:
    tune_logger = logging.getLogger("ray.tune.tune")
    hint_filter = _TunerRestoreHintFilter()
    tune_logger.addFilter(hint_filter)
    try:
        yield
    finally:
        tune_logger.removeFilter(hint_filter)


def mark_interrupted(experiment: Experiment) -> None:
    """Mark the trials that were running when the driver stopped as `interrupted`.

    They stay RUNNING in the Optuna study, so that `mtsweep resume` continues them. The user attr
    `status` and the analysis store record `interrupted` until a resumed driver starts them again.
    A killed driver cannot do this, so its trials stay `running`.
    """
    import optuna

    from sweep.analysis.store import AnalysisStore
    from sweep.searcher import STATUS, TUNE_TRIAL_ID

    running = [trial for trial in study_trials(experiment) if trial.state == optuna.trial.TrialState.RUNNING]
    running = [trial for trial in running if trial.user_attrs.get(STATUS) in (None, "running")]
    if not running:
        return
    storage = optuna.storages.RDBStorage(experiment.database_url, engine_kwargs=_engine_options(experiment.database_url))
    study_id = storage.get_study_id_from_name(experiment.name)
    tune_ids = []
    for trial in running:
        storage.set_trial_user_attr(storage.get_trial_id_from_study_id_trial_number(study_id, trial.number), STATUS, "interrupted")
        tune_ids.append(trial.user_attrs.get(TUNE_TRIAL_ID))
    store = AnalysisStore(experiment.database_url, create=False)
    try:
        record = store.experiment(experiment.name)
        if record is not None:
            for tune_id in tune_ids:
                if tune_id:
                    store.end_trial(record.id, tune_id, "interrupted")
    finally:
        store.close()
    logger.info("Marked %d running trial(s) interrupted; `mtsweep resume %s` continues them", len(tune_ids), experiment.path)


def _engine_options(url: str) -> dict[str, Any]:
    # SQLite waits this many seconds for a lock held by a reader such as `mtsweep status`.
    return {"connect_args": {"timeout": 30}} if url.startswith("sqlite") else {}


def _build_trainable(experiment: Experiment, references: dict[str, dict[str, float]], trainer_factory: Optional[Callable[..., Any]]) -> Any:
    from ray import tune

    from sweep.trainable import TrialContext, train_trial

    config = experiment.config
    context = TrialContext(
        base=run_config_dict(config),
        baseline_batch_size=int(config.baseline_batch_size or config.pool.batch_size),
        references=references,
        threads=trial_threads(config),
        trainer_factory=trainer_factory,
    )
    resources = {"cpu": config.sweep.cpus_per_trial, "gpu": config.sweep.gpus_per_trial}
    return tune.with_resources(tune.with_parameters(train_trial, context=context), resources)


def _build_tuner(experiment: Experiment, trainable: Any, resume: bool, callbacks: tuple[Any, ...]) -> Any:
    from ray import tune

    # Ray Tune saves its experiment state (the resume point) at most this often.
    os.environ["TUNE_GLOBAL_CHECKPOINT_S"] = str(experiment.config.sweep.state_save_s)
    # With CheckpointConfig(num_to_keep=1) Tune also saves that state after every trial checkpoint,
    # which keeps the resume point current; its warning about frequent saves is expected here.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # The trial table replaces Tune's own console output, whose header names a TensorBoard folder
    # under /tmp/ray that the analysis store does not use; verbose=0 silences it only in this mode.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    restoring = resume and tune.Tuner.can_restore(str(experiment.tune_path.resolve()))
    # Tune's own TensorBoard logger would repeat, on the driver and for every result, what the
    # analysis callback already writes to <experiment>/tensorboard. So a new sweep gets only the
    # JSON and CSV loggers (added in `_run_config`), which Tune's results and `ExperimentAnalysis` read.
    # A restored sweep keeps Tune's default loggers, because its saved callbacks may lack those two.
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "0" if restoring else "1"
    if restoring:
        logger.info("Resuming the sweep in %s", experiment.tune_path)
        # Tune's TensorBoard logger warns once per NaN scalar, and every epoch without a GSNR
        # measurement reports NaN GSNR columns, so a resumed sweep printed hundreds of such lines.
        logging.getLogger("tensorboardX.x2num").setLevel(logging.ERROR)
        if callbacks:
            # NOTE: Tuner.restore takes its callbacks from the saved experiment state, so callbacks
            # passed here (and factories registered since the launch) are not added.
            logger.warning("Resumed sweeps keep the callbacks they were launched with; %d new ones ignored", len(callbacks))
        return tune.Tuner.restore(str(experiment.tune_path.resolve()), trainable=trainable, resume_unfinished=True, resume_errored=False)
    if resume:
        logger.warning("No Ray Tune state in %s yet; starting the sweep from its first trial", experiment.tune_path)
    return tune.Tuner(trainable, tune_config=_tune_config(experiment), run_config=_run_config(experiment, callbacks))


def _tune_config(experiment: Experiment) -> Any:
    from ray import tune

    sweep = experiment.config.sweep
    return tune.TuneConfig(
        search_alg=build_searcher(experiment),
        scheduler=_build_scheduler(experiment),
        num_samples=sweep.num_samples,
        max_concurrent_trials=max_concurrent_trials(experiment.config),
        trial_dirname_creator=trial_dirname,
        # A new trial reuses a finished trial's worker process, which saves importing torch again.
        reuse_actors=True,
    )


def _run_config(experiment: Experiment, callbacks: tuple[Any, ...]) -> Any:
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    from sweep.analysis.callback import AnalysisCallback
    from sweep.progress import TrialTable

    sweep = experiment.config.sweep
    table = TrialTable([param.path for param in experiment.space.searched], sweep.metric, sweep.progress_interval_s)
    # The analysis store's writer is part of every sweep: it fills the store and the TensorBoard logs.
    extra = [AnalysisCallback.from_experiment(experiment), *(factory(experiment) for factory in _CALLBACK_FACTORIES)]
    return tune.RunConfig(
        name=TUNE_FOLDER,
        storage_path=str(experiment.path.resolve()),
        failure_config=tune.FailureConfig(max_failures=sweep.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        callbacks=[table, JsonLoggerCallback(), CSVLoggerCallback(), *extra, *callbacks],
        verbose=0,
    )


def trial_dirname(trial: Any) -> str:
    return f"trial_{trial.trial_id}"


def build_searcher(experiment: Experiment) -> Any:
    """Return the `SweepSearch` whose study lives in the experiment's database."""
    import optuna

    # Optuna logs in its own format at INFO (e.g. "A new study created"); the sweep logs what matters.
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    from sweep.searcher import SweepSearch, build_sampler

    sweep = experiment.config.sweep
    metrics = [sweep.metric] + ([sweep.metric2] if sweep.metric2 else [])
    modes = [sweep.mode] + ([sweep.mode2] if sweep.metric2 else [])
    storage = optuna.storages.RDBStorage(experiment.database_url, engine_kwargs=_engine_options(experiment.database_url))
    return SweepSearch(
        experiment.space,
        metrics=metrics,
        modes=modes,
        sampler=build_sampler(sweep.searcher, experiment.space, sweep.seed),
        storage=storage,
        study_name=experiment.name,
    )


def _build_scheduler(experiment: Experiment) -> Any:
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    sweep = experiment.config.sweep
    if sweep.scheduler == "none":
        return FIFOScheduler()
    epochs = [experiment.config.train.epochs]
    epochs += [value for param in experiment.space.params if param.path == "train.epochs" for value in param.edge_values()]
    return ASHAScheduler(
        time_attr="epoch",
        metric=sweep.metric,
        mode=sweep.mode,
        max_t=int(max(epochs)),
        grace_period=sweep.asha_grace_period,
        reduction_factor=sweep.asha_reduction_factor,
    )


# Status ----------------------------------------------------------------------------------------


def study_trials(experiment: Experiment) -> list[Any]:
    """Return the Optuna trials of the experiment's study (empty before the first trial)."""
    import optuna

    storage = optuna.storages.RDBStorage(experiment.database_url, engine_kwargs=_engine_options(experiment.database_url))
    try:
        study = optuna.load_study(study_name=experiment.name, storage=storage)
    except KeyError:
        return []
    return study.get_trials(deepcopy=False)


def sweep_summary(experiment: Experiment) -> SweepSummary:
    """Count the experiment's trials by status, from the Optuna study; orphans are not counted."""
    counts: Counter[str] = Counter()
    for trial in study_trials(experiment):
        status = trial.user_attrs.get("status") or ("running" if trial.state.name == "RUNNING" else trial.state.name.lower())
        if status != "orphaned":
            counts[status] += 1
    not_started = experiment.config.sweep.num_samples - sum(counts.values())
    if not_started > 0:
        counts["not started"] = not_started
    failures = _failures(experiment) if counts.get("errored") or counts.get("diverged") else []
    return SweepSummary(path=experiment.path, num_samples=experiment.config.sweep.num_samples, counts=dict(counts), failures=failures)


def _failures(experiment: Experiment) -> list[tuple[str, str, str]]:
    """Return (trial id, status, reason) of the errored and diverged trials in the analysis store."""
    from sweep.analysis.store import AnalysisStore

    store = AnalysisStore(experiment.database_url, create=False)
    try:
        record = store.experiment(experiment.name) if store.has_tables() else None
        trials = store.trials(record.id, statuses=("errored", "diverged")) if record is not None else []
    finally:
        store.close()
    return [(trial["trial_id"], trial["status"], trial.get("failure_reason") or "no reason recorded") for trial in trials]


# Errored and diverged trials listed under the counts, with their reasons; the rest are only counted.
MAX_FAILURES_SHOWN = 10


def print_summary(summary: SweepSummary, out: Any = None) -> None:
    out = out or sys.stdout
    print(f"experiment: {summary.path}", file=out)
    for status, count in sorted(summary.counts.items()):
        print(f"  {status:<12} {count}", file=out)
    print(f"  {'total':<12} {summary.total} of {summary.num_samples}", file=out)
    for trial_id, status, reason in summary.failures[:MAX_FAILURES_SHOWN]:
        print(f"  trial {trial_id} {status}: {reason}", file=out)
    if len(summary.failures) > MAX_FAILURES_SHOWN:
        print(f"  ... and {len(summary.failures) - MAX_FAILURES_SHOWN} more errored or diverged trials", file=out)
