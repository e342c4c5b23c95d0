"""Bad input to `cluster/local_cluster.sh`: each is rejected with a message before any Ray process starts."""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "cluster" / "local_cluster.sh"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=60, env=os.environ.copy())


@pytest.fixture()
def short_dir() -> Iterator[Path]:
    """A fresh folder under /tmp, short enough for Ray's socket paths."""
    folder = Path(tempfile.mkdtemp(prefix="mtsc-", dir="/tmp"))
    yield folder
    shutil.rmtree(folder)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--workers", "two"], "--workers must be an integer from 0 to 32, got 'two'"),
        (["--workers", "33"], "--workers must be an integer from 0 to 32, got '33'"),
        (["--cpus-per-node", "0"], "--cpus-per-node must be a positive integer, got '0'"),
        (["--port", "80"], "--port must be an integer from 1024"),
        (["--port", "65000"], "--port must be an integer from 1024"),
        (["--object-store-mb", "10"], "--object-store-mb must be an integer of at least 80"),
    ],
)
def test_start_rejects_bad_option(short_dir: Path, args: list[str], message: str) -> None:
    result = _run("start", "--dir", str(short_dir), *args)

    assert result.returncode == 1
    assert message in result.stderr
    assert not (short_dir / "pids").exists()


def test_start_rejects_long_dir(tmp_path: Path) -> None:
    folder = tmp_path / ("x" * 40)

    result = _run("start", "--dir", str(folder))

    assert result.returncode == 1
    assert "is too long for Ray's socket paths" in result.stderr
    assert not folder.exists()


def test_start_rejects_foreign_dir(short_dir: Path) -> None:
    (short_dir / "notes.txt").write_text("not a cluster folder")

    result = _run("start", "--dir", str(short_dir))

    assert result.returncode == 1
    assert "was not made by this script" in result.stderr
    assert sorted(path.name for path in short_dir.iterdir()) == ["notes.txt"]


def _bind_some_port(listener: socket.socket) -> int:
    """Bind `listener` to a free port of 127.0.0.1 low enough for a cluster's port range."""
    for _ in range(50):
        port = random.randrange(20000, 40000)
        try:
            listener.bind(("127.0.0.1", port))
        except OSError:
            continue
        return port
    raise AssertionError("no free port found in 50 tries")


def test_start_rejects_port_in_use(short_dir: Path) -> None:
    with socket.socket() as listener:
        port = _bind_some_port(listener)
        listener.listen()

        result = _run("start", "--dir", str(short_dir), "--port", str(port))

    assert result.returncode == 1
    assert f"ports in use on 127.0.0.1: {port}" in result.stderr
    assert (short_dir / "pids").read_text() == ""  # nothing was started


def test_unknown_option_and_command() -> None:
    option = _run("start", "--nodes", "2")
    command = _run("restart")

    assert option.returncode == 2
    assert "unknown option --nodes" in option.stderr
    assert command.returncode == 2
    assert "unknown command 'restart'" in command.stderr


def test_status_and_stop_without_cluster(short_dir: Path) -> None:
    status = _run("status", "--dir", str(short_dir))
    stop = _run("stop", "--dir", str(short_dir))

    assert status.returncode == 1
    assert "no cluster started from" in status.stdout
    assert stop.returncode == 0
    assert "no running cluster in" in stop.stdout
