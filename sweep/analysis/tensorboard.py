"""TensorBoard logs of a sweep, written with TensorBoard's own event writer and protobufs (no TensorFlow).

Layout under `<experiment>/tensorboard/`:

| run | contents |
| --- | --- |
| `.` (the root) | the HParams experiment config: every searched parameter and the metric tags |
| `trial_<id>` | one trial: its HParams session (searched parameters) and one scalar per metric and epoch |
| `scaling` | `scaling/gsnr`, `scaling/val_gain`, `scaling/test_gain` (means over seeds), their 95% bounds, and the fitted `scaling/gsnr_fit`, each with the batch size (or another integer key) as the step |

The HParams dashboard shows the most recently written value of each metric tag of a trial (the
`read_last_scalars` of TensorBoard 2.21's data provider), that is its final metrics.
A list-valued parameter such as a feature subset is shown as text (`loss,class`), because HParams
values can only be numbers, booleans or strings.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.plugins.hparams import summary_v2
from tensorboard.summary.writer.event_file_writer import EventFileWriter

logger = logging.getLogger(__name__)

SCALING_RUN = "scaling"
# Metric tags the HParams dashboard shows per trial (the last value of each).
HPARAM_METRICS = ("val_gain", "val_acc", "test_gain", "test_acc", "gsnr", "noise_scale", "b_eff")


def trial_run(trial_id: str) -> str:
    """Return the run (subfolder) name of a trial, the same as its Ray Tune folder name."""
    return f"trial_{trial_id}"


def hparam_value(value: Any) -> bool | float | int | str:
    """Return a value HParams can store: numbers stay numbers, lists become `a,b` text."""
    if hasattr(value, "item") and not isinstance(value, (list, tuple, str)):
        value = value.item() if getattr(value, "ndim", 0) == 0 else value.tolist()  # numpy
    if isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return ",".join(str(hparam_value(item)) for item in value)
    if value is None:
        return "none"
    return json.dumps(value, sort_keys=True, default=str)


def scalar_event(tag: str, value: float, step: int, wall_time: float | None = None) -> event_pb2.Event:
    summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, simple_value=float(value))])
    return event_pb2.Event(wall_time=wall_time or time.time(), step=int(step), summary=summary)


def _summary_event(summary: summary_pb2.Summary) -> event_pb2.Event:
    return event_pb2.Event(wall_time=time.time(), step=0, summary=summary)


def has_event_file(folder: Path) -> bool:
    return folder.is_dir() and any(folder.glob("events.out.tfevents.*"))


def write_experiment_config(root: Path, searched_params: Iterable[str], metrics: Iterable[str] = HPARAM_METRICS) -> None:
    """Write the HParams experiment config at the log root, unless one is there already."""
    if has_event_file(root):
        return
    hparams = [summary_v2.HParam(name) for name in searched_params]
    metric_infos = [summary_v2.Metric(tag, display_name=tag) for tag in metrics]
    writer = EventFileWriter(str(root))
    try:
        writer.add_event(_summary_event(summary_v2.hparams_config_pb(hparams, metric_infos, time_created_secs=time.time())))
    finally:
        writer.close()


class TrialLogs:
    """Event writers of the trials that are running, one run folder per trial."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._writers: dict[str, EventFileWriter] = {}

    def start(self, trial_id: str, params: Mapping[str, Any], started_at: float | None = None) -> None:
        """Open the trial's writer; a trial's first start also records its HParams session."""
        folder = self.root / trial_run(trial_id)
        first = not has_event_file(folder)
        writer = self._writer(trial_id)
        if first:
            values = {name: hparam_value(value) for name, value in params.items()}
            summary = summary_v2.hparams_pb(values, trial_id=trial_run(trial_id), start_time_secs=started_at or time.time())
            writer.add_event(_summary_event(summary))
            writer.flush()

    def write(self, trial_id: str, epoch: int, metrics: Mapping[str, Any]) -> None:
        """Write one scalar per finite numeric metric of an epoch, with the epoch as the step."""
        writer = self._writer(trial_id)
        now = time.time()
        for tag, value in metrics.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                continue
            writer.add_event(scalar_event(tag, value, epoch, now))
        writer.flush()

    def close(self, trial_id: str) -> None:
        writer = self._writers.pop(trial_id, None)
        if writer is not None:
            writer.close()

    def close_all(self) -> None:
        for trial_id in list(self._writers):
            self.close(trial_id)

    def _writer(self, trial_id: str) -> EventFileWriter:
        if trial_id not in self._writers:
            # flush_secs is long because every write above flushes; the writer thread need not poll.
            self._writers[trial_id] = EventFileWriter(str(self.root / trial_run(trial_id)), flush_secs=600)
        return self._writers[trial_id]


def write_scaling_run(root: Path, curves: Mapping[str, Mapping[int | float, float]]) -> Path:
    """Replace the `scaling` run with the given curves: tag -> {batch size: value}.

    The run is rebuilt from scratch each time, because appending a second analysis would give every
    step two values. The new events are written into a temporary folder that then replaces the old one.
    """
    folder = Path(root) / SCALING_RUN
    temporary = Path(root) / f".{SCALING_RUN}.tmp"
    shutil.rmtree(temporary, ignore_errors=True)
    writer = EventFileWriter(str(temporary))
    try:
        for tag, points in curves.items():
            for step, value in sorted(points.items()):
                if value is not None and math.isfinite(value):
                    writer.add_event(scalar_event(tag, value, int(step)))
    finally:
        writer.close()
    shutil.rmtree(folder, ignore_errors=True)
    temporary.rename(folder)
    return folder


def tensorboard_command(logdir: Path, port: int | None = None) -> list[str]:
    """Return the command that serves `logdir` on 127.0.0.1 only."""
    command = ["tensorboard", "--logdir", str(logdir), "--host", "127.0.0.1"]
    if port is not None:
        command += ["--port", str(port)]
    return command

