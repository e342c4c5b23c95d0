"""The output of `mtsweep analyze`: PNG plots, a Markdown report and the TensorBoard scaling curves.

    result, report = analyze_experiment(open_folder("experiments/batch"), x_key="pool.batch_size")

Files written into the experiment folder:

- `analysis/report.md`: per-x table with 95% intervals, the GSNR power law, the measured against the
  predicted best batch size, parameter importances and notes on anything skipped;
- `analysis/gsnr_scaling.png`, `analysis/gain_scaling.png` and, with importances,
  `analysis/importances.png`;
- `tensorboard/scaling/`: `scaling/gsnr`, `scaling/val_gain`, `scaling/test_gain` (means),
  `scaling/<metric>_low` and `_high` (95% bounds) and `scaling/gsnr_fit`, stepped by x.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any, Iterable

from sweep.analysis.folder import ExperimentFolder
from sweep.analysis.queries import load_experiment
from sweep.analysis.scaling import FINAL_VALUES, ScalingResult, scaling_analysis
from sweep.analysis.store import AnalysisStore
from sweep.analysis.tensorboard import write_scaling_run

logger = logging.getLogger(__name__)

REPORT_FILE = "report.md"


def analyze_experiment(folder: ExperimentFolder, x_key: str = "pool.batch_size", where: Iterable[str] = ()) -> tuple[ScalingResult, Path]:
    """Run the scaling analysis of an experiment and write its report, plots and TensorBoard curves."""
    store = AnalysisStore(folder.database_url, create=False)
    try:
        record = load_experiment(store, folder.name)
        result = scaling_analysis(store, record, x_key=x_key, where=where, database_url=folder.database_url)
    finally:
        store.close()
    # TensorBoard steps are integers, so curves over a float key such as mts.lr would collapse.
    if all(float(point.x).is_integer() for point in result.points):
        write_scaling_run(folder.tensorboard_path, scaling_curves(result))
    else:
        result.notes.append(f"no TensorBoard scaling curves: {x_key} takes non-integer values, and TensorBoard steps are integers")
    folder.analysis_path.mkdir(parents=True, exist_ok=True)
    plots = write_plots(result, folder.analysis_path)
    report = folder.analysis_path / REPORT_FILE
    _write_atomically(report, render_markdown(result, plots))
    logger.info("Analysis of %s written to %s", folder.name, report)
    return result, report


def scaling_curves(result: ScalingResult) -> dict[str, dict[float, float]]:
    """Return the TensorBoard scaling tags: tag -> {x: value}."""
    curves: dict[str, dict[float, float]] = {}
    for name in FINAL_VALUES:
        curves[f"scaling/{name}"] = {point.x: point.values[name].mean for point in result.points}
        curves[f"scaling/{name}_low"] = {point.x: point.values[name].low for point in result.points}
        curves[f"scaling/{name}_high"] = {point.x: point.values[name].high for point in result.points}
    if result.gsnr_fit is not None:
        curves["scaling/gsnr_fit"] = {point.x: float(result.gsnr_fit(point.x)) for point in result.points}
    return curves


# Plots -----------------------------------------------------------------------------------------


def write_plots(result: ScalingResult, folder: Path) -> list[str]:
    """Write the PNG plots into `folder`; return their file names."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    written = []
    if result.points:
        written.append(_plot_gsnr(plt, result, folder / "gsnr_scaling.png"))
        written.append(_plot_gains(plt, result, folder / "gain_scaling.png"))
    if result.importances:
        written.append(_plot_importances(plt, result, folder / "importances.png"))
    return written


def _plot_gsnr(plt: Any, result: ScalingResult, path: Path) -> str:
    figure, axes = plt.subplots(figsize=(6, 4))
    xs = [point.x for point in result.points]
    means = [point.values["gsnr"].mean for point in result.points]
    errors = [_half(point.values["gsnr"].half_width) for point in result.points]
    axes.errorbar(xs, means, yerr=errors, fmt="o", capsize=3, label="GSNR, mean and 95% CI")
    if result.gsnr_fit is not None:
        fit = result.gsnr_fit
        axes.plot(xs, [fit(x) for x in xs], "-", label=f"fit {fit.coefficient:.3g} x^{fit.exponent:.2f} (R² {fit.r_squared:.2f})")
    _log_axis(axes, "x", xs)
    _log_axis(axes, "y", [mean for mean in means if mean > 0])
    axes.set_xlabel(result.x_key)
    axes.set_ylabel("GSNR of the meta-gradient")
    axes.legend()
    return _save(plt, figure, path)


def _plot_gains(plt: Any, result: ScalingResult, path: Path) -> str:
    figure, axes = plt.subplots(figsize=(6, 4))
    xs = [point.x for point in result.points]
    for name in ("val_gain", "test_gain"):
        means = [point.values[name].mean for point in result.points]
        errors = [_half(point.values[name].half_width) for point in result.points]
        axes.errorbar(xs, means, yerr=errors, fmt="o-", capsize=3, label=f"{name}, mean and 95% CI")
    if result.noise_scale_median is not None:
        axes.axvline(result.noise_scale_median, linestyle="--", color="gray", label=f"noise scale {result.noise_scale_median:.3g}")
    _log_axis(axes, "x", xs)
    axes.axhline(0.0, color="black", linewidth=0.5)
    axes.set_xlabel(result.x_key)
    axes.set_ylabel("gain over uniform (accuracy)")
    axes.legend()
    return _save(plt, figure, path)


def _plot_importances(plt: Any, result: ScalingResult, path: Path) -> str:
    figure, axes = plt.subplots(figsize=(6, 4))
    names = sorted({param for values in result.importances.values() for param in values})
    width = 0.8 / len(result.importances)
    for index, (evaluator, values) in enumerate(result.importances.items()):
        axes.barh([position + index * width for position in range(len(names))], [values.get(name, 0.0) for name in names], height=width, label=evaluator)
    axes.set_yticks([position + 0.4 - width / 2 for position in range(len(names))], names)
    axes.set_xlabel("importance (normalized to sum 1)")
    axes.legend()
    return _save(plt, figure, path)


def _log_axis(axes: Any, which: str, values: list[float]) -> None:
    """Use a log scale for positive values; on x, label exactly the tested values."""
    if not values or min(values) <= 0:
        return
    getattr(axes, f"set_{which}scale")("log")
    from matplotlib.ticker import FormatStrFormatter, NullLocator

    if which == "x":
        axes.set_xticks(values, [f"{value:g}" for value in values])
        axes.xaxis.set_minor_locator(NullLocator())
    else:
        axes.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        axes.yaxis.set_minor_formatter(FormatStrFormatter("%g"))


def _half(value: float) -> float:
    return 0.0 if math.isnan(value) else value


def _save(plt: Any, figure: Any, path: Path) -> str:
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path.name


# Markdown --------------------------------------------------------------------------------------


def render_markdown(result: ScalingResult, plots: list[str]) -> str:
    """Return the Markdown report of a scaling analysis."""
    lines = [f"# Scaling analysis of {result.experiment}", ""]
    excluded = ", ".join(f"{count} {status}" for status, count in sorted(result.trials_excluded.items())) or "none"
    lines += [f"{result.trials_used} finished trials, grouped by `{result.x_key}`; left out: {excluded}.", ""]
    if result.where:
        filters = " ".join(f"`--where {item}`" for item in result.where)
        lines += [f"Filtered by {filters}: {result.trials_filtered_out} trials of the experiment left out.", ""]
    lines += _points_table(result) + [""]
    lines += _fit_section(result) + [""]
    lines += _batch_size_section(result) + [""]
    lines += _importance_section(result) + [""]
    if result.notes:
        lines += ["## Notes", ""] + [f"- {note}" for note in result.notes] + [""]
    lines += [f"![{name}]({name})" for name in plots]
    return "\n".join(lines).rstrip() + "\n"


def _points_table(result: ScalingResult) -> list[str]:
    lines = [
        "Final values per trial, mean ± 95% confidence half width over the trials at each x "
        "(Student's t; no interval with one trial). `val_gain` and `gsnr` are the last epoch's; "
        "`test_gain` is that of the model with the best validation accuracy, because the test split "
        "never chooses an epoch.",
        "",
        f"| {result.x_key} | trials | seed values | val_gain | test_gain | gsnr |",
        "| ---: | ---: | --- | ---: | ---: | ---: |",
    ]
    for point in result.points:
        cells = [_format_interval(point.values[name]) for name in ("val_gain", "test_gain", "gsnr")]
        lines.append(f"| {point.x:g} | {point.trials} | {', '.join(point.seeds)} | {' | '.join(cells)} |")
    return lines


def _fit_section(result: ScalingResult) -> list[str]:
    lines = ["## GSNR power law", ""]
    fit = result.gsnr_fit
    if fit is None:
        return lines + ["Not fitted (see the notes)."]
    interval = "" if math.isnan(fit.exponent_half_width) else f" ± {fit.exponent_half_width:.3f}"
    lines.append(f"gsnr ≈ {fit.coefficient:.4g} · x^{fit.exponent:.3f}{interval} (95% CI), R² = {fit.r_squared:.3f} over {fit.points} trials, x = `{result.x_key}`.")
    lines.append("")
    lines.append(
        "When x is the batch size: for the mean of x i.i.d. per-sample gradients the exponent is 1; an "
        "exponent well below 1 means the normalized weights concentrate on few samples, so a larger "
        "batch adds less signal."
    )
    return lines


def _batch_size_section(result: ScalingResult) -> list[str]:
    if result.x_key != "pool.batch_size":
        return [f"## Best {result.x_key}", "", f"- Measured: the highest mean val_gain is at {result.x_key} = {_format_number(result.best_x)}."]
    lines = ["## Best batch size: measured and predicted", ""]
    lines.append(f"- Measured: the highest mean val_gain is at {result.x_key} = {_format_number(result.best_x)}.")
    if result.noise_scale_median is None:
        return lines + ["- Predicted: no noise scale was reported."]
    lines.append(
        f"- Predicted: the median noise scale B_simple over the trials is {result.noise_scale_median:.4g}; "
        f"the nearest tested value is {_format_number(result.predicted_x)}. Past B_simple a larger batch should stop helping."
    )
    if result.best_x is not None and result.predicted_x is not None:
        ratio = result.best_x / result.noise_scale_median
        lines.append(f"- The measured best is {ratio:.3g} times the noise scale.")
    return lines


def _importance_section(result: ScalingResult) -> list[str]:
    lines = ["## Parameter importances", ""]
    if not result.importances:
        return lines + ["Not computed (see the notes)."]
    evaluators = list(result.importances)
    names = sorted({param for values in result.importances.values() for param in values}, key=lambda name: -max(values.get(name, 0.0) for values in result.importances.values()))
    lines += [f"| parameter | {' | '.join(evaluators)} |", "| --- |" + " ---: |" * len(evaluators)]
    for name in names:
        lines.append(f"| `{name}` | " + " | ".join(f"{result.importances[evaluator].get(name, 0.0):.3f}" for evaluator in evaluators) + " |")
    return lines + ["", "Importances of the study's objective over its completed trials, normalized to sum 1."]


def _format_interval(interval: Any) -> str:
    if interval.n == 0:
        return "-"
    if math.isnan(interval.half_width):
        return f"{interval.mean:.4g}"
    return f"{interval.mean:.4g} ± {interval.half_width:.2g}"


def _format_number(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    os.replace(temporary, path)
