"""`mtsweep run`: one-line errors for bad input, and a short real run that writes its outputs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from mts import Trainer
from sweep.cli import main

TINY = [
    "task.pool_size=300", "task.meta_size=30", "task.val_size=60", "task.test_size=60",
    "train.epochs=2", "train.threads=1", "pool.batch_size=64", "mts.meta_batch_size=16",
    "gsnr.draws=3", "gsnr.per_sample_batch=16",
]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["foo=1"], "unknown config key 'foo' (value '1')"),
        (["mts.lrr=0.1"], "did you mean mts.lr?"),
        (["method=fancy"], "method='fancy' is not a known method; allowed: l2rw, mts, mwnet, oracle, uniform"),
        (["task=imagenet"], "task='imagenet' is not a known task; allowed:"),
        (["pool.batch_size=50000"], "pool.batch_size=50000 is larger than the pool (task.pool_size=6000)"),
        (["train.lr=-0.01"], "train.lr=-0.01 must be > 0"),
        (["train.lr=fast"], "train.lr=fast: Value 'fast' of type 'str' could not be converted to Float"),
        (["mts.features=[loss,magic]"], "mts.features contains unknown group 'magic'"),
        (["trian.epochs=3"], "did you mean train.epochs?; keys at the top level: baseline,"),
        (["model=cnn", "model.kernel_size=0"], "model.kernel_size=0 must be an integer >= 1"),
        (["train.momentum=5"], "train.momentum=5.0 must be in [0, 1)"),
        (["task.path=/tmp/pool.npz"], "task.path='/tmp/pool.npz' is only read by task=file"),
        (["task.mixture={clean:0.5}"], "To append to your config use +task.mixture={clean:0.5}"),
    ],
)
def test_bad_input_gives_one_line(capsys, overrides, expected):
    code = main(["run", *overrides])
    captured = capsys.readouterr()
    assert code == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("mtsweep run: error: ")
    assert expected in lines[0]
    assert captured.out == ""


def test_key_type_and_value_problems_together(capsys):
    code = main(["run", "pool.batchsize=64", "train.lr=-1", "train.epochs=abc", "mts.lr=zero"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(lines) == 4, lines
    assert "unknown config key 'pool.batchsize'" in lines[0]
    assert any("train.epochs=abc" in line for line in lines)
    assert any("mts.lr=zero" in line for line in lines)
    assert any("train.lr=-1.0 must be > 0" in line for line in lines)


def test_every_problem_listed_at_once(capsys):
    code = main(["run", "train.lr=-1", "mts.lr=0", "train.epochs=0"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(lines) == 3
    assert any("train.epochs=0" in line for line in lines)


def test_cli_process_exits_2_without_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "sweep.cli", "run", "pool.batch_size=0"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "pool.batch_size=0 must be an integer >= 2" in result.stderr


def test_run_writes_config_and_reports(tmp_path, capsys):
    output = tmp_path / "run"
    code = main(["run", *TINY, "baseline=true", f"output_dir={output}"])
    out = capsys.readouterr().out
    assert code == 0, out
    config = yaml.safe_load((output / "config.yaml").read_text())
    assert config["method"] == "mts"
    assert config["pool"]["batch_size"] == 64
    reports = [json.loads(line) for line in (output / "reports.jsonl").read_text().splitlines()]
    assert [report["epoch"] for report in reports] == [1, 2]
    assert reports[0]["val_gain"] is not None
    baseline = [json.loads(line) for line in (output / "baseline_reports.jsonl").read_text().splitlines()]
    summary = json.loads((output / "summary.json").read_text())
    assert summary["status"] == "finished"
    assert summary["test_gain"] == pytest.approx(reports[-1]["best_test_acc"] - baseline[-1]["best_test_acc"])
    assert sum(line.startswith("epoch ") for line in out.splitlines()) == 4
    assert "test_gain=" in out.splitlines()[-1]


def test_output_dir_with_run_rejected(tmp_path, capsys):
    output = tmp_path / "run"
    output.mkdir()
    (output / "reports.jsonl").write_text("{}\n")
    code = main(["run", *TINY, f"output_dir={output}"])
    err = capsys.readouterr().err
    assert code == 2
    assert "already contains a run" in err
    assert (output / "reports.jsonl").read_text() == "{}\n"


def test_interrupted_run_recorded_and_rejected(tmp_path, capsys, monkeypatch):
    output = tmp_path / "run"
    original = Trainer.run_epoch

    def interrupt_second_epoch(trainer):
        if trainer.epoch == 1:
            raise KeyboardInterrupt
        return original(trainer)

    monkeypatch.setattr(Trainer, "run_epoch", interrupt_second_epoch)
    code = main(["run", *TINY, f"output_dir={output}"])
    captured = capsys.readouterr()
    assert code == 130
    assert f"interrupted: the reports so far are in {output}" in captured.out
    summary = json.loads((output / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    assert summary["epochs_done"] == 1
    reports = [json.loads(line) for line in (output / "reports.jsonl").read_text().splitlines()]
    assert [report["epoch"] for report in reports] == [1]

    monkeypatch.setattr(Trainer, "run_epoch", original)
    code = main(["run", *TINY, f"output_dir={output}"])
    assert code == 2
    assert "contains an interrupted run" in capsys.readouterr().err
    assert len((output / "reports.jsonl").read_text().splitlines()) == 1


def test_output_dir_that_is_file_rejected(tmp_path, capsys):
    target = tmp_path / "taken"
    target.write_text("keep me")
    code = main(["run", *TINY, f"output_dir={target}"])
    assert code == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert target.read_text() == "keep me"


def test_reports_are_strict_json(tmp_path, capsys):
    output = tmp_path / "oracle"
    assert main(["run", *TINY, "method=oracle", f"output_dir={output}"]) == 0
    capsys.readouterr()
    for line in (output / "reports.jsonl").read_text().splitlines():
        report = json.loads(line, parse_constant=lambda name: pytest.fail(f"non-standard JSON constant {name}"))
        assert report["gsnr"] is None
    summary = json.loads((output / "summary.json").read_text(), parse_constant=lambda name: pytest.fail(name))
    assert summary["last_gsnr"] is None
