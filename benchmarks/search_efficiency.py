"""Search efficiency: how many TPE trials come within 1 point of a grid's best val_gain.

    python benchmarks/search_efficiency.py                  # 48-point grid, 30 epochs, 50 replay seeds
    python benchmarks/search_efficiency.py --quick          # 2 x 2 x 1 grid, 3 epochs, 10 replay seeds
    python benchmarks/search_efficiency.py --root experiments   # keep the grid's experiment in experiments/
    python benchmarks/search_efficiency.py --experiment experiments/20261204-225818-efficiency   # replay a finished grid

Step 1 runs the bundled `efficiency_grid` search space (pool batch size x feature groups x meta
learning rate on mnist1d_shift) through `mtsweep launch` with the `grid` searcher, one trial per
grid point, and reads every trial's val_gain back from the experiment's analysis store: the final
epoch's (the value the sweep's Optuna study records) and the best epoch's.

Step 2 is a tabular benchmark, as NAS-Bench tables are used: for each objective it replays the
sampler the sweep builds for `sweep.searcher=tpe` (`sweep.searcher.build_sampler`) over the same
categorical space, looking each suggested configuration up in the grid's table instead of training
it. For each sampler seed it counts the trials until one comes within `--tolerance` (1 point) of
the grid's best, and until one reaches the best itself. A repeated configuration counts as another
trial, as it would in a sweep. Random search with the same replay is the reference. The tables give
the median and 90th percentile of those counts and their ratio to the grid size (goal: TPE median
<= 1/3 of the grid on the final-epoch objective within 1 point), the grid's best configuration and
spread, and every grid point's val_gain.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import math
import statistics
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.results import append_result, markdown_table  # noqa: E402
from mts.errors import MtsError  # noqa: E402
from sweep.analysis.queries import canonical  # noqa: E402
from sweep.search_space import SEARCH_SPACE_DIR, SearchSpace  # noqa: E402

logger = logging.getLogger(__name__)

GRID_SPACE = SEARCH_SPACE_DIR / "efficiency_grid.yaml"
# The --quick grid replaces the bundled one's params: 2 batch sizes x 2 feature sets x 1 meta
# learning rate, 3 epochs. Its numbers only show that the pipeline works.
QUICK_PARAMS: dict[str, Any] = {
    "pool.batch_size": {"choice": [128, 512]},
    "mts.features": {"choice": [["loss"], ["loss", "class"]]},
    "mts.lr": {"choice": [3.0e-3]},
    "train.epochs": 3,
}
SAMPLERS = ("tpe", "random")
# A replay that finds no good configuration within this many grid sizes of trials counts as missed.
CAP_GRID_SIZES = 10

Key = tuple[str, ...]
# The val_gain of every grid point, None for a trial that diverged or errored.
Table = dict[Key, Optional[float]]
FINAL, BEST = "final epoch", "best epoch"
# The two objectives replayed, each an analysis-store column of the trial summary.
OBJECTIVES = {FINAL: "last_val_gain", BEST: "best_val_gain"}


# Step 1: the grid through `mtsweep launch` ------------------------------------------------------


def write_space(path: Path, quick: bool) -> int:
    """Write the grid's search space to `path` (the bundled one, shrunk with --quick) and return its size."""
    data = yaml.safe_load(GRID_SPACE.read_text())
    if quick:
        data["params"].update(QUICK_PARAMS)
    size = math.prod(len(spec["choice"]) for spec in data["params"].values() if isinstance(spec, dict) and "choice" in spec)
    data["sweep"]["num_samples"] = size
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return size


def run_grid(space_path: Path, root: Path, name: str, concurrent: int) -> tuple[Path, float]:
    """Run the grid with `mtsweep launch` and return the experiment folder and the wall seconds.

    The command's output goes to `<root>/<name>.log`. A failed launch raises `RuntimeError` with its last lines.
    """
    command = [
        sys.executable, "-m", "sweep.cli", "launch", f"search_space={space_path}", f"sweep.root={root}",
        f"sweep.name={name}", "sweep.cpus_per_trial=1", f"sweep.max_concurrent_trials={concurrent}",
        "sweep.progress_interval_s=60",
    ]
    log_path = root / f"{name}.log"
    logger.warning("Running the grid: %s (output in %s)", " ".join(command), log_path)
    started = time.perf_counter()
    with log_path.open("w") as log:
        completed = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, cwd=Path(__file__).resolve().parents[1], check=False)
    seconds = time.perf_counter() - started
    if completed.returncode != 0:
        tail = "\n".join(log_path.read_text().splitlines()[-20:])
        raise RuntimeError(f"mtsweep launch exited with code {completed.returncode} after {seconds:.0f} s; last lines of {log_path}:\n{tail}")
    return root / name, seconds


# Reading the grid back --------------------------------------------------------------------------


def load_space(experiment: Path) -> SearchSpace:
    """Return the search space saved in the experiment's config.yaml."""
    from sweep.launcher import open_experiment

    return open_experiment(experiment).space


def config_key(space: SearchSpace, params: dict[str, Any]) -> Key:
    """Return the table key of a configuration: the canonical text of each searched value."""
    return tuple(canonical(params[param.path]) for param in space.searched)


def read_grid(experiment: Path, space: SearchSpace) -> tuple[dict[str, Table], float]:
    """Read each grid point's val_gain per objective from the analysis store, None for a trial without one.

    Also returns the seconds from the first trial's start to the last one's end. Raises
    `RuntimeError` when a grid point has no trial, because the replay could not look it up.
    """
    from sweep.analysis.folder import open_folder
    from sweep.analysis.queries import load_experiment
    from sweep.analysis.store import AnalysisStore

    folder = open_folder(experiment)
    store = AnalysisStore(folder.database_url, create=False)
    try:
        trials = store.trial_summaries(load_experiment(store, folder.name).id)
    finally:
        store.close()
    tables = {}
    for objective, column in OBJECTIVES.items():
        values: dict[Key, list[Optional[float]]] = {}
        for trial in trials:
            value = trial.get(column) if trial["status"] == "finished" else None
            values.setdefault(config_key(space, trial["params"]), []).append(value)
        check_complete(space, values)
        tables[objective] = {key: _single_value(key, found) for key, found in values.items()}
    starts = [trial["started_at"] for trial in trials if trial["started_at"] is not None]
    ends = [trial["ended_at"] for trial in trials if trial["ended_at"] is not None]
    return tables, (max(ends) - min(starts)) if starts and ends else math.nan


def check_complete(space: SearchSpace, values: dict[Key, list[Optional[float]]]) -> None:
    """Raise `RuntimeError` when the store lacks a grid point of `space`."""
    expected = {tuple(canonical(value) for value in combo) for combo in itertools.product(*(param.choices for param in space.searched))}
    missing = sorted(expected - set(values))
    if missing:
        raise RuntimeError(f"the analysis store has no trial for {len(missing)} of {len(expected)} grid points, e.g. {missing[0]}. Run the grid again, because the replay needs every point.")


def _single_value(key: Key, values: list[Optional[float]]) -> Optional[float]:
    """Return the value of a grid point. A point run twice keeps the mean of its finite values."""
    finite = [value for value in values if value is not None and math.isfinite(value)]
    if len(values) > 1:
        logger.warning("Grid point %s has %d trials; using the mean of %s", key, len(values), finite)
    return statistics.mean(finite) if finite else None


# Step 2: the replay -----------------------------------------------------------------------------


def trials_to_target(space: SearchSpace, table: Table, sampler_name: str, seed: int, target: float, cap: int) -> Optional[int]:
    """Replay one seeded sampler against the table and return the trials until a value >= target.

    A grid point without a value (a diverged or errored trial) goes to `study.tell` as FAIL, as in
    the sweep. Returns None when `cap` trials pass without reaching the target.
    """
    import optuna

    from sweep.searcher import build_sampler

    study = optuna.create_study(direction="maximize", sampler=build_sampler(sampler_name, space, seed))
    for number in range(1, cap + 1):
        trial = study.ask()
        value = table[config_key(space, {param.path: param.suggest(trial) for param in space.searched})]
        if value is None:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            continue
        study.tell(trial, value)
        if value >= target:
            return number
    return None


def replay_counts(space: SearchSpace, table: Table, sampler_name: str, seeds: int, tolerance: float) -> list[Optional[int]]:
    """Return the trials-to-target of `seeds` replays of one sampler; the target is the grid's best minus `tolerance`."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    target = max(value for value in table.values() if value is not None) - tolerance
    cap = CAP_GRID_SIZES * len(table)
    return [trials_to_target(space, table, sampler_name, seed, target, cap) for seed in range(seeds)]


def count_cells(counts: list[Optional[int]], grid_size: int) -> list[object]:
    """Return the median, 90th percentile and mean trials, their ratios to the grid size and the misses."""
    # A missed replay counts as infinitely many trials, so that it can only raise a percentile.
    values = [math.inf if count is None else float(count) for count in counts]
    median, p90 = percentile(values, 50), percentile(values, 90)
    missed = sum(count is None for count in counts)
    mean = statistics.mean(values) if not missed else math.inf
    return [
        _trials_cell(median, grid_size), _trials_cell(p90, grid_size), _trials_cell(mean, grid_size),
        round(median / grid_size, 3), round(p90 / grid_size, 3), missed,
    ]


def percentile(values: list[float], q: float) -> float:
    """Return the linearly interpolated q-th percentile (numpy's default method), inf when it touches an inf value.

    numpy itself returns NaN there, because its interpolation multiplies inf by zero.
    """
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low, high = math.floor(position), math.ceil(position)
    if math.isinf(ordered[high]):
        return math.inf
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _trials_cell(value: float, grid_size: int) -> object:
    return f"> {CAP_GRID_SIZES * grid_size}" if math.isinf(value) else round(value, 1)


# Tables -----------------------------------------------------------------------------------------


def replay_table(args: argparse.Namespace, space: SearchSpace, tables: dict[str, Table]) -> str:
    """Replay every sampler on every objective, for the requested tolerance and for the grid's best itself."""
    targets = [(f"within {args.tolerance * 100:g} pt", args.tolerance)]
    if args.tolerance > 0:
        # The best grid point itself (ties included) shows whether TPE's model helps once the
        # target is rarer than its random start-up trials can find.
        targets.append(("best itself", 0.0))
    rows = []
    for objective, table in tables.items():
        for label, tolerance in targets:
            for name in SAMPLERS:
                counts = replay_counts(space, table, name, args.seeds, tolerance)
                rows.append([objective, label, name, args.seeds, *count_cells(counts, len(table))])
    header = ["objective", "target", "sampler", "replay seeds", "median trials", "p90 trials", "mean trials",
              "median / grid size", "p90 / grid size", f"missed (within {CAP_GRID_SIZES}x grid size)"]
    return markdown_table(header, rows)


def describe(space: SearchSpace, key: Key) -> str:
    return ", ".join(f"{param.path}={value}" for param, value in zip(space.searched, key))


def grid_row(space: SearchSpace, objective: str, table: Table, tolerance: float) -> list[object]:
    """Summarize one objective's grid in a row: best config, spread of val_gain in points, points within tolerance."""
    finite = {key: value for key, value in table.items() if value is not None}
    best_key = max(finite, key=lambda key: finite[key])
    best = finite[best_key]
    points = [value * 100 for value in finite.values()]
    return [
        objective, describe(space, best_key), round(best * 100, 2), round(statistics.median(points), 2), round(min(points), 2),
        round(statistics.pstdev(points), 2), sum(value >= best - tolerance for value in finite.values()), len(table) - len(finite),
    ]


def grid_table(space: SearchSpace, tables: dict[str, Table], tolerance: float) -> str:
    header = ["objective", "best config", "best val_gain (pts)", "median val_gain (pts)", "worst val_gain (pts)",
              "std (pts)", "configs within tolerance", "configs failed"]
    return markdown_table(header, [grid_row(space, objective, table, tolerance) for objective, table in tables.items()])


def pivot_table(space: SearchSpace, tables: dict[str, Table]) -> str:
    """Render every grid point's val_gain in points, per objective, as a Markdown table.

    Each row is a combination of all but the last searched parameter, and each column an objective
    at one value of the last parameter.
    """
    *row_params, column_param = space.searched
    columns = [(objective, canonical(value)) for value in column_param.choices for objective in tables]
    header = [param.path for param in row_params] + [f"{objective} (pts) at {column_param.path}={value}" for objective, value in columns]
    rows = []
    for combo in itertools.product(*(param.choices for param in row_params)):
        prefix = [canonical(value) for value in combo]
        cells = [tables[objective][(*prefix, value)] for objective, value in columns]
        rows.append(prefix + [round(cell * 100, 2) if cell is not None else "failed" for cell in cells])
    return markdown_table(header, rows)


def notes_text(args: argparse.Namespace, tables: dict[str, Table], launched: bool, seconds: float) -> str:
    """Write the notes under the tables: the grid, the objectives, the replay, the random reference and the flat-grid check."""
    grid_size = len(tables[FINAL])
    if launched:
        source = (f"The grid ran once through `mtsweep launch` ({'a 2 x 2 x 1 quick grid' if args.quick else 'search_space=efficiency_grid'}, "
                  f"`grid` searcher, 1 CPU and 1 torch thread per trial, seed 0) in {seconds:.0f} s, Ray start-up and the "
                  "uniform baseline included.")
    else:
        source = f"The grid is the finished experiment {args.experiment}, whose trials spanned {seconds:.0f} s."
    objectives = (
        f"Objectives: `{FINAL}` is the val_gain of the last epoch, which the sweep's Optuna study records "
        f"(`sweep.metric=val_gain`); `{BEST}` is the val_gain of the best validation epoch, which ranks grid points as "
        "`sweep.metric=best_val_acc` does because every point shares one uniform baseline."
    )
    replay = (
        f"Replay: {args.seeds} seeds per sampler of the sampler the sweep builds (`sweep.searcher=tpe` or `random`) over "
        "the same categorical space. The replay uses the grid's recorded values, so it adds no fresh training noise, and a "
        "grid point that is suggested again counts as another trial. TPE (Optuna 5.1 defaults) draws its first 10 trials "
        "at random, so it cannot beat random search on a target that random search finds within about 10 trials."
    )
    reference = []
    for objective, table in tables.items():
        best = max(value for value in table.values() if value is not None)
        within = sum(value is not None and value >= best - args.tolerance for value in table.values())
        reference.append(f"{objective}: {within} of {grid_size} grid points are within {args.tolerance * 100:g} pt of the best, "
                         f"so random sampling with replacement needs {grid_size / within:.1f} trials on average")
        if within == grid_size:
            reference.append(f"{objective}: every grid point is within the tolerance, so the grid is flat and its trial counts mean nothing")
    goal = f"Goal: TPE median <= grid size / 3 = {grid_size / 3:.1f} trials on `{FINAL}` within {args.tolerance * 100:g} pt."
    return " ".join([source, objectives, replay, "; ".join(reference) + ".", goal])


# Entry point ------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a 2 x 2 x 1 grid of 3-epoch trials and 10 replay seeds")
    parser.add_argument("--no-write", action="store_true", help="print the tables without appending them")
    parser.add_argument("--seeds", type=int, default=None, help="replay seeds per sampler (default 50, 10 with --quick)")
    parser.add_argument("--tolerance", type=float, default=0.01, help="distance to the best val_gain that counts as found (0.01 = 1 point)")
    parser.add_argument("--concurrent", type=int, default=2, help="grid trials at once, 1 CPU each")
    parser.add_argument("--root", type=Path, default=None, help="folder for the grid's experiment (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder of the grid's experiment after the run")
    parser.add_argument("--experiment", type=Path, default=None, help="replay this finished grid experiment instead of running one")
    args = parser.parse_args()
    if args.seeds is None:
        args.seeds = 10 if args.quick else 50
    if args.seeds < 1 or args.tolerance < 0 or args.concurrent < 1:
        parser.error(f"--seeds ({args.seeds}) and --concurrent ({args.concurrent}) must be at least 1, --tolerance ({args.tolerance}) at least 0")
    return args


def obtain_grid(args: argparse.Namespace, root: Path) -> tuple[Path, Optional[float]]:
    """Return the grid's experiment folder and the launch's wall seconds, running the grid unless --experiment names one."""
    if args.experiment is not None:
        return args.experiment, None
    space_path = root / ("efficiency_grid_quick.yaml" if args.quick else "efficiency_grid.yaml")
    logger.warning("Grid of %d points", write_space(space_path, args.quick))
    return run_grid(space_path, root, f"{time.strftime('%Y%m%d-%H%M%S')}-efficiency", args.concurrent)


def build_report(args: argparse.Namespace, experiment: Path, launch_seconds: Optional[float]) -> tuple[str, str]:
    """Read the grid back, replay the samplers and return the Markdown tables and their notes."""
    space = load_space(experiment)
    tables, span = read_grid(experiment, space)
    markdown = "\n\n".join([replay_table(args, space, tables), grid_table(space, tables, args.tolerance), pivot_table(space, tables)])
    seconds = launch_seconds if launch_seconds is not None else span
    return markdown, notes_text(args, tables, launch_seconds is not None, seconds)


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    temporary = args.root is None and args.experiment is None
    root = Path(tempfile.mkdtemp(prefix="mtsweep-search-efficiency-")) if temporary else (args.root or Path.cwd()).resolve()
    root.mkdir(parents=True, exist_ok=True)
    try:
        experiment, launch_seconds = obtain_grid(args, root)
        markdown, notes = build_report(args, experiment, launch_seconds)
    except (MtsError, RuntimeError) as err:
        # A failed launch or an experiment folder that cannot be read; the message names the fix.
        sys.exit(f"search_efficiency.py: error: {err}")
    finally:
        if temporary and not args.keep:
            shutil.rmtree(root, ignore_errors=True)
        elif temporary:
            logger.warning("Kept the grid's experiment in %s", root)

    print(markdown, notes, sep="\n\n")
    if not args.no_write:
        title = f"Search efficiency: TPE trials to within {args.tolerance * 100:g} point(s) of the grid's best (mnist1d_shift)"
        append_result(title, markdown, notes=notes)


if __name__ == "__main__":
    main()
