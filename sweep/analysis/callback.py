"""The analysis callback: a Ray Tune callback on the driver that feeds the store and TensorBoard.

    callback = AnalysisCallback(database_url, experiment_name, experiment_dir, searched_params)
    tune.Tuner(trainable, run_config=tune.RunConfig(callbacks=[callback]))

Every result a trial reports becomes one row of `analysis_reports` (an upsert, so a retried or
resumed trial that reports an epoch again leaves one row) and one scalar per metric in the trial's
TensorBoard run. Trial starts, retries, ends and errors update the trial's row.

Ray Tune pickles its callbacks with the experiment state, so that a resumed sweep gets them back.
The database engine and the open event writers cannot be pickled, so they are dropped and reopened
on first use.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from ray.tune import Callback

from sweep.analysis.folder import TENSORBOARD_FOLDER
from sweep.analysis.store import AnalysisStore
from sweep.analysis.tensorboard import TrialLogs, write_experiment_config

logger = logging.getLogger(__name__)

# Characters of an error message kept as a trial's failure reason.
MAX_REASON_CHARS = 2000


class AnalysisCallback(Callback):
    """Write every trial result to the analysis store and to TensorBoard as it arrives."""

    def __init__(
        self,
        database_url: str,
        experiment_name: str,
        experiment_dir: str | Path,
        searched_params: Sequence[str],
        base_config: Optional[Mapping[str, Any]] = None,
        metric: str = "val_gain",
        mode: str = "max",
    ) -> None:
        """Create the callback of one experiment.

        `searched_params` are the dotted keys the search space varies, shown in HParams and in
        `mtsweep best`. With `base_config`, the sweep's base run config as a nested dict, each
        trial's resolved config is stored beside its params.
        """
        self.database_url = database_url
        self.experiment_name = experiment_name
        self.experiment_dir = Path(experiment_dir)
        self.searched_params = list(searched_params)
        self.base_config = dict(base_config) if base_config is not None else None
        self.metric = metric
        self.mode = mode
        # (store, experiment id, trial logs), opened on first use.
        self._state: Optional[tuple[AnalysisStore, int, TrialLogs]] = None

    @classmethod
    def from_experiment(cls, experiment: Any) -> "AnalysisCallback":
        """Build the callback of a launcher `Experiment`; usable with `register_callback_factory`."""
        from sweep.launch_config import run_config_dict

        config = experiment.config
        return cls(
            database_url=experiment.database_url,
            experiment_name=experiment.name,
            experiment_dir=experiment.path,
            searched_params=[param.path for param in experiment.space.searched],
            base_config=run_config_dict(config),
            metric=config.sweep.metric,
            mode=config.sweep.mode,
        )

    @property
    def tensorboard_dir(self) -> Path:
        return self.experiment_dir / TENSORBOARD_FOLDER

    # Lazily opened state, dropped when Tune pickles the callback --------------------------------

    def _open(self) -> tuple[AnalysisStore, int, TrialLogs]:
        if self._state is None:
            store = AnalysisStore(self.database_url)
            experiment_id = store.ensure_experiment(
                self.experiment_name, str(self.experiment_dir), self.metric, self.mode, self.searched_params
            )
            self.tensorboard_dir.mkdir(parents=True, exist_ok=True)
            write_experiment_config(self.tensorboard_dir, self.searched_params)
            self._state = (store, experiment_id, TrialLogs(self.tensorboard_dir))
            logger.info("Analysis store open for experiment %s (id %d)", self.experiment_name, experiment_id)
        return self._state

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_state"] = None
        return state

    # Ray Tune hooks ----------------------------------------------------------------------------

    def setup(self, **info: Any) -> None:
        self._open()

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        store, experiment_id, logs = self._open()
        params = dict(trial.config)
        store.start_trial(experiment_id, trial.trial_id, params, config=self._resolved_config(params), node=_node(trial))
        logs.start(trial.trial_id, {name: params[name] for name in self._hparam_names(params)})

    def on_trial_result(self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any) -> None:
        if result.get("errored"):
            # A trial with an invalid config or task has no epoch to store. on_trial_complete records its error.
            return
        epoch = result.get("epoch", result.get("training_iteration"))
        if epoch is None:
            logger.warning("Trial %s reported a result without `epoch` or `training_iteration`; not stored", trial.trial_id)
            return
        store, experiment_id, logs = self._open()
        is_new = store.write_report(experiment_id, trial.trial_id, int(epoch), result)
        # An epoch reported again by a resumed trial already has its scalars. A second value at the
        # same step would make TensorBoard drop the later points of the run as orphaned data.
        if is_new:
            logs.write(trial.trial_id, int(epoch), _scalars(result))

    def on_trial_recover(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        store, experiment_id, _ = self._open()
        reason = _failure_reason(trial)
        store.end_trial(experiment_id, trial.trial_id, "running", failure_reason=reason, num_failures=trial.num_failures)
        logger.warning("Trial %s failed (attempt %d) and will be retried: %s", trial.trial_id, trial.num_failures, reason)

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        from sweep.progress import trial_status

        store, experiment_id, logs = self._open()
        status = trial_status("TERMINATED", trial.last_result)
        reason = (trial.last_result or {}).get("error") if status in ("diverged", "errored") else None
        store.end_trial(experiment_id, trial.trial_id, status, failure_reason=reason, num_failures=trial.num_failures)
        logs.close(trial.trial_id)

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        store, experiment_id, logs = self._open()
        reason = _failure_reason(trial)
        store.end_trial(experiment_id, trial.trial_id, "errored", failure_reason=reason, num_failures=trial.num_failures)
        logs.close(trial.trial_id)
        logger.warning("Trial %s errored after %d attempts: %s", trial.trial_id, trial.num_failures, reason)

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        if self._state is not None:
            store, _, logs = self._state
            logs.close_all()
            store.close()
        self._state = None

    # Helpers -----------------------------------------------------------------------------------

    def _hparam_names(self, params: Mapping[str, Any]) -> list[str]:
        names = [name for name in self.searched_params if name in params]
        return names or sorted(params)

    def _resolved_config(self, params: Mapping[str, Any]) -> Optional[dict[str, Any]]:
        if self.base_config is None:
            return None
        return apply_dotted(self.base_config, params)


def apply_dotted(base: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """Return a deep copy of the nested dict `base` with every dotted key of `params` set."""
    import copy

    config = copy.deepcopy(dict(base))
    for path, value in params.items():
        node = config
        *parents, leaf = path.split(".")
        for key in parents:
            child = node.get(key)
            if not isinstance(child, dict):
                child = node[key] = {}
            node = child
        node[leaf] = value
    return config


def _scalars(result: Mapping[str, Any]) -> dict[str, float]:
    from sweep.analysis.store import split_metrics

    columns, extra = split_metrics(result)
    return {key: value for key, value in {**columns, **extra}.items() if value is not None}


def _node(trial: Any) -> Optional[str]:
    location = getattr(getattr(trial, "temporary_state", None), "location", None)
    return getattr(location, "hostname", None) or (trial.last_result or {}).get("node_ip")


def _failure_reason(trial: Any) -> Optional[str]:
    """Return the last line of the trial's error file, where Ray Tune writes each failure's traceback."""
    path = getattr(trial, "error_file", None)
    if not path or not Path(path).is_file():
        return None
    try:
        lines = [line.strip() for line in Path(path).read_text(errors="replace").splitlines() if line.strip()]
    except OSError as err:
        logger.warning("Cannot read the error file %s of trial %s: %s", path, trial.trial_id, err)
        return None
    return lines[-1][:MAX_REASON_CHARS] if lines else None
