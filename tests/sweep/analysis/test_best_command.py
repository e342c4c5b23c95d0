"""`mtsweep best` on a store filled with known rows: ranking, --json, --where, --per, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from analysis_data import fill_known_store, make_folder

from sweep.analysis.cli import main as run_cli


@pytest.fixture()
def known(tmp_path: Path) -> Path:
    folder = make_folder(tmp_path, "known")
    fill_known_store(f"sqlite:///{folder / 'sweep.db'}", "known").close()
    return folder


def best_json(folder: Path, capsys: pytest.CaptureFixture[str], *options: str) -> dict:
    assert run_cli(["best", str(folder), "--json", *options]) == 0
    return json.loads(capsys.readouterr().out)


def test_best_ranks_by_best_val_gain(known: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = best_json(known, capsys, "--top", "3")
    assert [row["trial_id"] for row in result["rows"]] == ["c", "d", "b"]
    assert [row["epoch"] for row in result["rows"]] == [1, 2, 3]
    assert result["rows"][0]["value"] == pytest.approx(0.10)
    assert result["rows"][0]["test_acc"] == pytest.approx(0.80)  # test accuracy of epoch 1
    assert result["considered"] == 5  # the diverged trial is left out


def test_best_where_filters(known: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = best_json(known, capsys, "--where", "mts.features=loss,class")
    assert [row["trial_id"] for row in result["rows"]] == ["d", "b"]
    result = best_json(known, capsys, "--where", "seed=0", "--where", "pool.batch_size=64")
    assert [row["trial_id"] for row in result["rows"]] == ["b", "a"]
    result = best_json(known, capsys, "--where", "status=diverged")
    assert [row["trial_id"] for row in result["rows"]] == ["e"]


def test_best_where_no_match_says_so(known: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["best", str(known), "--where", "pool.batch_size=999"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == "no trial matches --where pool.batch_size=999 (6 trials recorded)"


def test_best_per_batch_size(known: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = best_json(known, capsys, "--per", "pool.batch_size")
    assert [(row["group"], row["trial_id"]) for row in result["rows"]] == [("64", "b"), ("256", "c"), ("1024", "f")]
    result = best_json(known, capsys, "--per", "pool.batch_size", "--where", "seed=1")
    assert [(row["group"], row["trial_id"]) for row in result["rows"]] == [("256", "d"), ("1024", "f")]
    result = best_json(known, capsys, "--per", "mts.features", "--top", "2")
    assert [(row["group"], row["trial_id"]) for row in result["rows"]] == [("loss", "c"), ("loss", "f"), ("loss,class", "d"), ("loss,class", "b")]


def test_best_table_shows_params_and_test(known: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["best", str(known), "--top", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "never ranked" in lines[0]
    assert lines[1].split() == ["rank", "trial", "status", "pool.batch_size", "mts.features", "seed", "epoch", "val_gain", "val_acc", "test_acc", "test_gain", "last_gsnr"]
    assert lines[2].split()[:6] == ["1", "c", "finished", "256", "loss", "0"]
    assert lines[3].split()[:6] == ["2", "d", "finished", "256", "loss,class", "1"]


def test_best_ranks_other_metric_by_last_value(known: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = best_json(known, capsys, "--metric", "wall_time", "--top", "1")
    assert result["mode"] == "min"
    assert result["rows"][0]["trial_id"] == "f"  # the pruned trial stopped after one epoch


@pytest.mark.parametrize("metric", ["test_acc", "test_gain", "best_test_acc"])
def test_best_rejects_test_metric(known: Path, metric: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["best", str(known), "--metric", metric]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert f"--metric {metric} is a test metric" in error


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--where", "pool.batch_size"], "is not key=value"),
        (["--where", "pool.batchsize=64"], "'pool.batchsize' is not a parameter"),
        (["--per", "lr"], "'lr' is not a parameter"),
        (["--metric", "accuracy"], "no trial reported --metric accuracy"),
        (["--top", "0"], "--top 0 must be at least 1"),
    ],
)
def test_best_bad_options(known: Path, options: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["best", str(known), *options]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert message in error


def test_best_missing_folder_and_empty_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["best", str(tmp_path / "nowhere")]) == 2
    assert "config.yaml not found" in capsys.readouterr().err
    empty = make_folder(tmp_path, "empty")
    assert run_cli(["best", str(empty)]) == 2
    assert "no analysis data for experiment 'empty'" in capsys.readouterr().err
