"""Run a smoke sweep through the CLI on `cluster/local_cluster.sh`: a head and a worker node of 1 CPU.

Everything binds to 127.0.0.1. The cluster gets its own folder under /tmp (Ray's socket paths must
stay short) and free ports, and is stopped in a `finally` block even when a check fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shlex
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "cluster" / "local_cluster.sh"
NUM_SAMPLES = 4


class LocalCluster:
    """A running cluster of the script: its folder, GCS port and the launch line it printed."""

    def __init__(self, folder: Path, port: int, launch_line: str) -> None:
        self.folder = folder
        self.port = port
        self.launch_line = launch_line

    def script(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return _run_script(*args, "--dir", str(self.folder), check=check)

    def processes(self) -> set[Process]:
        """Return the recorded node processes that run now and all their descendants."""
        roots = {int(line.split()[1]) for line in (self.folder / "pids").read_text().splitlines()}
        return _with_descendants(roots)


Process = tuple[int, str]  # (pid, start time in clock ticks), so that a reused pid does not match


def _process_table() -> dict[int, tuple[int, str, str]]:
    """Return pid -> (parent pid, start time, state) of every running process, from /proc."""
    table = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # the process exited while we read
            continue
        # The command name in brackets may contain spaces; the fields after it are fixed.
        fields = text[text.rindex(")") + 2 :].split()
        table[int(stat.parent.name)] = (int(fields[1]), fields[19], fields[0])
    return table


def _with_descendants(roots: set[int]) -> set[Process]:
    table = _process_table()
    found = {pid for pid in roots if pid in table}
    changed = True
    while changed:
        children = {pid for pid, (parent, _, _) in table.items() if parent in found and pid not in found}
        found |= children
        changed = bool(children)
    return {(pid, table[pid][1]) for pid in found}


def _running(processes: set[Process]) -> set[Process]:
    table = _process_table()
    return {(pid, start) for pid, start in processes if pid in table and table[pid][1] == start and table[pid][2] != "Z"}


def _run_script(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    # The nodes run trials with this Python, the one that runs the tests and has mtsweep installed.
    env = {**os.environ, "MTSWEEP_PYTHON": sys.executable}
    result = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=400, env=env)
    if check and result.returncode != 0:
        raise AssertionError(f"local_cluster.sh {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


def _start(folder: Path, workers: int) -> LocalCluster:
    """Start a cluster on a random free port range; retry when the script finds a port in use."""
    for _ in range(5):
        port = random.randrange(20000, 40000, 10)
        result = _run_script("start", "--workers", str(workers), "--cpus-per-node", "1", "--port", str(port), "--dir", str(folder), check=False)
        if result.returncode == 0:
            launch = [line.strip() for line in result.stdout.splitlines() if " launch " in line]
            assert len(launch) == 1, result.stdout
            return LocalCluster(folder, port, launch[0])
        if "ports in use" not in result.stderr:
            raise AssertionError(f"local_cluster.sh start failed:\n{result.stdout}\n{result.stderr}")
    raise AssertionError("no free port range found in 5 tries")


@contextlib.contextmanager
def _cluster(workers: int) -> Iterator[LocalCluster]:
    """Start a cluster in a fresh short folder under /tmp; stop it and check that nothing is left."""
    folder = Path(tempfile.mkdtemp(prefix="mtsc-", dir="/tmp"))
    processes: set[Process] = set()
    try:
        cluster = _start(folder, workers)
        processes = cluster.processes()
        yield cluster
    finally:
        if (folder / "pids").exists():
            processes |= LocalCluster(folder, 0, "").processes()
            _run_script("stop", "--dir", str(folder), check=False)
        left = _running(processes)
        shutil.rmtree(folder, ignore_errors=True)
        assert not left, f"processes of the cluster still running after stop: {sorted(left)}"


def _launch_command(cluster: LocalCluster, root: Path) -> tuple[list[str], dict[str, str]]:
    """Split the printed launch line into its environment and command, and add the test's overrides."""
    words = shlex.split(cluster.launch_line)
    env = os.environ.copy()
    while "=" in words[0] and not words[0].startswith("/"):
        key, value = words.pop(0).split("=", 1)
        env[key] = value
    overrides = [f"sweep.root={root}", "sweep.name=on_cluster", f"sweep.num_samples={NUM_SAMPLES}", "sweep.max_concurrent_trials=2", "sweep.progress_interval_s=5"]
    return words + overrides, env


def _node_of_pid(folder: Path, pid: int) -> str:
    """Return the node folder (ray-head, ray-worker-1) whose logs hold the worker process `pid`.

    Ray names each worker's log `worker-<worker id>-<job id>-<pid>.out` in the logs of the node
    that started it, and every node of the script has a folder of its own.
    """
    nodes = {path.parts[-4] for path in folder.glob(f"ray-*/session_*/logs/worker-*-{pid}.out")}
    assert len(nodes) == 1, f"pid {pid} found in the logs of nodes {sorted(nodes)}"
    return nodes.pop()


def test_smoke_sweep_uses_both_nodes(tmp_path: Path) -> None:
    with _cluster(workers=1) as cluster:
        assert cluster.launch_line.endswith(f"cluster=remote cluster.address=127.0.0.1:{cluster.port}")
        status = cluster.script("status")
        assert re.search(r"^\s+head\s+pid \d+\s+running$", status.stdout, re.MULTILINE), status.stdout
        assert re.search(r"^\s+worker-1\s+pid \d+\s+running$", status.stdout, re.MULTILINE), status.stdout

        command, env = _launch_command(cluster, tmp_path)
        assert Path(command[0]).name == "mtsweep"
        launch = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
        output = launch.stdout + launch.stderr
        assert launch.returncode == 0, output
        assert f"Connected to the Ray cluster at 127.0.0.1:{cluster.port}" in output
        assert "'CPU': 2.0" in output

        experiment = tmp_path / "on_cluster"
        status = subprocess.run([command[0], "status", str(experiment)], capture_output=True, text=True, timeout=60, env=env)
        assert status.returncode == 0, status.stderr
        counts = dict(re.findall(r"^\s+(\S[\w ]*?)\s+(\d+)", status.stdout, re.MULTILINE))
        assert counts == {"finished": str(NUM_SAMPLES), "total": str(NUM_SAMPLES)}, status.stdout

        with contextlib.closing(sqlite3.connect(experiment / "sweep.db")) as connection:
            stored = connection.execute("SELECT status, COUNT(*) FROM analysis_trials GROUP BY status").fetchall()
        assert stored == [("finished", NUM_SAMPLES)]

        pids = set()
        for result_file in (experiment / "tune").glob("trial_*/result.json"):
            rows = [json.loads(line) for line in result_file.read_text().splitlines() if line.strip()]
            assert rows, f"{result_file} has no results"
            pids.update(row["pid"] for row in rows)
        nodes = {_node_of_pid(cluster.folder, pid) for pid in pids}
        assert nodes == {"ray-head", "ray-worker-1"}


def test_stop_spares_other_cluster() -> None:
    with _cluster(workers=0) as kept:
        kept_processes = kept.processes()
        with _cluster(workers=0) as other:
            assert other.port != kept.port
        assert kept_processes
        assert _running(kept_processes) == kept_processes
        status = kept.script("status")
        assert re.search(r"^\s+head\s+pid \d+\s+running$", status.stdout, re.MULTILINE), status.stdout
