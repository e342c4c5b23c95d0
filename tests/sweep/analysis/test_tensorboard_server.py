"""A real TensorBoard on 127.0.0.1 serves the scaling curves through its HTTP data API."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest
from analysis_data import fill_scaling_store, make_folder

from sweep.analysis.folder import open_folder
from sweep.analysis.report import analyze_experiment
from sweep.analysis.tensorboard import tensorboard_command

STARTUP_TIMEOUT_S = 90.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def get_json(port: int, route: str, **query: str) -> Any:
    url = f"http://127.0.0.1:{port}{route}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture()
def served(tmp_path: Path) -> Iterator[tuple[int, Any]]:
    folder = make_folder(tmp_path, "served", searched=["pool.batch_size", "seed"])
    fill_scaling_store(f"sqlite:///{folder / 'sweep.db'}", "served").close()
    result, _ = analyze_experiment(open_folder(folder))
    port = free_port()
    command = tensorboard_command(folder / "tensorboard", port)
    assert command[command.index("--host") + 1] == "127.0.0.1"
    server = subprocess.Popen([sys.executable, "-m", "tensorboard.main", *command[1:], "--load_fast", "false"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield port, result
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def wait_for_tags(port: int) -> dict[str, Any]:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while True:
        try:
            tags = get_json(port, "/data/plugin/scalars/tags")
            if "scaling/gsnr" in tags.get("scaling", {}):
                return tags
        except (urllib.error.URLError, ConnectionError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"TensorBoard on 127.0.0.1:{port} served no scaling tags within {STARTUP_TIMEOUT_S} s")
        time.sleep(0.5)


def test_tensorboard_serves_scaling_tags(served: tuple[int, Any]) -> None:
    port, result = served
    tags = wait_for_tags(port)
    assert {"scaling/gsnr", "scaling/val_gain", "scaling/test_gain", "scaling/gsnr_fit"} <= set(tags["scaling"])
    # Each point is [wall_time, step, value]; the step is the batch size.
    points = get_json(port, "/data/plugin/scalars/scalars", run="scaling", tag="scaling/gsnr")
    assert [step for _, step, _ in points] == [32, 64, 128, 256, 512]
    means = {point.x: point.values["gsnr"].mean for point in result.points}
    for _, step, value in points:
        assert value == pytest.approx(means[step], rel=1e-5)
    fitted = get_json(port, "/data/plugin/scalars/scalars", run="scaling", tag="scaling/gsnr_fit")
    assert fitted[-1][2] == pytest.approx(result.gsnr_fit(512), rel=1e-5)


def test_launch_stops_on_sigterm(tmp_path: Path) -> None:
    folder = make_folder(tmp_path, "launched", searched=["pool.batch_size", "seed"])
    fill_scaling_store(f"sqlite:///{folder / 'sweep.db'}", "launched").close()
    analyze_experiment(open_folder(folder))
    port = free_port()
    launched = subprocess.Popen(
        [sys.executable, "-m", "sweep.cli", "tensorboard", str(folder), "--port", str(port), "--launch"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_tags(port)
        launched.send_signal(signal.SIGTERM)
        launched.wait(timeout=20)
    finally:
        if launched.poll() is None:
            launched.kill()
            launched.wait()
    # The process that got the signal was TensorBoard itself, so nothing serves the port any more.
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        get_json(port, "/data/plugin/scalars/tags")
