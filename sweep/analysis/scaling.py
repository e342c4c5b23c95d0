"""Scaling analysis: validation gain, test gain and GSNR against the pool batch size (or another key).

For each value x of the key, the finished trials at x give a mean and a 95% confidence interval
(Student's t over trials, which are the seeds when the other parameters are fixed) of:

- the final `val_gain` (last epoch, the value the sweep optimized),
- the final `test_gain` (test accuracy of the validation-selected epoch minus the uniform baseline's),
- the last measured `gsnr` of the meta-gradient at the trial's batch size.

GSNR is then fitted with a power law `gsnr = c * x**a` by least squares on log-log axes over the
individual trials. For the mean of B i.i.d. per-sample gradients the variance falls as 1/B, so
a = 1; an exponent well below 1 is the sign that normalized weights concentrate on a few samples
(the effective batch size collapses). The batch size with the best mean validation gain is compared
with the one the noise scale predicts (B_simple = tr(Sigma) / |G|^2, McCandlish et al. 2018,
"An Empirical Model of Large-Batch Training"), past which a larger batch should stop helping.

Parameter importances come from two of Optuna's evaluators, PED-ANOVA and fANOVA, on the study's
completed trials.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
from typing import Any, Iterable, Optional, Sequence

import numpy as np

from sweep.analysis.errors import AnalysisError
from sweep.analysis.queries import canonical, check_keys, filter_trials, parse_where
from sweep.analysis.store import AnalysisStore, ExperimentRecord

logger = logging.getLogger(__name__)

CONFIDENCE = 0.95
# fANOVA fits 64 random-forest trees in Python, and its time grows faster than linearly with trials
# (measured on 2 busy x86 cores: 9 s at 250 trials, 63 s at 1,000). Larger studies are sampled down.
FANOVA_MAX_TRIALS = 250
# Per-trial final values the analysis summarizes: name -> trial summary column.
FINAL_VALUES = {"val_gain": "last_val_gain", "test_gain": "last_test_gain", "gsnr": "last_gsnr"}


@dataclasses.dataclass
class Interval:
    """Mean of a sample with the half width of its 95% confidence interval (NaN below 2 values)."""

    mean: float
    half_width: float
    n: int

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width


@dataclasses.dataclass
class ScalingPoint:
    """The trials at one value of the scaling key."""

    x: float
    trials: int
    seeds: list[Any]
    values: dict[str, Interval]  # val_gain, test_gain, gsnr


@dataclasses.dataclass
class PowerLaw:
    """A fit y = coefficient * x**exponent on log-log axes."""

    coefficient: float
    exponent: float
    exponent_half_width: float  # 95% confidence half width of the exponent (NaN below 3 points)
    r_squared: float  # of the log-log regression
    points: int

    def __call__(self, x: float | np.ndarray) -> Any:
        return self.coefficient * np.power(x, self.exponent)


@dataclasses.dataclass
class ScalingResult:
    """Everything `mtsweep analyze` reports."""

    experiment: str
    x_key: str
    points: list[ScalingPoint]
    gsnr_fit: Optional[PowerLaw]
    best_x: Optional[float]  # x with the highest mean val_gain
    noise_scale: Optional[Interval]  # mean and 95% CI of the trials' last noise scale
    noise_scale_median: Optional[float]
    predicted_x: Optional[float]  # tested x nearest (log scale) to the median noise scale
    importances: dict[str, dict[str, float]]  # evaluator name -> param -> importance
    notes: list[str]
    trials_used: int
    trials_excluded: dict[str, int]  # status -> count of trials left out
    where: list[str] = dataclasses.field(default_factory=list)  # the --where filters, as given
    trials_filtered_out: int = 0  # trials that a --where filter left out


def mean_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
    """Return the mean and the Student-t confidence half width of `values`."""
    from scipy import stats

    data = np.asarray([value for value in values if value is not None and math.isfinite(value)], dtype=float)
    if data.size == 0:
        return Interval(math.nan, math.nan, 0)
    if data.size == 1:
        return Interval(float(data[0]), math.nan, 1)
    sem = float(np.std(data, ddof=1) / math.sqrt(data.size))
    quantile = float(stats.t.ppf(0.5 + confidence / 2, data.size - 1))
    return Interval(float(data.mean()), quantile * sem, int(data.size))


def fit_power_law(x: Iterable[float], y: Iterable[float]) -> PowerLaw:
    """Fit y = c * x**a by least squares on log-log axes; points with x or y <= 0 are left out.

    NOTE: the bias-corrected GSNR estimate is negative when the signal is below the estimator's
    resolution, so leaving those trials out biases the fit toward the trials with measurable signal.

    Raises `AnalysisError` when fewer than two distinct positive x remain.
    """
    from scipy import stats

    pairs = [(float(a), float(b)) for a, b in zip(x, y) if a is not None and b is not None and a > 0 and b > 0 and math.isfinite(a) and math.isfinite(b)]
    log_x = np.log([a for a, _ in pairs])
    log_y = np.log([b for _, b in pairs])
    if len(set(log_x.tolist())) < 2:
        raise AnalysisError(f"a power-law fit needs positive values at two or more distinct x; got {len(pairs)} point(s)")
    slope, intercept = np.polyfit(log_x, log_y, 1)
    predicted = intercept + slope * log_x
    residual = float(np.sum((log_y - predicted) ** 2))
    total = float(np.sum((log_y - log_y.mean()) ** 2))
    r_squared = 1.0 - residual / total if total > 0 else 1.0
    half_width = math.nan
    if len(pairs) > 2:
        spread = float(np.sum((log_x - log_x.mean()) ** 2))
        standard_error = math.sqrt(residual / (len(pairs) - 2) / spread)
        half_width = float(stats.t.ppf(0.5 + CONFIDENCE / 2, len(pairs) - 2)) * standard_error
    return PowerLaw(float(math.exp(intercept)), float(slope), half_width, r_squared, len(pairs))


def nearest_in_log(target: float, candidates: Sequence[float]) -> Optional[float]:
    positive = [value for value in candidates if value > 0]
    if target <= 0 or not positive:
        return None
    return min(positive, key=lambda value: abs(math.log(value) - math.log(target)))


# The analysis ----------------------------------------------------------------------------------


def scaling_analysis(
    store: AnalysisStore,
    record: ExperimentRecord,
    x_key: str = "pool.batch_size",
    where: Iterable[str] = (),
    database_url: Optional[str] = None,
    with_importances: bool = True,
) -> ScalingResult:
    """Summarize the finished trials of an experiment against `x_key`, fit GSNR, rank params."""
    trials = store.trial_summaries(record.id)
    filters = parse_where(where)
    check_keys([key for key, _ in filters] + [x_key], trials, "--where/--x key")
    chosen = filter_trials(trials, filters)
    finished = [trial for trial in chosen if trial["status"] == "finished"]
    excluded: dict[str, int] = {}
    for trial in chosen:
        if trial["status"] != "finished":
            excluded[trial["status"]] = excluded.get(trial["status"], 0) + 1
    notes: list[str] = []
    points = scaling_points(finished, x_key, notes)
    fit = _gsnr_fit(finished, x_key, notes)
    best_x = _best_x(points)
    noise, median, predicted = _noise_scale_prediction(finished, points, notes)
    if x_key != "pool.batch_size":
        predicted = None  # the noise scale is a batch size, so it predicts nothing about another key
    importances: dict[str, dict[str, float]] = {}
    if with_importances:
        importances = parameter_importances(database_url or store.url, record.name, list(record.searched_params), notes)
    return ScalingResult(
        experiment=record.name, x_key=x_key, points=points, gsnr_fit=fit, best_x=best_x, noise_scale=noise,
        noise_scale_median=median, predicted_x=predicted, importances=importances, notes=notes,
        trials_used=len(finished), trials_excluded=excluded, where=list(where), trials_filtered_out=len(trials) - len(chosen),
    )


def scaling_points(trials: list[dict[str, Any]], x_key: str, notes: list[str]) -> list[ScalingPoint]:
    """Group trials by their numeric value of `x_key` and summarize each group."""
    groups: dict[float, list[dict[str, Any]]] = {}
    for trial in trials:
        x = _number(trial["params"].get(x_key))
        if x is None:
            continue
        groups.setdefault(x, []).append(trial)
    if trials and not groups:
        # Checked before any report is written, so a wrong --x leaves the last good report in place.
        raise AnalysisError(
            f"--x {x_key} has no numeric value in any finished trial; choose a numeric parameter, "
            "e.g. --x pool.batch_size, --x mts.lr or --x seed"
        )
    points = []
    for x in sorted(groups):
        members = groups[x]
        values = {name: mean_interval([trial.get(column) for trial in members]) for name, column in FINAL_VALUES.items()}
        seeds = sorted({canonical(trial["params"].get("seed")) for trial in members})
        points.append(ScalingPoint(x=x, trials=len(members), seeds=seeds, values=values))
    return points


def _gsnr_fit(trials: list[dict[str, Any]], x_key: str, notes: list[str]) -> Optional[PowerLaw]:
    xs = [_number(trial["params"].get(x_key)) for trial in trials]
    ys = [trial.get("last_gsnr") for trial in trials]
    try:
        fit = fit_power_law(xs, ys)
    except AnalysisError as err:
        notes.append(f"GSNR power law not fitted: {err}")
        return None
    fitted_x = {x for x, y in zip(xs, ys) if x is not None and y is not None and x > 0 and y > 0 and math.isfinite(y)}
    if len(fitted_x) < 3:
        notes.append(
            f"the GSNR power law rests on {len(fitted_x)} distinct {x_key} values, so its exponent is only the slope "
            f"between them and its R^2 says little; sweep 3 or more values of {x_key} to test the fit"
        )
    return fit


def _best_x(points: list[ScalingPoint]) -> Optional[float]:
    scored = [(point.values["val_gain"].mean, point.x) for point in points if math.isfinite(point.values["val_gain"].mean)]
    return max(scored)[1] if scored else None


def _noise_scale_prediction(trials: list[dict[str, Any]], points: list[ScalingPoint], notes: list[str]) -> tuple[Optional[Interval], Optional[float], Optional[float]]:
    scales = [trial["last_noise_scale"] for trial in trials if trial.get("last_noise_scale") is not None and trial["last_noise_scale"] > 0]
    if not scales:
        notes.append("no trial reported a positive noise_scale, so no batch size is predicted")
        return None, None, None
    median = float(np.median(scales))
    return mean_interval(scales), median, nearest_in_log(median, [point.x for point in points])


def _number(value: Any) -> Optional[float]:
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


# Importances -----------------------------------------------------------------------------------


def parameter_importances(database_url: str, study_name: str, params: list[str], notes: list[str]) -> dict[str, dict[str, float]]:
    """Return {evaluator: {param: importance}} from the Optuna study; explain any skip in `notes`."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.load_study(study_name=study_name, storage=database_url)
    except KeyError:
        notes.append(f"no Optuna study named {study_name!r} in the database; importances skipped")
        return {}
    completed = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    varied = _varied_params(completed, params)
    if len(completed) < 2 or len(varied) < 2:
        notes.append(f"importances skipped: they need 2 or more completed trials and 2 or more varied parameters; the study has {len(completed)} completed trial(s), across which {len(varied)} parameter(s) vary ({', '.join(varied) or 'none'})")
        return {}
    target = (lambda trial: trial.values[0]) if len(study.directions) > 1 else None
    results = {}
    for name, evaluator in _evaluators().items():
        subject = study
        if name == "fANOVA" and len(completed) > FANOVA_MAX_TRIALS:
            subject = _subsample(study, completed, FANOVA_MAX_TRIALS)
            notes.append(f"fANOVA ran on a random sample of {FANOVA_MAX_TRIALS} of the {len(completed)} completed trials, because its cost grows faster than linearly with trials")
        try:
            results[name] = optuna.importance.get_param_importances(subject, evaluator=evaluator, params=varied, target=target)
        except (ValueError, RuntimeError) as err:
            notes.append(f"{name} importances failed: {err}")
            logger.warning("%s importances failed on study %s: %s", name, study_name, err)
    return {name: {param: float(value) for param, value in values.items()} for name, values in results.items()}


def _evaluators() -> dict[str, Any]:
    import optuna

    # Mean decrease in impurity is left out: on a 16-trial study where only the batch size mattered
    # it gave the continuous learning rate 99.7% of the importance, a known bias of the method.
    return {
        "PED-ANOVA": optuna.importance.PedAnovaImportanceEvaluator(),
        "fANOVA": optuna.importance.FanovaImportanceEvaluator(seed=0),
    }


def _subsample(study: Any, completed: list[Any], size: int) -> Any:
    """Return an in-memory study holding a seeded random sample of the completed trials."""
    import optuna

    sample = optuna.create_study(directions=study.directions)
    sample.add_trials(random.Random(0).sample(completed, size))
    return sample


def _varied_params(trials: list[Any], params: list[str]) -> list[str]:
    """Return the params present in every completed trial that take two or more values."""
    names = params or sorted({name for trial in trials for name in trial.params})
    varied = []
    for name in names:
        if trials and all(name in trial.params for trial in trials) and len({repr(trial.params[name]) for trial in trials}) > 1:
            varied.append(name)
    return varied
