"""The `mtsweep` command line: one entry point, one subcommand per job.

    mtsweep run task=mnist1d_shift method=mts       # one training run, no Ray
    mtsweep run method=mts baseline=true             # also train `uniform` and report the gain
    mtsweep launch search_space=smoke                # a sweep of MTS trials on Ray
    mtsweep resume experiments/20260101-120000-smoke # continue an interrupted sweep
    mtsweep status experiments/20260101-120000-smoke # trials by status

Every subcommand takes Hydra overrides (`key=value`). Invalid input is reported in one line per
problem, naming the key, the value and what is allowed, with exit code 2 and no traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import TYPE_CHECKING, Callable

from mts.errors import MtsError

if TYPE_CHECKING:
    from sweep.launcher import SweepSummary

logger = logging.getLogger(__name__)

EXIT_USAGE = 2


def _run(args: argparse.Namespace) -> int:
    from sweep.run import run_command

    return run_command(args.overrides, sys.stdout)


def _launch(args: argparse.Namespace) -> int:
    from sweep.launch_config import load_launch_config
    from sweep.launcher import check_cluster_reachable, create_experiment, run_sweep

    config, space = load_launch_config(args.overrides)
    check_cluster_reachable(config)
    experiment = create_experiment(config, space)
    print(f"experiment folder: {experiment.path}", flush=True)
    return _report(run_sweep(experiment))


def _resume(args: argparse.Namespace) -> int:
    from sweep.launcher import check_cluster_reachable, open_experiment, print_summary, run_sweep, sweep_summary

    experiment = open_experiment(args.experiment)
    summary = sweep_summary(experiment)
    if not summary.unfinished:
        # Every trial has ended, so there is nothing for Ray to run.
        print_summary(summary)
        print(f"nothing to resume: all {summary.num_samples} trials of {experiment.path} have ended")
        return 0
    check_cluster_reachable(experiment.config)
    print(f"experiment folder: {experiment.path}", flush=True)
    return _report(run_sweep(experiment, resume=True))


def _report(summary: SweepSummary) -> int:
    """Print the trial counts; return 1 when the sweep stopped early (with a resume hint) or a trial errored."""
    from sweep.launcher import print_summary

    print_summary(summary)
    if summary.unfinished:
        print(f"the sweep stopped before all trials ended; continue it with: mtsweep resume {summary.path}")
        return 1
    errored = summary.counts.get("errored", 0)
    if errored:
        # Like `tune.run` (raise_on_failed_trial=True by default), a sweep with failed trials fails.
        print(f"{errored} trial(s) errored; their reasons are listed above")
        return 1
    return 0


def _status(args: argparse.Namespace) -> int:
    from sweep.launcher import open_experiment, print_summary, sweep_summary

    print_summary(sweep_summary(open_experiment(args.experiment)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mtsweep", description="Sweeps for Meta-learning for Training-data Selection.")
    subcommands = parser.add_subparsers(dest="command", required=True)
    run = subcommands.add_parser("run", help="train one method on one task, without Ray")
    run.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. method=mts pool.batch_size=512")
    run.set_defaults(handler=_run)
    launch = subcommands.add_parser("launch", help="run a sweep of MTS trials on Ray (embedded by default)")
    launch.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. search_space=smoke sweep.num_samples=8")
    launch.set_defaults(handler=_launch)
    resume = subcommands.add_parser("resume", help="continue an interrupted sweep up to its num_samples trials")
    resume.add_argument("experiment", help="the experiment folder that `mtsweep launch` printed")
    resume.set_defaults(handler=_resume)
    status = subcommands.add_parser("status", help="count an experiment's trials by status")
    status.add_argument("experiment", help="the experiment folder that `mtsweep launch` printed")
    status.set_defaults(handler=_status)

    from sweep.analysis.cli import add_subcommands

    add_subcommands(subcommands)
    return parser


def configure_logging(overrides: list[str], default_level: str = "INFO") -> None:
    """Set the log level from a `log_level=` override, `default_level` otherwise; once per process."""
    level = default_level
    for override in overrides:
        if override.startswith("log_level="):
            level = override.split("=", 1)[1].upper()
    logging.basicConfig(
        level=getattr(logging, level, logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # `run` prints its own progress lines, so its log shows warnings only unless asked for more;
    # sweeps log each finished trial at INFO.
    configure_logging(getattr(args, "overrides", []), "WARNING" if args.command == "run" else "INFO")
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except MtsError as err:
        for line in str(err).splitlines():
            print(f"mtsweep {args.command}: error: {line}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"mtsweep {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
