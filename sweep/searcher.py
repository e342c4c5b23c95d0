"""The Optuna searcher of a sweep: Ray Tune's `OptunaSearch` with the study in the experiment database.

Ray's adapter records every ended trial as COMPLETE when it has a metric value. A sweep needs finer
states, so `SweepSearch` decides them itself when a Tune trial ends:

| how the Tune trial ended | Optuna state | user attr `status` |
| --- | --- | --- |
| trained every epoch | COMPLETE (objective values of the last epoch) | finished |
| stopped early by the scheduler (ASHA) | PRUNED | pruned |
| loss became NaN or infinite | FAIL | diverged |
| raised after all retries | FAIL | errored |
| invalid config or task (`errored=True`, not retried) | FAIL | errored |

Every Optuna trial carries the Tune trial id in the user attr `tune_trial_id`. The study is named
after the experiment and lives in its SQL database, so a resumed driver continues the same study.
When the searcher is restored, Optuna trials that the killed driver had asked for but Tune never
saved are marked FAIL with status `orphaned`, and trials that a stopped driver marked `interrupted`
are marked `running` again.
"""

from __future__ import annotations

import logging
import math
import threading
from typing import Any, Optional

import optuna
from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch

from sweep.search_space import SearchSpace, SpaceSampler

logger = logging.getLogger(__name__)

TUNE_TRIAL_ID = "tune_trial_id"
STATUS = "status"


def _short(value: Any) -> Any:
    """Return a float with four significant digits for log lines; other values unchanged."""
    return float(f"{value:.4g}") if isinstance(value, float) and math.isfinite(value) else value


def build_sampler(name: str, space: SearchSpace, seed: int) -> optuna.samplers.BaseSampler:
    """Return the seeded Optuna sampler called `name` (validated by the launch config)."""
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "grid":
        return TuneGridSampler(space.grid(), seed=seed)
    if name == "cmaes":
        # Optuna samples categorical parameters independently (at random) under CMA-ES.
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if name == "nsga2":
        return PicklableNSGAIISampler(seed=seed)
    raise ValueError(f"unknown searcher {name!r}")


class TuneGridSampler(optuna.samplers.GridSampler):
    """A grid sampler that leaves ending the sweep to Ray Tune's `num_samples`.

    Optuna's GridSampler calls `study.stop()` after the last grid point, which Optuna allows only
    inside `study.optimize`; under Tune's ask-and-tell it raises and aborts the sweep.
    """

    def after_trial(self, study: optuna.Study, trial: Any, state: TrialState, values: Any) -> None:
        return None


class PicklableNSGAIISampler(optuna.samplers.NSGAIISampler):
    """NSGA-II that Ray Tune can pickle with its experiment state.

    Optuna 5.1's genetic-algorithm base sampler keeps a `threading.Lock` and defines no pickling
    hooks, so `Tuner` fails to save it. This subclass drops the lock on pickling and creates a new
    one on loading.
    """

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_thread_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._thread_lock = threading.Lock()


class SweepSearch(OptunaSearch):
    """`OptunaSearch` that records finished, pruned, diverged and errored trials distinctly."""

    def __init__(
        self,
        space: SearchSpace,
        metrics: list[str],
        modes: list[str],
        sampler: optuna.samplers.BaseSampler,
        storage: optuna.storages.BaseStorage,
        study_name: str,
    ) -> None:
        single = len(metrics) == 1
        super().__init__(
            space=SpaceSampler(space),
            metric=metrics[0] if single else list(metrics),
            mode=modes[0] if single else list(modes),
            sampler=sampler,
            storage=storage,
            study_name=study_name,
        )
        self._objectives = list(metrics)

    def suggest(self, trial_id: str) -> Optional[dict[str, Any]]:
        params = super().suggest(trial_id)
        if params is not None:
            self._ot_trials[trial_id].set_user_attr(TUNE_TRIAL_ID, trial_id)
        return params

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        """Report the objective of each epoch once to Optuna, as the intermediate value at step `epoch`.

        Ray's adapter reports at Tune's training iteration, so a resumed trial that trains again
        from its last checkpoint reported its replayed epochs a second time and Optuna warned once
        per epoch. The final result of a diverged or errored trial repeats the last epoch or has
        no values, so it is not reported.
        """
        if isinstance(self.metric, list) or trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        if result.get("diverged") or result.get("errored"):
            return
        value, epoch = result.get(self.metric), result.get("epoch")
        if epoch is None or value is None or not math.isfinite(value):
            return
        ot_trial = self._ot_trials[trial_id]
        reported = self._reported_epochs().get(trial_id)
        if reported is None:
            # This is the first result of the trial since this driver started, so read what an
            # earlier driver reported.
            frozen = self._storage.get_trial(self._storage_trial_id(ot_trial.number))
            reported = self._reported_epochs()[trial_id] = set(frozen.intermediate_values)
        if int(epoch) in reported:
            return
        ot_trial.report(float(value), int(epoch))
        reported.add(int(epoch))

    def _reported_epochs(self) -> dict[str, set[int]]:
        """Return the epochs reported to Optuna per Tune trial id, created on first use.

        A searcher restored from the state of an older version has no such attribute yet.
        """
        if not hasattr(self, "_reported_by_trial"):
            self._reported_by_trial: dict[str, set[int]] = {}
        return self._reported_by_trial

    def on_trial_complete(self, trial_id: str, result: Optional[dict[str, Any]] = None, error: bool = False) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        state, values, status = self._outcome(result, error)
        ot_trial = self._ot_trials[trial_id]
        if not self._is_finished(ot_trial.number):
            ot_trial.set_user_attr(STATUS, status)
            self._ot_study.tell(ot_trial, values, state=state, skip_if_finished=True)
        self._completed_trials.add(trial_id)
        objectives = ", ".join(f"{name}={_short(result.get(name))}" for name in self._objectives) if result else "no result"
        logger.info("Trial %s %s: %s, params %s (Optuna trial %d, %s)", trial_id, status, objectives, ot_trial.params, ot_trial.number, state.name)

    def _outcome(self, result: Optional[dict[str, Any]], error: bool) -> tuple[TrialState, Optional[list[float]], str]:
        """Return the Optuna state, the objective values and the status of an ended trial."""
        if error:
            return TrialState.FAIL, None, "errored"
        if not result:
            return TrialState.FAIL, None, "not_started"
        if result.get("diverged"):
            return TrialState.FAIL, None, "diverged"
        if result.get("errored"):
            return TrialState.FAIL, None, "errored"
        epoch, epochs = result.get("epoch"), result.get("epochs")
        if epoch is not None and epochs is not None and epoch < epochs:
            return TrialState.PRUNED, None, "pruned"
        values = [result.get(name) for name in self._objectives]
        if any(value is None or not math.isfinite(value) for value in values):
            return TrialState.FAIL, None, "no_objective"
        return TrialState.COMPLETE, [float(value) for value in values], "finished"

    def _is_finished(self, number: int) -> bool:
        return self._storage.get_trial(self._storage_trial_id(number)).state.is_finished()

    def _set_status(self, number: int, status: str) -> None:
        self._storage.set_trial_user_attr(self._storage_trial_id(number), STATUS, status)

    def _storage_trial_id(self, number: int) -> int:
        study_id = self._storage.get_study_id_from_name(self._study_name)
        return self._storage.get_trial_id_from_study_id_trial_number(study_id, number)

    def restore(self, checkpoint_path: str) -> None:
        super().restore(checkpoint_path)
        # The saved epochs may miss reports made after the last save, so read them from the study.
        self._reported_by_trial = {}
        self._fail_orphans()
        self._rerun_interrupted()

    def _rerun_interrupted(self) -> None:
        """Mark `running` again the interrupted trials that this restored driver continues."""
        known = {trial.number for trial in self._ot_trials.values()}
        for frozen in self._ot_study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if frozen.number in known and frozen.user_attrs.get(STATUS) == "interrupted":
                self._set_status(frozen.number, "running")

    def _fail_orphans(self) -> None:
        """Mark FAIL the running Optuna trials that the restored Tune state does not know."""
        known = {trial.number for trial in self._ot_trials.values()}
        for frozen in self._ot_study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)):
            if frozen.number in known:
                continue
            self._set_status(frozen.number, "orphaned")
            self._ot_study.tell(frozen.number, state=TrialState.FAIL, skip_if_finished=True)
            logger.warning("Optuna trial %d was asked for by the interrupted driver but never saved by Tune; marked FAIL (orphaned)", frozen.number)
