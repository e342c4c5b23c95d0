"""The central analysis module: one store fed by every trial, best configurations, scaling curves.

`AnalysisCallback` writes each trial report into the experiment's SQL database and TensorBoard
logs while a sweep runs; `best_configurations` and `analyze_experiment` read them back.
"""

from __future__ import annotations

from sweep.analysis.errors import AnalysisError
from sweep.analysis.folder import ExperimentFolder, open_folder
from sweep.analysis.queries import BestResult, best_configurations, format_best
from sweep.analysis.scaling import PowerLaw, ScalingResult, fit_power_law, scaling_analysis
from sweep.analysis.store import AnalysisStore

__all__ = [
    "AnalysisCallback",
    "AnalysisError",
    "AnalysisStore",
    "BestResult",
    "ExperimentFolder",
    "PowerLaw",
    "ScalingResult",
    "analyze_experiment",
    "best_configurations",
    "fit_power_law",
    "format_best",
    "open_folder",
    "scaling_analysis",
]


def __getattr__(name: str) -> object:
    # Ray (the callback) and matplotlib (the report) are imported only when asked for, so that
    # `mtsweep best` stays fast.
    if name == "AnalysisCallback":
        from sweep.analysis.callback import AnalysisCallback

        return AnalysisCallback
    if name == "analyze_experiment":
        from sweep.analysis.report import analyze_experiment

        return analyze_experiment
    raise AttributeError(f"module 'sweep.analysis' has no attribute {name!r}")
