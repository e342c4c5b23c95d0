"""`mtsweep run`: one training run without Ray, with its config and reports saved to a folder."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from pathlib import Path
from typing import Any, TextIO

from omegaconf import OmegaConf

from mts import DivergenceError, EpochReport, Reference, Trainer
from mts.tasks import build_task
from sweep.config import AppConfig, load_run_config

logger = logging.getLogger(__name__)


def default_output_dir(config: AppConfig) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{stamp}-{config.method}-{config.task.name}"


def run_command(overrides: list[str], out: TextIO) -> int:
    """Train the configured method (and `uniform` first with baseline=true); return the exit code."""
    config = load_run_config(overrides)
    task = build_task(config.task)
    reference_config = load_run_config([*overrides, "method=uniform"]) if config.baseline else None

    # Build every trainer before training any, so a problem that depends on the task (a batch larger
    # than the pool) is reported before minutes of baseline training.
    trainer = Trainer(config, task=task)
    baseline = Trainer(reference_config, task=task) if reference_config is not None else None

    output_dir = Path(config.output_dir) if config.output_dir else default_output_dir(config)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.structured(config)))
    print(f"output folder: {output_dir}", file=out)

    summary: dict[str, Any] = {"method": config.method, "task": config.task.name, "seed": config.seed}
    if baseline is not None:
        print("baseline: uniform", file=out)
        base = train(baseline, output_dir / "baseline_reports.jsonl", out)
        if base is None:
            return 1
        trainer.reference = Reference(val_acc=base.best_val_acc, test_acc=base.best_test_acc)
        summary["uniform"] = {"best_val_acc": base.best_val_acc, "test_acc": base.best_test_acc}
        print(f"method: {config.method}", file=out)

    last = train(trainer, output_dir / "reports.jsonl", out)
    if last is None:
        summary["status"] = "diverged"
        _write_json(output_dir / "summary.json", summary)
        return 1
    summary.update(status="finished", **_final_metrics(last))
    _write_json(output_dir / "summary.json", summary)
    print(_summary_line(config, last), file=out)
    return 0


def train(trainer: Trainer, reports_path: Path, out: TextIO) -> EpochReport | None:
    """Train to the end, printing a line and appending a JSON line per epoch; None if it diverged."""
    last = None
    epochs = trainer.config.train.epochs
    with reports_path.open("a") as reports:
        try:
            for report in trainer:
                reports.write(json.dumps(report.to_dict()) + "\n")
                reports.flush()
                print(_epoch_line(report, epochs), file=out, flush=True)
                last = report
        except DivergenceError as err:
            print(f"diverged: {err}", file=out)
            logger.error("run diverged at epoch %d, step %d: %s", err.epoch, err.step, err)
            return None
    return last


def _epoch_line(report: EpochReport, epochs: int) -> str:
    fields = [
        f"epoch {report.epoch:>3}/{epochs}",
        f"loss {report.train_loss:.4f}",
        f"val_acc {report.val_acc:.4f}",
        f"test_acc {report.test_acc:.4f}",
    ]
    if report.val_gain is not None:
        fields.append(f"val_gain {report.val_gain:+.4f}")
    if not math.isnan(report.gsnr):
        fields.append(f"gsnr {report.gsnr:.3g}")
    fields += [f"b_eff {report.b_eff:.1f}", f"w_mean {report.w_mean:.3f}"]
    if not math.isnan(report.weight_auc):
        fields.append(f"auc {report.weight_auc:.3f}")
    fields.append(f"{report.wall_time:.1f}s")
    return "  ".join(fields)


def _final_metrics(report: EpochReport) -> dict[str, Any]:
    keys = ("best_epoch", "best_val_acc", "best_test_acc", "val_gain", "test_gain", "gsnr", "b_eff", "weight_auc", "wall_time")
    values = dataclasses.asdict(report)
    return {key: values[key] for key in keys}


def _summary_line(config: AppConfig, report: EpochReport) -> str:
    line = (
        f"done: method={config.method} task={config.task.name} seed={config.seed} "
        f"test_acc={report.best_test_acc:.4f} (model of epoch {report.best_epoch}, val_acc={report.best_val_acc:.4f})"
    )
    if report.test_gain is not None:
        line += f" test_gain={report.test_gain * 100:+.2f} pts over uniform"
    return line


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(payload, indent=2) + "\n")
    temporary.replace(path)
