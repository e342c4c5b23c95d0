"""The analysis callback on a real `run_sweep` of the smoke space: store, Tune results and CLI agree.

The trials run `ScriptedRunner` (no training) so that only the uniform baselines train.
"""

from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path

import pytest
from fakes import ScriptedFactory
from sweep_results import read_results

from sweep.analysis.cli import main as run_cli
from sweep.analysis.store import AnalysisStore
from sweep.launch_config import load_launch_config
from sweep.launcher import create_experiment, run_sweep


@pytest.fixture(scope="module")
def smoke(ray_address: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("experiments")
    config, space = load_launch_config(["search_space=smoke", f"sweep.root={root}", "sweep.name=smoke", "sweep.progress_interval_s=60"])
    experiment = create_experiment(config, space)
    summary = run_sweep(experiment, trainer_factory=ScriptedFactory())
    assert summary.counts == {"finished": 4}
    return experiment.path


def test_store_matches_tune_results(smoke: Path) -> None:
    store = AnalysisStore(f"sqlite:///{smoke / 'sweep.db'}", create=False)
    experiment = store.experiment("smoke")
    assert experiment is not None
    assert experiment.searched_params == ("pool.batch_size", "mts.features", "mts.lr", "seed")
    results = read_results(smoke)
    trials = {trial["trial_id"]: trial for trial in store.trials(experiment.id)}
    assert set(trials) == set(results)
    for trial_id, rows in results.items():
        reports = store.reports(experiment.id, trial_id)
        assert [report["epoch"] for report in reports] == [row["epoch"] for row in rows]
        assert [report["val_gain"] for report in reports] == pytest.approx([row["val_gain"] for row in rows])
        trial = trials[trial_id]
        assert trial["status"] == "finished"
        assert trial["params"]["mts.features"] == rows[-1]["config"]["mts.features"]
        assert trial["config"]["mts"]["features"] == rows[-1]["config"]["mts.features"]  # resolved config
        assert trial["config"]["task"]["pool_size"] == 600


def test_best_and_analyze_on_smoke(smoke: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["best", str(smoke), "--json", "--top", "4"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert len(rows) == 4
    values = [row["value"] for row in rows]
    assert values == sorted(values, reverse=True)
    assert run_cli(["analyze", str(smoke)]) == 0
    out = capsys.readouterr().out
    assert "4 finished trials analysed against pool.batch_size" in out
    assert (smoke / "analysis" / "report.md").is_file()
    assert (smoke / "tensorboard" / "scaling").is_dir()
    assert run_cli(["tensorboard", str(smoke)]) == 0
    printed = capsys.readouterr().out.strip()
    assert printed.endswith(f" --logdir {smoke / 'tensorboard'} --host 127.0.0.1")
    # The command must run from a shell whose PATH lacks the virtual environment's bin folder.
    executable = shlex.split(printed)[0]
    assert shutil.which(executable) is not None, printed
