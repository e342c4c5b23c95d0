"""Locate an experiment folder's database, name and searched parameters from its `config.yaml`.

`mtsweep best` should return in well under a second, so this module reads the saved YAML directly
instead of importing the launcher, whose imports (Hydra, torch) alone take seconds.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import yaml

from sweep.analysis.errors import AnalysisError

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
DATABASE_FILE = "sweep.db"
TENSORBOARD_FOLDER = "tensorboard"
ANALYSIS_FOLDER = "analysis"


@dataclasses.dataclass(frozen=True)
class ExperimentFolder:
    """The name, database and searched parameters of one experiment folder."""

    path: Path
    name: str  # the experiment (and Optuna study) name
    database_url: str  # SQLAlchemy URL of the experiment's database
    searched_params: tuple[str, ...]  # dotted run-config keys the search space varies
    metric: str = "val_gain"  # the sweep's objective
    mode: str = "max"

    @property
    def tensorboard_path(self) -> Path:
        return self.path / TENSORBOARD_FOLDER

    @property
    def analysis_path(self) -> Path:
        return self.path / ANALYSIS_FOLDER


def open_folder(path: str | Path) -> ExperimentFolder:
    """Read an experiment folder's `config.yaml`; raise `AnalysisError` when it is missing or unreadable."""
    folder = Path(path).expanduser()
    config_path = folder / CONFIG_FILE
    if not config_path.is_file():
        raise AnalysisError(f"{config_path} not found; give the experiment folder that `mtsweep launch` printed")
    try:
        config = yaml.safe_load(config_path.read_text()) or {}
    except yaml.YAMLError as err:
        raise AnalysisError(f"{config_path} is not valid YAML: {str(err).splitlines()[0]}") from err
    sweep = config.get("sweep") or {}
    storage = config.get("storage") or {}
    url = storage.get("url") or default_database_url(folder)
    return ExperimentFolder(
        path=folder,
        name=sweep.get("name") or folder.name,
        database_url=url,
        searched_params=searched_params(config.get("space") or {}),
        metric=sweep.get("metric") or "val_gain",
        mode=sweep.get("mode") or "max",
    )


def default_database_url(folder: Path) -> str:
    """Return the URL of the SQLite file the launcher creates when `storage.url` is unset."""
    return f"sqlite:///{(folder / DATABASE_FILE).resolve()}"


def searched_params(space: dict[str, Any]) -> tuple[str, ...]:
    """Return the keys of a saved search space that are searched, i.e. not fixed with `value`."""
    params = space.get("params") or {}
    return tuple(path for path, spec in params.items() if not (isinstance(spec, dict) and set(spec) == {"value"}))
