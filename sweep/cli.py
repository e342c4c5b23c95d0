"""The `mtsweep` command line: one entry point, one subcommand per job.

    mtsweep run task=mnist1d_shift method=mts       # one training run, no Ray
    mtsweep run method=mts baseline=true             # also train `uniform` and report the gain

Every subcommand takes Hydra overrides (`key=value`). Invalid input is reported in one line per
problem, naming the key, the value and what is allowed, with exit code 2 and no traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable

from mts.errors import MtsError

logger = logging.getLogger(__name__)

EXIT_USAGE = 2


def _run(args: argparse.Namespace) -> int:
    from sweep.run import run_command

    return run_command(args.overrides, sys.stdout)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mtsweep", description="Sweeps for Meta-learning for Training-data Selection.")
    subcommands = parser.add_subparsers(dest="command", required=True)
    run = subcommands.add_parser("run", help="train one method on one task, without Ray")
    run.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. method=mts pool.batch_size=512")
    run.set_defaults(handler=_run)
    return parser


def configure_logging(overrides: list[str]) -> None:
    """Set the log level from a `log_level=` override, INFO otherwise; once per process."""
    level = "INFO"
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
    configure_logging(getattr(args, "overrides", []))
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
