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

from mts import ConfigError, DivergenceError, EpochReport, Reference, Trainer
from mts.tasks import build_task
from sweep.config import AppConfig, load_run_config

logger = logging.getLogger(__name__)


def default_output_dir(config: AppConfig) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{stamp}-{config.method}-{config.task.name}"


def run_command(overrides: list[str], out: TextIO) -> int:
    """Train the configured method (and `uniform` first with baseline=true); return the exit code."""
    config = load_run_config(overrides)
    output_dir = Path(config.output_dir) if config.output_dir else default_output_dir(config)
    _check_output_dir(output_dir)
    task = build_task(config.task)
    # A uniform run is its own reference, so baseline=true with method=uniform trains it once.
    needs_baseline = config.baseline and config.method != "uniform"
    reference_config = load_run_config([*overrides, "method=uniform"]) if needs_baseline else None

    # Build every trainer before training any, so a problem that depends on the task (a batch larger
    # than the pool) is reported before minutes of baseline training.
    trainer = Trainer(config, task=task)
    baseline = Trainer(reference_config, task=task) if reference_config is not None else None

    output_dir.mkdir(parents=True, exist_ok=True)
    config.output_dir = str(output_dir)
    (output_dir / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.structured(config)))
    print(f"output folder: {output_dir}", file=out)

    summary: dict[str, Any] = {"method": config.method, "task": config.task.name, "seed": config.seed}
    try:
        return _train_and_summarize(config, trainer, baseline, output_dir, summary, out)
    except KeyboardInterrupt:
        # Record why the folder has no finished run, so that the next run into it is rejected with that reason.
        summary["status"] = "interrupted"
        for name, key in (("baseline_reports.jsonl", "baseline_epochs_done"), ("reports.jsonl", "epochs_done")):
            if (output_dir / name).exists():
                summary[key] = len((output_dir / name).read_text().splitlines())
        _write_json(output_dir / "summary.json", summary)
        print(f"interrupted: the reports so far are in {output_dir}", file=out, flush=True)
        raise


def _train_and_summarize(
    config: AppConfig, trainer: Trainer, baseline: Trainer | None, output_dir: Path, summary: dict[str, Any], out: TextIO
) -> int:
    """Train the baseline (if any) and the method, write summary.json and return the exit code."""
    reference = None
    if baseline is not None:
        print("baseline: uniform", file=out)
        base = train(baseline, output_dir / "baseline_reports.jsonl", out)
        if base is None:
            return 1
        reference = Reference(val_acc=base.best_val_acc, test_acc=base.best_test_acc)
        trainer.reference = reference
        summary["uniform"] = {"best_val_acc": base.best_val_acc, "test_acc": base.best_test_acc}
        print(f"method: {config.method}", file=out)

    last = train(trainer, output_dir / "reports.jsonl", out)
    if last is None:
        summary["status"] = "diverged"
        _write_json(output_dir / "summary.json", summary)
        return 1
    if config.baseline and reference is None:
        reference = Reference(val_acc=last.best_val_acc, test_acc=last.best_test_acc)
    summary.update(status="finished", **_final_metrics(last, reference))
    _write_json(output_dir / "summary.json", summary)
    print(_summary_line(config, summary), file=out)
    return 0


def _check_output_dir(output_dir: Path) -> None:
    """Reject an output folder that is a file or already contains a run, before anything is trained."""
    if output_dir.exists() and not output_dir.is_dir():
        raise ConfigError(f"output_dir={str(output_dir)!r} is a file, not a folder; choose a new folder")
    if _recorded_status(output_dir / "summary.json") == "interrupted":
        raise ConfigError(
            f"output_dir={str(output_dir)!r} contains an interrupted run (summary.json); "
            "choose a new folder, or delete it to train from the start"
        )
    if (output_dir / "reports.jsonl").exists() or (output_dir / "baseline_reports.jsonl").exists():
        raise ConfigError(
            f"output_dir={str(output_dir)!r} already contains a run (reports.jsonl); choose a new folder or delete it"
        )


def _recorded_status(summary_path: Path) -> str | None:
    """Return the `status` of a run's summary.json, or None when it is missing or unreadable."""
    try:
        return json.loads(summary_path.read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        return None


def train(trainer: Trainer, reports_path: Path, out: TextIO) -> EpochReport | None:
    """Train to the end, printing a line and appending a JSON line per epoch; None if it diverged."""
    last = None
    epochs = trainer.config.train.epochs
    with reports_path.open("a") as reports:
        try:
            for report in trainer:
                reports.write(json_line(report.to_dict()) + "\n")
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


def _final_metrics(report: EpochReport, reference: Reference | None) -> dict[str, Any]:
    """Return the metrics of the run's validation-selected model, gains included with a reference."""
    values = dataclasses.asdict(report)
    metrics = {key: values[key] for key in ("best_epoch", "best_val_acc", "best_test_acc", "weight_auc", "wall_time")}
    # GSNR and weight statistics describe the end of training, where they were last measured.
    metrics.update({f"last_{key}": values[key] for key in ("gsnr", "gsnr_epoch", "b_eff")})
    if reference is not None:
        metrics["val_gain"] = report.best_val_acc - reference.val_acc
        metrics["test_gain"] = report.best_test_acc - reference.test_acc
    return metrics


def _summary_line(config: AppConfig, summary: dict[str, Any]) -> str:
    line = (
        f"done: method={config.method} task={config.task.name} seed={config.seed} "
        f"test_acc={summary['best_test_acc']:.4f} (model of epoch {summary['best_epoch']}, "
        f"val_acc={summary['best_val_acc']:.4f})"
    )
    if "test_gain" in summary:
        line += f" test_gain={summary['test_gain'] * 100:+.2f} pts over uniform"
    return line


def json_line(payload: dict[str, Any]) -> str:
    """Serialize to strict JSON: NaN and infinities, which JSON lacks, become null."""
    return json.dumps(_finite(payload), allow_nan=False)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(_finite(payload), indent=2, allow_nan=False) + "\n")
    temporary.replace(path)
