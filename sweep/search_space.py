"""Search spaces: which run-config keys a sweep varies, and how Optuna samples them.

A search space is a YAML mapping from a dotted run-config key to a parameter spec:

    params:
      pool.batch_size: {choice: [64, 256, 1024]}     # categorical, scalars
      mts.features: {choice: [[loss], [loss, class]]} # categorical, list values
      mts.lr: {float: [1.0e-4, 1.0e-2], log: true}    # float range, log scale
      mts.interval: {int: [1, 4]}                     # integer range (optional `step`, `log`)
      train.epochs: 3                                 # fixed value (also `{value: 3}`)
    sweep:                                            # optional defaults of the sweep group
      num_samples: 4

Bundled spaces live in the `search_spaces` package; `search_space=NAME` picks one, and a path to a
`.yaml` file picks a user file. Every problem is reported at once, one line each, before Ray starts.

Optuna's categorical distribution stores only None, bool, int, float and str, so a list choice is
stored in the study as its JSON text (`["loss", "class"]`) and decoded again before it reaches the
trial. Numpy scalars are turned into Python scalars when the space is read, because neither Optuna's
storage nor OmegaConf accepts them.
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import json
import logging
import math
import typing
from pathlib import Path
from typing import Any, Iterator, Mapping

import yaml

from mts.config import RunConfig

logger = logging.getLogger(__name__)

SEARCH_SPACE_DIR = Path(__file__).resolve().parent.parent / "search_spaces"
KINDS = ("choice", "int", "float", "value")
# Keys whose value changes the `uniform` baseline; the launcher trains one baseline per combination.
BASELINE_PREFIXES = ("task.", "model.", "train.")
BASELINE_KEYS = ("seed",)
# Train keys that change speed but not results, so they do not split baselines.
NON_RESULT_KEYS = ("train.threads", "train.eval_batch_size", "task.cache_dir")
# Above this many edge combinations, validation varies one parameter at a time instead.
MAX_VALIDATED_COMBINATIONS = 512


@dataclasses.dataclass(frozen=True)
class Param:
    """One searched or fixed run-config key."""

    path: str  # dotted run-config key, e.g. pool.batch_size
    kind: str  # choice | int | float | value
    choices: tuple[Any, ...] = ()  # choice: the allowed values (scalars or lists)
    low: float | int | None = None  # int/float: inclusive lower bound
    high: float | int | None = None  # int/float: inclusive upper bound
    log: bool = False  # int/float: sample on a log scale
    step: float | int | None = None  # int/float: grid step; None for a continuous float
    value: Any = None  # value: the fixed value

    def edge_values(self) -> list[Any]:
        """Return the values that bound this parameter: every choice, or both ends of a range."""
        if self.kind == "choice":
            return list(self.choices)
        if self.kind == "value":
            return [self.value]
        return [self.low, self.high]

    def suggest(self, trial: Any) -> Any:
        """Draw this parameter from an Optuna trial and return the decoded value."""
        if self.kind == "choice":
            encoded = trial.suggest_categorical(self.path, [encode_choice(choice) for choice in self.choices])
            return decode_choice(encoded, self.choices)
        if self.kind == "int":
            return trial.suggest_int(self.path, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        if self.kind == "float":
            return trial.suggest_float(self.path, float(self.low), float(self.high), step=self.step, log=self.log)
        return self.value


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """A named set of parameters plus optional defaults for the `sweep` config group."""

    name: str
    params: tuple[Param, ...]
    sweep_defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def searched(self) -> tuple[Param, ...]:
        return tuple(param for param in self.params if param.kind != "value")

    def to_dict(self) -> dict[str, Any]:
        """Return the YAML form of this space, which `parse_search_space` reads back unchanged."""
        params: dict[str, Any] = {}
        for param in self.params:
            if param.kind == "choice":
                params[param.path] = {"choice": list(param.choices)}
            elif param.kind == "value":
                params[param.path] = {"value": param.value}
            else:
                spec: dict[str, Any] = {param.kind: [param.low, param.high], "log": param.log}
                if param.step is not None:
                    spec["step"] = param.step
                params[param.path] = spec
        return {"name": self.name, "params": params, "sweep": dict(self.sweep_defaults)}

    def grid(self) -> dict[str, list[Any]]:
        """Return the Optuna grid (encoded choices per searched key); ranges have no grid."""
        return {param.path: [encode_choice(choice) for choice in param.choices] for param in self.searched}

    def grid_size(self) -> int:
        return math.prod(len(param.choices) for param in self.searched if param.kind == "choice")

    def baseline_combinations(self) -> list[dict[str, Any]]:
        """Return every combination of the baseline keys this space can draw (fixed values included)."""
        relevant = [param for param in self.params if affects_baseline(param.path)]
        values = [param.edge_values() for param in relevant]
        combinations = [dict(zip((param.path for param in relevant), combo)) for combo in itertools.product(*values)]
        return combinations or [{}]

    def edge_combinations(self) -> Iterator[dict[str, Any]]:
        """Yield the combinations of edge values that validation checks."""
        values = [param.edge_values() for param in self.params]
        if math.prod(len(options) for options in values) <= MAX_VALIDATED_COMBINATIONS:
            for combo in itertools.product(*values):
                yield dict(zip((param.path for param in self.params), combo))
            return
        # Too many combinations: keep the first edge of every parameter and vary one at a time.
        first = {param.path: param.edge_values()[0] for param in self.params}
        for param in self.params:
            for value in param.edge_values():
                yield {**first, param.path: value}


class SpaceSampler:
    """The define-by-run function given to `OptunaSearch`: suggests every parameter of a space.

    A class rather than a closure, because Ray Tune saves the searcher with plain `pickle`.
    Returning the decoded values makes Tune's trial config hold real lists, while the Optuna trial
    holds their JSON text.
    """

    def __init__(self, space: SearchSpace) -> None:
        self.space = space

    def __call__(self, trial: Any) -> dict[str, Any]:
        return {param.path: param.suggest(trial) for param in self.space.params}


def affects_baseline(path: str) -> bool:
    if path in NON_RESULT_KEYS:
        return False
    return path in BASELINE_KEYS or path.startswith(BASELINE_PREFIXES)


def encode_choice(value: Any) -> Any:
    """Return a value Optuna can store: lists and dicts as canonical JSON text."""
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return value


def decode_choice(encoded: Any, choices: tuple[Any, ...]) -> Any:
    """Return the original choice whose encoding is `encoded`."""
    for choice in choices:
        if encode_choice(choice) == encoded:
            return choice
    raise ValueError(f"{encoded!r} is not one of the encoded choices {[encode_choice(c) for c in choices]}")


def to_plain(value: Any) -> Any:
    """Turn numpy scalars and arrays, tuples and OmegaConf containers into plain Python values."""
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return to_plain(value.tolist())  # numpy scalars and arrays
    if isinstance(value, Mapping):
        return {str(key): to_plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)) or type(value).__name__ == "ListConfig":
        return [to_plain(item) for item in value]
    return value


# Loading -------------------------------------------------------------------------------------


def bundled_names() -> list[str]:
    return sorted(path.stem for path in SEARCH_SPACE_DIR.glob("*.yaml"))


def search_space_path(reference: str) -> Path:
    """Return the YAML file for a bundled space name or a path; raise ValueError if there is none."""
    if reference in bundled_names():
        return SEARCH_SPACE_DIR / f"{reference}.yaml"
    path = Path(reference).expanduser()
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path
    raise ValueError(
        f"search_space={reference!r} is neither a bundled search space nor an existing .yaml file; "
        f"bundled: {', '.join(bundled_names())}"
    )


def read_search_space(reference: str, partial: bool = False) -> tuple[SearchSpace | None, list[str]]:
    """Read and check a search space by bundled name or path; return it (or None) and the problems.

    With `partial`, see `parse_search_space`.
    """
    try:
        path = search_space_path(reference)
    except ValueError as err:
        return None, [str(err)]
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        return None, [f"search space {path} is not valid YAML: {first}"]
    name = reference if reference in bundled_names() else path.stem
    return parse_search_space(data, name, partial=partial)


def parse_search_space(data: Any, name: str, partial: bool = False) -> tuple[SearchSpace | None, list[str]]:
    """Check a search-space mapping and build the space; return it (or None) and the problems.

    With problems the space is None, unless `partial` is set and some parameters are valid: then the
    space of those is returned beside the problems, so that a caller can check its trials too and
    report every problem at once.
    """
    where = f"search space {name!r}"
    if not isinstance(data, Mapping):
        return None, [f"{where} must be a mapping with a `params` key, got {type(data).__name__}"]
    unknown = sorted(set(data) - {"name", "params", "sweep"})
    problems = [f"{where} has unknown top-level key {key!r}; allowed: name, params, sweep" for key in unknown]
    params_data = data.get("params")
    if not isinstance(params_data, Mapping) or not params_data:
        problems.append(f"{where}: `params` must be a non-empty mapping of run-config keys to specs")
        return None, problems

    key_types = run_config_types()
    params = []
    for path, spec in params_data.items():
        param, param_problems = _parse_param(str(path), to_plain(spec), key_types, where)
        problems += param_problems
        if param is not None:
            params.append(param)
    sweep_defaults = to_plain(data.get("sweep") or {})
    if not isinstance(sweep_defaults, Mapping):
        problems.append(f"{where}: `sweep` must be a mapping of sweep options, got {sweep_defaults!r}")
        sweep_defaults = {}
    if problems and not (partial and params):
        return None, problems
    return SearchSpace(name=name, params=tuple(params), sweep_defaults=dict(sweep_defaults)), problems


def _parse_param(path: str, spec: Any, key_types: dict[str, Any], where: str) -> tuple[Param | None, list[str]]:
    if path not in key_types:
        close = difflib.get_close_matches(path, list(key_types), n=1)
        hint = f"; did you mean {close[0]}?" if close else "; keys are dotted run-config paths such as pool.batch_size"
        if f"{path}.name" in key_types:
            # On the command line `task=file` chooses the task; in a search space the key is `task.name`.
            hint = f"; to choose the {path}, set {path}.name"
        return None, [f"{where}: unknown parameter {path!r}{hint}"]
    if path == "train.threads":
        return None, [f"{where}: train.threads is set from sweep.cpus_per_trial and cannot be searched"]
    expected = key_types[path]
    if not isinstance(spec, Mapping):
        spec = {"value": spec}
    kinds = [kind for kind in KINDS if kind in spec]
    extra = sorted(set(spec) - {*KINDS, "log", "step"})
    if len(kinds) != 1 or extra:
        return None, [f"{where}: {path} spec {spec!r} must have exactly one of {', '.join(KINDS)} (plus `log`, `step` for ranges)"]
    kind = kinds[0]
    if kind == "choice":
        return _parse_choice(path, spec["choice"], expected, where)
    if kind == "value":
        problem = _type_problem(spec["value"], expected)
        if problem:
            return None, [f"{where}: {path} fixed value {spec['value']!r} {problem}"]
        return Param(path, "value", value=spec["value"]), []
    return _parse_range(path, kind, spec, expected, where)


def _parse_choice(path: str, choices: Any, expected: Any, where: str) -> tuple[Param | None, list[str]]:
    if not isinstance(choices, list) or not choices:
        return None, [f"{where}: {path} choice list is empty or not a list ({choices!r}); give at least one value"]
    problems = []
    for choice in choices:
        problem = _type_problem(choice, expected)
        if problem:
            problems.append(f"{where}: {path} choice {choice!r} {problem}")
    encoded = [encode_choice(choice) for choice in choices]
    duplicates = sorted({str(item) for item in encoded if encoded.count(item) > 1})
    if duplicates:
        problems.append(f"{where}: {path} lists the choice {duplicates[0]} twice; list each value once")
    if problems:
        return None, problems
    return Param(path, "choice", choices=tuple(choices)), []


def _parse_range(path: str, kind: str, spec: Mapping[str, Any], expected: Any, where: str) -> tuple[Param | None, list[str]]:
    bounds = spec[kind]
    log, step = spec.get("log", False), spec.get("step")
    numeric = (int,) if kind == "int" else (int, float)
    if expected not in (int, float) or (kind == "float" and expected is int):
        return None, [f"{where}: {path} is {_with_article(_type_name(expected))} key and cannot take {_with_article(kind)} range; use choice or value"]
    if not (isinstance(bounds, list) and len(bounds) == 2 and all(isinstance(b, numeric) and not isinstance(b, bool) for b in bounds)):
        return None, [f"{where}: {path} {kind} range {bounds!r} must be a list [low, high] of {kind} numbers"]
    low, high = bounds
    problems = []
    if not isinstance(log, bool):
        problems.append(f"{where}: {path} log={log!r} must be true or false")
    if low >= high:
        problems.append(f"{where}: {path} range has low={low} >= high={high}; low must be below high")
    if log is True and low <= 0:
        problems.append(f"{where}: {path} log range [{low}, {high}] touches zero or below; a log scale needs low > 0")
    if step is not None and (not isinstance(step, numeric) or isinstance(step, bool) or step <= 0):
        problems.append(f"{where}: {path} step={step!r} must be a positive {kind}")
    if step is not None and log is True:
        problems.append(f"{where}: {path} sets both step and log; Optuna allows only one of them")
    if problems:
        return None, problems
    return Param(path, kind, low=low, high=high, log=log, step=step), []


# The run schema ------------------------------------------------------------------------------


def run_config_types(config_class: type = RunConfig, prefix: str = "") -> dict[str, Any]:
    """Return each dotted leaf key of the run schema with its type (int, float, str, bool, list[...])."""
    types: dict[str, Any] = {}
    hints = typing.get_type_hints(config_class)
    for field in dataclasses.fields(config_class):
        hint = hints[field.name]
        if dataclasses.is_dataclass(hint):
            types.update(run_config_types(hint, f"{prefix}{field.name}."))
        else:
            types[f"{prefix}{field.name}"] = hint
    return types


def _type_problem(value: Any, expected: Any) -> str | None:
    """Return why `value` does not fit the schema type `expected`, or None if it fits."""
    origin = typing.get_origin(expected)
    args = typing.get_args(expected)
    if origin is typing.Union and type(None) in args:
        if value is None:
            return None
        expected = next(arg for arg in args if arg is not type(None))
        origin, args = typing.get_origin(expected), typing.get_args(expected)
    if origin is list:
        if not isinstance(value, list):
            return f"is not a list; the key takes {_with_article(_type_name(expected))}"
        bad = [item for item in value if _type_problem(item, args[0])]
        return f"contains {bad[0]!r}, not {_with_article(_type_name(args[0]))}" if bad else None
    if origin is dict:
        return None if isinstance(value, Mapping) else f"is not a mapping; the key takes {_with_article(_type_name(expected))}"
    if expected is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif expected is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, expected)
    if ok:
        return None
    problem = f"is not {_with_article(_type_name(expected))}"
    if expected is float and isinstance(value, str) and _parses_as_float(value):
        # YAML 1.1, which PyYAML reads, takes 1.0e6 for a string and needs the exponent's sign.
        problem += f"; YAML reads {value!r} as text, write it with a signed exponent such as 1.0e+6"
    return problem


def _parses_as_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _with_article(name: str) -> str:
    return f"an {name}" if name[:1].lower() in "aeiou" else f"a {name}"


def _type_name(expected: Any) -> str:
    return getattr(expected, "__name__", str(expected)) if typing.get_origin(expected) is None else str(expected)
