"""Composition and validation of the Hydra config of every mtsweep command.

The schema is a structured config built from the `mts` dataclasses, so Hydra itself rejects
wrong types. Overrides are checked against the composed default config first, so an unknown key or
an unknown group option gives one line naming the key, the value and what is allowed, instead of
a Hydra traceback. Nothing here starts Ray or builds data.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
from pathlib import Path
from typing import Any, Optional

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mts.config import RunConfig
from mts.validation import config_problems
from sweep.errors import ConfigProblems

logger = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).parent / "conf"


@dataclasses.dataclass
class AppConfig(RunConfig):
    """A run config plus the options of the `mtsweep run` command."""

    baseline: bool = False  # also train `uniform` on the same task and seed and report the gain
    output_dir: Optional[str] = None  # where config and reports go; None: runs/<time>-<method>-<task>
    log_level: str = "INFO"  # DEBUG | INFO | WARNING


ConfigStore.instance().store(name="schema", node=AppConfig)


def config_groups() -> dict[str, list[str]]:
    """Return each config group of the primary config with its available options."""
    groups = {}
    for folder in sorted(path for path in CONFIG_DIR.iterdir() if path.is_dir()):
        groups[folder.name] = sorted(path.stem for path in folder.glob("*.yaml"))
    return groups


def compose_config(overrides: list[str], config_name: str = "config") -> DictConfig:
    """Compose the config from `overrides`, raising `ConfigProblems` with one line per problem."""
    composed, problems = compose_valid_overrides(overrides, config_name)
    if problems:
        raise ConfigProblems(problems)
    return composed


def compose_valid_overrides(overrides: list[str], config_name: str = "config") -> tuple[DictConfig, list[str]]:
    """Compose the config from the valid overrides; return it and one line per invalid override.

    Hydra stops at the first override it cannot apply, so an override that fails is tried alone to
    tell which ones are invalid. The rest are composed, so that the caller can check their values too.
    """
    parsed = _parse_overrides(overrides)
    unknown = _unknown_override_problems(parsed, config_name)
    problems = [line for line in unknown if line]
    valid = [override for override, line in zip(overrides, unknown) if not line]
    try:
        return _compose(config_name, valid), problems
    except (HydraException, OmegaConfBaseException) as err:
        first_error = _one_line(err)
    rejected = []
    for override in valid:
        try:
            _compose(config_name, [override])
        except (HydraException, OmegaConfBaseException) as err:
            problems.append(_one_line(err))
            rejected.append(override)
    if not rejected:
        # Each override works alone, so their combination fails: report Hydra's own message.
        raise ConfigProblems([*problems, first_error])
    try:
        return _compose(config_name, [override for override in valid if override not in rejected]), problems
    except (HydraException, OmegaConfBaseException) as err:
        raise ConfigProblems([*problems, _one_line(err)]) from err


def _compose(config_name: str, overrides: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides))


def load_run_config(overrides: list[str]) -> AppConfig:
    """Compose and validate the config of one training run, listing every problem at once."""
    composed, problems = compose_valid_overrides(overrides)
    try:
        config = to_run_config(composed)
    except ConfigProblems as err:
        raise ConfigProblems([*problems, *err.problems]) from None
    problems += config_problems(config)
    if config.log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        problems.append(f"log_level={config.log_level!r} is not allowed; choose one of: DEBUG, INFO, WARNING, ERROR")
    if problems:
        raise ConfigProblems(problems)
    return config


def to_run_config(composed: DictConfig) -> Any:
    """Turn a composed DictConfig into its schema dataclass, with one-line type errors."""
    try:
        return OmegaConf.to_object(composed)
    except OmegaConfBaseException as err:
        raise ConfigProblems([_one_line(err)]) from err


def _parse_overrides(overrides: list[str]) -> list[Any]:
    try:
        return OverridesParser.create().parse_overrides(list(overrides))
    except HydraException as err:
        raise ConfigProblems([f"invalid override syntax: {_one_line(err)}; write key=value, e.g. train.lr=0.001"]) from err


def _unknown_override_problems(parsed: list[Any], config_name: str) -> list[str]:
    """Return, for each override in order, why its key or group option does not exist, or ""."""
    groups = config_groups()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        defaults = compose(config_name=config_name)
    known_keys = _leaf_keys(OmegaConf.to_container(defaults, resolve=False))
    problems = []
    for override in parsed:
        key = override.key_or_group
        value = override.input_line.split("=", 1)[1] if "=" in override.input_line else ""
        if key in groups:
            known = override.value() in groups[key]
            problems.append("" if known else f"{key}={value!r} is not a known {key}; allowed: {', '.join(groups[key])}")
        else:
            problems.append("" if _key_exists(key, known_keys) else _unknown_key_line(key, value, known_keys))
    return problems


def _leaf_keys(node: Any, prefix: str = "") -> set[str]:
    keys = set()
    if isinstance(node, dict):
        for name, child in node.items():
            path = f"{prefix}{name}"
            keys.add(path)
            keys |= _leaf_keys(child, path + ".")
    return keys


def _key_exists(key: str, known_keys: set[str]) -> bool:
    return key in known_keys


def _unknown_key_line(key: str, value: str, known_keys: set[str]) -> str:
    parent = key.rsplit(".", 1)[0] if "." in key else ""
    if parent and parent not in known_keys:
        # The whole section is unknown, so list the top-level keys instead of its (empty) children.
        parent = ""
    siblings = sorted(k for k in known_keys if (k.rsplit(".", 1)[0] if "." in k else "") == parent)
    close = difflib.get_close_matches(key, sorted(known_keys), n=1)
    hint = f"; did you mean {close[0]}?" if close else ""
    where = f"under {parent!r}" if parent else "at the top level"
    return f"unknown config key {key!r} (value {value!r}){hint}; keys {where}: {', '.join(siblings)}"


def _one_line(err: BaseException) -> str:
    """Return the first meaningful line of a Hydra or OmegaConf error, naming the key when known."""
    cause = err.__cause__
    if str(err).startswith("Error merging override") and cause is not None:
        override = str(err).removeprefix("Error merging override").strip()
        return f"{override}: {_first_line(cause)}; give a value of the key's type"
    message = _first_line(err)
    full_key = getattr(err, "full_key", None)
    if full_key and full_key not in message:
        message = f"{full_key}: {message}"
    return message


def _first_line(err: BaseException) -> str:
    """Return the first line of an error, joined with Hydra's `+key=` hint when it gives one."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    # Hydra rejects `task.mixture={...}` on an empty dict node, and the second line of its message
    # gives the fix (`+task.mixture={...}`), so that line is kept in the one-line message.
    hints = [line for line in lines[1:] if line.startswith("To append to your config use")]
    return "; ".join([lines[0].rstrip("."), *hints]) if hints else lines[0]
