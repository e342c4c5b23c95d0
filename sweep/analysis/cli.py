"""The analysis subcommands of `mtsweep`: `best`, `analyze` and `tensorboard`.

    mtsweep best EXPERIMENT [--metric val_gain] [--top K] [--where key=value ...] [--per KEY] [--json]
    mtsweep analyze EXPERIMENT [--x pool.batch_size] [--where key=value ...]
    mtsweep tensorboard EXPERIMENT [--port 6006] [--launch]

EXPERIMENT is the folder `mtsweep launch` printed. `add_subcommands(subparsers)` adds the three
parsers; each sets `handler`, a function of the parsed arguments that returns the exit code.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import shutil
import sys
from pathlib import Path

from sweep.analysis.folder import open_folder

logger = logging.getLogger(__name__)


def add_subcommands(subparsers: argparse._SubParsersAction) -> None:
    """Add `best`, `analyze` and `tensorboard` to the `mtsweep` subcommand parsers."""
    best = subparsers.add_parser("best", help="print the best configurations of an experiment")
    best.add_argument("experiment", help="the experiment folder that `mtsweep launch` printed")
    best.add_argument("--metric", default="val_gain", help="validation metric to rank by (default: val_gain); test metrics are rejected")
    best.add_argument("--top", type=int, default=None, help="rows to print: overall (default 5) or per group with --per (default 1)")
    best.add_argument("--where", action="append", default=[], metavar="KEY=VALUE", help="keep trials whose param equals VALUE, e.g. mts.features=loss,class; repeatable")
    best.add_argument("--per", default=None, metavar="KEY", help="rank within each value of KEY, e.g. pool.batch_size")
    best.add_argument("--json", action="store_true", help="print JSON instead of a table")
    best.set_defaults(handler=best_command)

    analyze = subparsers.add_parser("analyze", help="scaling curves, power-law fit, importances, plots and a report")
    analyze.add_argument("experiment", help="the experiment folder that `mtsweep launch` printed")
    analyze.add_argument("--x", default="pool.batch_size", metavar="KEY", help="the parameter on the x axis (default: pool.batch_size)")
    analyze.add_argument("--where", action="append", default=[], metavar="KEY=VALUE", help="keep trials whose param equals VALUE; repeatable")
    analyze.set_defaults(handler=analyze_command)

    board = subparsers.add_parser("tensorboard", help="print (or run) the TensorBoard command for an experiment, on 127.0.0.1")
    board.add_argument("experiment", help="the experiment folder that `mtsweep launch` printed")
    board.add_argument("--port", type=int, default=None, help="port to serve on (default: TensorBoard's, 6006)")
    board.add_argument("--launch", action="store_true", help="run TensorBoard instead of printing the command")
    board.set_defaults(handler=tensorboard_command)


def best_command(args: argparse.Namespace) -> int:
    from sweep.analysis.queries import best_configurations, format_best
    from sweep.analysis.store import AnalysisStore

    folder = open_folder(args.experiment)
    store = AnalysisStore(folder.database_url, create=False)
    try:
        result = best_configurations(store, folder.name, metric=args.metric, top=args.top, where=args.where, per=args.per)
    finally:
        store.close()
    print(json.dumps(result.to_dict(), indent=2) if args.json else format_best(result))
    return 0


def analyze_command(args: argparse.Namespace) -> int:
    from sweep.analysis.report import analyze_experiment

    result, report = analyze_experiment(open_folder(args.experiment), x_key=args.x, where=args.where)
    fit = result.gsnr_fit
    where = f" (filtered by --where {' '.join(result.where)}: {result.trials_filtered_out} trials left out)" if result.where else ""
    print(f"{result.trials_used} finished trials analysed against {result.x_key}{where}")
    if fit is not None:
        print(f"GSNR ~ {fit.coefficient:.4g} * x^{fit.exponent:.3f} (R^2 {fit.r_squared:.3f}, {fit.points} trials with GSNR > 0)")
    line = f"best {result.x_key} by mean val_gain: {_number(result.best_x)}"
    if result.x_key == "pool.batch_size":
        line += f"; tested value nearest to the noise scale: {_number(result.predicted_x)}"
    print(line)
    for note in result.notes:
        print(f"note: {note}")
    print(f"report: {report}")
    return 0


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def _tensorboard_executable() -> str:
    """Return how to call this environment's `tensorboard` script from a shell.

    The bare name when it is on PATH, else the script's full path next to the running Python (a
    virtual environment that is not activated), else `python -m tensorboard.main`.
    """
    script = Path(sys.executable).parent / "tensorboard"
    on_path = shutil.which("tensorboard")
    if on_path is not None and (not script.exists() or Path(on_path).resolve() == script.resolve()):
        return "tensorboard"
    if script.exists():
        return str(script)
    return f"{shlex.quote(sys.executable)} -m tensorboard.main"


def tensorboard_command(args: argparse.Namespace) -> int:
    from sweep.analysis.tensorboard import tensorboard_command as command_for

    folder = open_folder(args.experiment)
    command = command_for(folder.tensorboard_path, args.port)
    if not args.launch:
        print(shlex.join([_tensorboard_executable(), *command[1:]]))
        return 0
    logger.info("Starting %s", shlex.join(command))
    # Replace this process rather than wait on a child, so that a signal sent to `mtsweep
    # tensorboard --launch` (Ctrl-C, SIGTERM from a job runner) reaches TensorBoard itself.
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", "tensorboard.main", *command[1:]])
    return 0  # not reached: execv does not return


def main(argv: list[str] | None = None) -> int:
    """Run one analysis subcommand on its own: `python -m sweep.analysis.cli best EXPERIMENT`."""
    from mts.errors import MtsError

    parser = argparse.ArgumentParser(prog="mtsweep", description="Analysis of mtsweep experiments.")
    add_subcommands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return int(args.handler(args))
    except MtsError as err:
        for line in str(err).splitlines():
            print(f"mtsweep {args.command}: error: {line}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
