"""Overhead of a sweep run by `mtsweep launch` (Ray Tune + Optuna) against a plain Optuna study.

    python benchmarks/sweep_overhead.py            # 16 trials of about 10 s on 2 CPUs, each side twice
    python benchmarks/sweep_overhead.py --quick    # 4 trials of about 3 s, each side once (about a minute)
    python benchmarks/sweep_overhead.py --no-write # print the table only

Both sides run the same trials: MTS on the bundled `mnist1d_shift` task with the default pool and
pool batch 512, one torch thread per trial, two trials at once, `mts.lr` drawn by a seeded TPE
sampler. Each side runs in its own processes, started and timed by this script:

- mtsweep: the real product path, `mtsweep launch` with its own experiment folder under a temporary
  folder. Embedded Ray on 2 CPUs, Ray Tune, the Optuna searcher with its study in SQLite, a report
  and the checkpoints of every trial, the analysis store and TensorBoard.
- plain Optuna: two processes (in one session, as Ray's trial workers are), each running `study.optimize(objective, n_jobs=1)` on half of the
  trials of one study kept in a journal file. The objective builds the same run config and iterates
  the same `mts.Trainer`, reporting each epoch's accuracy with `trial.report`, without checkpoints.
  `n_jobs=2` (two threads of one process) cannot run these trials: torch's forward-mode AD, which
  the GSNR measurement uses, numbers its levels per process, and two trials measuring at once fail.

`mtsweep launch` trains the uniform baseline of the sweep before its trials. The benchmark trains
that baseline once beforehand and stores it in the database the sweep is given (`storage.url`),
where `mtsweep launch` finds it as a second sweep on the same database would, so neither side's
wall time contains it.

Measured on each side (the mean over its runs):

- whole wall: from starting the processes to their exit (Python start, imports, and for mtsweep
  Ray's start and shutdown);
- trials wall: from the first trial's start to the last trial's end, as the trials record them;
- trial time: from the first line of the trial function to its last epoch;
- ideal wall: sum of trial times / 2;
- CPU utilization: ideal wall / wall, that is the share of 2 CPUs x wall spent inside trials;
- gap: mean seconds between a trial's end and the start of the trial that takes its CPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.results import append_result, markdown_table  # noqa: E402
from mts.config import GSNRConfig  # noqa: E402

logger = logging.getLogger(__name__)

CPUS = 2
SEARCH_SPACE = {
    "params": {
        # The searched parameter leaves the baseline alone, so one uniform baseline serves all trials.
        "mts.lr": {"float": [1.0e-4, 1.0e-2], "log": True},
        "seed": 0,
    },
}
TIMEOUT_S = 900  # one side of a full run takes about 100 s on 2 idle CPUs
MTSWEEP = "mtsweep launch"
OPTUNA = "plain optuna, 2 processes"
HEADER = ["measure", MTSWEEP, OPTUNA, "goal"]


@dataclasses.dataclass
class Plan:
    """How many trials, how long each, and where the temporary files go."""

    trials: int
    epochs: int
    folder: Path

    @property
    def space_path(self) -> Path:
        return self.folder / "space.yaml"

    @property
    def database_url(self) -> str:
        return f"sqlite:///{self.folder / 'sweep.db'}"

    def launch_overrides(self) -> list[str]:
        """Return the `mtsweep launch` overrides that define the trials, shared by both sides."""
        return [
            f"search_space={self.space_path}",
            f"train.epochs={self.epochs}",
            f"sweep.num_samples={self.trials}",
            "sweep.cpus_per_trial=1",
            f"cluster.num_cpus={CPUS}",
            "sweep.searcher=tpe",
            "sweep.seed=0",
        ]


@dataclasses.dataclass
class Run:
    """One run of one side: its whole wall time and each trial's (start, end) wall clock."""

    wall_s: float
    intervals: list[tuple[float, float]]
    outside_epochs: list[float]  # per trial: seconds between its first and last epoch spent outside training

    @property
    def trial_seconds(self) -> list[float]:
        return [end - start for start, end in self.intervals]

    @property
    def trials_wall_s(self) -> float:
        return max(end for _, end in self.intervals) - min(start for start, _ in self.intervals)

    @property
    def ideal_wall_s(self) -> float:
        return sum(self.trial_seconds) / CPUS

    @property
    def mean_trial_s(self) -> float:
        return statistics.fmean(self.trial_seconds)

    @property
    def mean_outside_epochs_s(self) -> float:
        return statistics.fmean(self.outside_epochs)

    @property
    def mean_gap_s(self) -> float:
        """Mean seconds from a trial's end to the start of the trial that takes its CPU."""
        starts = sorted(start for start, _ in self.intervals)[CPUS:]
        ends = sorted(end for _, end in self.intervals)
        gaps = [start - end for start, end in zip(starts, ends)]
        return statistics.fmean(gaps) if gaps else math.nan


# Preparation: the search space, the task cache and the stored baseline -------------------------


def prepare(plan: Plan) -> None:
    """Write the search space, build the task cache and store the sweep's uniform baseline."""
    import yaml

    plan.space_path.write_text(yaml.safe_dump(SEARCH_SPACE))
    started = time.perf_counter()
    store_baseline(plan)
    logger.info("Baseline trained and stored in %.1f s (outside both sides)", time.perf_counter() - started)


def store_baseline(plan: Plan) -> None:
    """Train the uniform baseline of the sweep and store it where `mtsweep launch` looks it up."""
    import sqlalchemy as sa

    from sweep.baselines import baseline_key, create_tables, save_baseline, train_baseline
    from sweep.launch_config import baseline_config, load_launch_config

    config, space = load_launch_config(plan.launch_overrides() + [f"storage.url={plan.database_url}"])
    engine = sa.create_engine(plan.database_url)
    create_tables(engine)
    for combination in space.baseline_combinations():
        baseline = baseline_config(config, combination, int(config.baseline_batch_size or config.pool.batch_size))
        baseline.train.threads = 1
        save_baseline(engine, baseline_key(baseline), baseline, train_baseline(dataclasses.asdict(baseline)))
    engine.dispose()


# The two sides ---------------------------------------------------------------------------------


def run_mtsweep(plan: Plan, label: str) -> Run:
    """Run `mtsweep launch` in a subprocess and read each trial's times from its Tune results."""
    root = plan.folder / "experiments"
    name = f"overhead-{label}"
    command = [*_mtsweep_command(), "launch", *plan.launch_overrides(), f"sweep.root={root}", f"sweep.name={name}",
               f"storage.url={plan.database_url}", "log_level=WARNING", "sweep.progress_interval_s=3600"]
    started = time.perf_counter()
    _wait_all([_start(command, plan.folder / f"mtsweep-{label}.log")])
    wall = time.perf_counter() - started
    intervals, outside = [], []
    for result_file in sorted((root / name / "tune").glob("trial_*/result.json")):
        rows = [json.loads(line) for line in result_file.read_text().splitlines() if line.strip()]
        if rows:
            intervals.append((rows[0]["trial_started_at"], rows[-1]["reported_at"]))
            outside.append(outside_epochs(rows[0]["reported_at"], rows[-1]["reported_at"], rows[0]["wall_time"], rows[-1]["wall_time"]))
    return _checked(Run(wall, intervals, outside), plan, MTSWEEP)


def outside_epochs(first_at: float, last_at: float, first_training_s: float, last_training_s: float) -> float:
    """Return the seconds from the first to the last epoch's end that the trainer spent outside its epochs.

    `EpochReport.wall_time` adds up the time inside the trainer's epochs only, so what remains of the
    clock time is reporting, checkpointing and waiting for the process that takes the reports.
    """
    return (last_at - first_at) - (last_training_s - first_training_s)


def _mtsweep_command() -> list[str]:
    script = Path(sys.executable).with_name("mtsweep")
    return [str(script)] if script.exists() else [sys.executable, "-m", "sweep.cli"]


def run_optuna(plan: Plan, label: str) -> Run:
    """Run the plain Optuna study: one session process (this script with --optuna-side) and its two workers."""
    command = [sys.executable, str(Path(__file__).resolve()), "--optuna-side", str(plan.folder), "--label", label,
               "--trials", str(plan.trials), "--epochs", str(plan.epochs)]
    started = time.perf_counter()
    _wait_all([_start(command, plan.folder / f"optuna-{label}.log")])
    wall = time.perf_counter() - started
    records = [record for index in range(CPUS) for record in json.loads(_times_path(plan.folder, label, index).read_text())]
    intervals = [(record["started_at"], record["ended_at"]) for record in records]
    return _checked(Run(wall, intervals, [record["outside_epochs"] for record in records]), plan, OPTUNA)


def optuna_side(folder: Path, label: str, trials: int, epochs: int) -> None:
    """Start the two Optuna worker processes (this script with --optuna-worker) at once and wait for both."""
    workers = []
    for index in range(CPUS):
        share = trials // CPUS + (index < trials % CPUS)
        command = [sys.executable, str(Path(__file__).resolve()), "--optuna-worker", str(folder), "--label", label,
                   "--trials", str(share), "--epochs", str(epochs), "--index", str(index)]
        workers.append(_start(command, folder / f"optuna-{label}-{index}.log", new_session=False))
    _wait_all(workers)


def _times_path(folder: Path, label: str, index: int) -> Path:
    return folder / f"optuna-{label}-times-{index}.json"


def _start(command: list[str], log_path: Path, new_session: bool = True) -> tuple[subprocess.Popen, Path]:
    """Start `command` with its output in `log_path`, by default as the leader of a new session.

    Linux with autogroup scheduling shares a busy CPU between sessions, not processes. Ray starts
    its raylet and trial workers in a session of their own. The plain Optuna workers get one too,
    so that other work on the machine takes the same share from both sides.
    """
    with log_path.open("w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy(), start_new_session=new_session)
    return process, log_path


def _wait_all(processes: list[tuple[subprocess.Popen, Path]]) -> None:
    """Wait for every process; raise with the end of its log if one failed or timed out (and end it)."""
    for process, log_path in processes:
        try:
            code = process.wait(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            _end(process)
            raise RuntimeError(f"{' '.join(process.args[:3])} ... timed out after {TIMEOUT_S} s and was ended; is the machine busy? "
                               f"See {log_path} (run with --keep)") from None
        if code != 0:
            tail = "\n".join(log_path.read_text().splitlines()[-20:])
            raise RuntimeError(f"{' '.join(process.args[:3])} ... exited with {code}; the end of {log_path}:\n{tail}")


def _end(process: subprocess.Popen) -> None:
    """End a process that timed out, with its process group when it leads one (the Optuna side's workers)."""
    if os.getpgid(process.pid) == process.pid:
        os.killpg(process.pid, signal.SIGKILL)
    else:
        process.kill()
    process.wait()


def _checked(run: Run, plan: Plan, side: str) -> Run:
    if len(run.intervals) != plan.trials:
        raise RuntimeError(f"{side} recorded {len(run.intervals)} trials instead of {plan.trials}; see the logs in {plan.folder} (run with --keep)")
    return run


def optuna_worker(folder: Path, label: str, trials: int, epochs: int, index: int) -> None:
    """Run `trials` trials of the plain Optuna study: the sweep's trial config and trainer, no Ray."""
    import optuna
    import torch
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    from mts import Reference, Trainer
    from sweep.launch_config import load_launch_config, run_config_dict
    from sweep.search_space import SpaceSampler
    from sweep.trainable import TrialContext, trial_config

    torch.set_num_threads(1)
    config, space = load_launch_config(Plan(trials=trials, epochs=epochs, folder=folder).launch_overrides())
    context = TrialContext(base=run_config_dict(config), baseline_batch_size=int(config.baseline_batch_size), references={}, threads=1)
    sample = SpaceSampler(space)
    records: list[dict[str, float]] = []

    def objective(trial: optuna.Trial) -> float:
        started = time.time()
        trainer = Trainer(trial_config(context, sample(trial)), reference=Reference(val_acc=0.0, test_acc=0.0))
        epochs = []  # (clock time at the epoch's end, trainer's training seconds so far)
        for report in trainer:
            epochs.append((time.time(), report.wall_time))
            trial.report(report.val_acc, report.epoch)
        (first_at, first_s), (last_at, last_s) = epochs[0], epochs[-1]
        records.append({"started_at": started, "ended_at": last_at, "outside_epochs": outside_epochs(first_at, last_at, first_s, last_s)})
        return report.val_acc

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = JournalStorage(JournalFileBackend(str(folder / f"optuna-{label}.journal")))
    # Each process gets its own seed, so that the two do not draw the same first values.
    study = optuna.create_study(study_name="overhead", storage=storage, direction="maximize",
                                sampler=optuna.samplers.TPESampler(seed=index), load_if_exists=True)
    study.optimize(objective, n_trials=trials, n_jobs=1)
    _times_path(folder, label, index).write_text(json.dumps(records))


# The table -------------------------------------------------------------------------------------


def table_rows(mtsweep: list[Run], optuna: list[Run]) -> list[list[object]]:
    """Return one row per measure, the mean over runs of mtsweep and of Optuna side by side."""
    def row(name: str, measure: Callable[[Run], float], goal: str = "") -> list[object]:
        return [name, *(round(statistics.fmean(measure(run) for run in runs), 3) for runs in (mtsweep, optuna)), goal]

    def ratio(measure: Callable[[Run], float]) -> float:
        return statistics.fmean(measure(run) for run in mtsweep) / statistics.fmean(measure(run) for run in optuna)

    return [
        row("whole wall (s)", lambda run: run.wall_s),
        row("trials wall, first start to last end (s)", lambda run: run.trials_wall_s),
        row("outside the trials: start-up and shutdown (s)", lambda run: run.wall_s - run.trials_wall_s),
        row("mean trial time (s)", lambda run: run.mean_trial_s),
        row("ideal wall = sum of trial times / 2 (s)", lambda run: run.ideal_wall_s),
        row("trials wall / ideal", lambda run: run.trials_wall_s / run.ideal_wall_s),
        row("mean gap between trials on a CPU (s)", lambda run: run.mean_gap_s),
        row("per trial: time between epochs outside training (s)", lambda run: run.mean_outside_epochs_s),
        row("CPU utilization, whole wall", lambda run: run.ideal_wall_s / run.wall_s, ">= 0.90"),
        row("CPU utilization, trials wall", lambda run: run.ideal_wall_s / run.trials_wall_s, ">= 0.90"),
        ["wall ratio mtsweep / optuna, whole", round(ratio(lambda run: run.wall_s), 3), "", "<= 1.10"],
        ["wall ratio mtsweep / optuna, trials", round(ratio(lambda run: run.trials_wall_s), 3), "", "<= 1.10"],
        ["mean trial time ratio mtsweep / optuna", round(ratio(lambda run: run.mean_trial_s), 3), "", ""],
    ]


def notes(plan: Plan, mtsweep: list[Run], optuna: list[Run], loads: list[tuple[float, ...]]) -> str:
    """Return the text under the table: what ran, what the columns mean, and the machine load."""
    walls = ", ".join(f"{MTSWEEP} {m.wall_s:.1f} s / optuna {o.wall_s:.1f} s" for m, o in zip(mtsweep, optuna))
    load = ", ".join(f"{minute:.2f}" for minute, *_ in loads)
    return (
        f"{plan.trials} MTS trials of {plan.epochs} epochs on mnist1d_shift (default pool, pool batch 512, GSNR every {GSNRConfig().every_epochs} "
        f"epochs), 1 torch thread per trial, 2 at once, `mts.lr` drawn by TPE; each side ran {len(mtsweep)} time(s), in the "
        f"order optuna, mtsweep{', mtsweep, optuna' if len(mtsweep) > 1 else ''}, and the table shows means (whole walls per "
        f"run: {walls}). mtsweep: `mtsweep launch` on embedded Ray with 2 CPUs, a report every epoch, checkpoints, SQLite "
        "study, analysis store and TensorBoard. Plain Optuna: two processes with `optimize(n_jobs=1)` on one journal-file "
        "study, the same run config and `mts.Trainer`, `trial.report` every epoch, no checkpoints (`n_jobs=2` threads fail "
        "in torch's forward-mode AD, used by the GSNR measurement). The uniform baseline is trained beforehand and found "
        "in the database by `mtsweep launch`, so neither side contains it. Whole wall includes process start, imports "
        "and, for mtsweep, Ray's start and shutdown; trials wall runs from the first trial's start to the last trial's "
        "end. A trial's time runs from the first line of the trial function to its last epoch. CPU utilization = sum of "
        f"trial times / (2 x wall). 1-minute load average before each run: {load}."
    )


def measure(plan: Plan, repetitions: int) -> tuple[list[Run], list[Run], list[tuple[float, ...]]]:
    """Run the sides in the order optuna, mtsweep (, mtsweep, optuna, ...), so that drift hits both alike."""
    mtsweep: list[Run] = []
    optuna: list[Run] = []
    loads: list[tuple[float, ...]] = []
    for repetition in range(repetitions):
        order = [("optuna", run_optuna, optuna), ("mtsweep", run_mtsweep, mtsweep)]
        for name, runner, runs in order if repetition % 2 == 0 else reversed(order):
            loads.append(os.getloadavg())
            runs.append(runner(plan, f"{repetition + 1}"))
            logger.info("%s run %d: %.1f s whole wall, %.1f s trials wall", name, repetition + 1, runs[-1].wall_s, runs[-1].trials_wall_s)
    return mtsweep, optuna, loads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 trials of 10 epochs (about 3 s each), each side once")
    parser.add_argument("--no-write", action="store_true", help="print the table without appending it to RESULTS.md")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder with the logs and experiments")
    parser.add_argument("--optuna-side", metavar="FOLDER", help=argparse.SUPPRESS)
    parser.add_argument("--optuna-worker", metavar="FOLDER", help=argparse.SUPPRESS)
    parser.add_argument("--label", default="1", help=argparse.SUPPRESS)
    parser.add_argument("--trials", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--epochs", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--index", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.optuna_side:
        optuna_side(Path(args.optuna_side), args.label, args.trials, args.epochs)
        return
    if args.optuna_worker:
        optuna_worker(Path(args.optuna_worker), args.label, args.trials, args.epochs, args.index)
        return

    trials, epochs, repetitions = (4, 10, 1) if args.quick else (16, 55, 2)
    folder = Path(tempfile.mkdtemp(prefix="mtsweep-overhead-"))
    # The preparation builds the task into the cache (a private one unless MTSWEEP_CACHE names one),
    # and both sides read it from there.
    os.environ.setdefault("MTSWEEP_CACHE", str(folder / "cache"))
    plan = Plan(trials=trials, epochs=epochs, folder=folder)
    try:
        prepare(plan)
        mtsweep, optuna, loads = measure(plan, repetitions)
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    table = markdown_table(HEADER, table_rows(mtsweep, optuna))
    print(table)
    if not args.no_write:
        append_result(f"Sweep overhead: mtsweep launch against plain Optuna ({trials} trials, 2 CPUs)", table,
                      notes=notes(plan, mtsweep, optuna, loads))
    if args.keep:
        print(f"logs and experiments kept in {folder}")


if __name__ == "__main__":
    main()
