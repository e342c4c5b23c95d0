"""Check the cluster templates offline: field names, CPU counts, install order and launch lines.

Nothing here talks to a cloud or a Kubernetes cluster. The cluster-launcher file is validated
against the JSON schema that the installed Ray ships for `ray up`. No installed package ships the
KubeRay schema, so the manifest's fields are checked one by one, as named in the KubeRay 1.6.2 API
reference.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from sweep.launch_config import load_launch_config

CLUSTER = Path(__file__).resolve().parents[2] / "cluster"
LAUNCHER = CLUSTER / "launcher-aws.yaml"
KUBERAY = CLUSTER / "kuberay-raycluster.yaml"
TORCH_PIN = "torch==2.13.0"
CPU_INDEX = "--index-url https://download.pytorch.org/whl/cpu"


def _load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def _launch_overrides(path: Path) -> list[str]:
    """Return the Hydra overrides of the `mtsweep launch` line in the template's header comment."""
    lines = [line for line in path.read_text().splitlines() if line.startswith("#") and "mtsweep launch" in line]
    assert len(lines) == 1, f"{path.name} should name one mtsweep launch line in its header"
    words = shlex.split(lines[0].lstrip("# "))
    return words[words.index("launch") + 1 :]


def _override(overrides: list[str], key: str) -> str:
    values = [item.split("=", 1)[1] for item in overrides if item.startswith(f"{key}=")]
    assert len(values) == 1, f"{key} is set {len(values)} times in {overrides}"
    return values[0]


def _assert_torch_before_project(commands: list[str], project: str) -> None:
    """Check that one command pins the CPU build of torch and that it runs before the project's install."""
    torch = [index for index, command in enumerate(commands) if TORCH_PIN in command]
    assert len(torch) == 1, commands
    assert CPU_INDEX in commands[torch[0]]
    installs = [index for index, command in enumerate(commands) if project in command]
    assert installs, f"no command installs {project}: {commands}"
    assert torch[0] < min(installs)


def _ray_start_option(command: str, option: str) -> str:
    match = re.search(rf"{option}=(\S+)", command)
    assert match, f"{option} missing in {command!r}"
    return match.group(1)


# --- cluster launcher -----------------------------------------------------------------------------


def test_launcher_matches_ray_schema() -> None:
    import ray.autoscaler

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(_load(LAUNCHER), schema)


def test_launcher_key_fields() -> None:
    config = _load(LAUNCHER)

    assert config["provider"]["type"] == "aws"
    assert config["provider"]["region"]
    assert config["head_node_type"] in config["available_node_types"]
    workers = [name for name in config["available_node_types"] if name != config["head_node_type"]]
    assert len(workers) == 1
    worker = config["available_node_types"][workers[0]]
    assert 0 < worker["min_workers"] <= worker["max_workers"] <= config["max_workers"]
    assert config["available_node_types"][config["head_node_type"]]["resources"]["CPU"] == 0

    head_start = " ".join(config["head_start_ray_commands"])
    worker_start = " ".join(config["worker_start_ray_commands"])
    assert "--head" in head_start
    assert _ray_start_option(head_start, "--num-cpus") == "0"
    assert "RAY_AUTH_MODE=token" in head_start
    assert "RAY_AUTH_MODE=token" in worker_start
    assert "$RAY_HEAD_IP" in worker_start


def test_launcher_worker_cpus_match_trial() -> None:
    config = _load(LAUNCHER)
    worker = next(spec for name, spec in config["available_node_types"].items() if name != config["head_node_type"])
    start_cpus = int(_ray_start_option(" ".join(config["worker_start_ray_commands"]), "--num-cpus"))
    trial_cpus = float(_override(_launch_overrides(LAUNCHER), "sweep.cpus_per_trial"))

    assert worker["resources"]["CPU"] == start_cpus
    assert start_cpus == trial_cpus


def test_launcher_installs_torch_first() -> None:
    config = _load(LAUNCHER)
    _assert_torch_before_project(config["setup_commands"], "~/mtsweep")
    assert "~/mtsweep" in config["file_mounts"]


# --- KubeRay --------------------------------------------------------------------------------------


def test_kuberay_key_fields() -> None:
    manifest = _load(KUBERAY)
    spec = manifest["spec"]

    assert manifest["apiVersion"] == "ray.io/v1"
    assert manifest["kind"] == "RayCluster"
    assert manifest["metadata"]["name"]
    assert spec["authOptions"]["mode"] == "token"
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    head = spec["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert head["image"].startswith(f"rayproject/ray:{spec['rayVersion']}-")

    assert len(spec["workerGroupSpecs"]) == 1
    group = spec["workerGroupSpecs"][0]
    assert group["groupName"]
    assert 0 < group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    worker = group["template"]["spec"]["containers"][0]
    assert worker["image"] == head["image"]


def test_kuberay_ray_version_matches_installed() -> None:
    import ray

    assert _load(KUBERAY)["spec"]["rayVersion"] == ray.__version__


def test_kuberay_worker_cpus_match_trial() -> None:
    group = _load(KUBERAY)["spec"]["workerGroupSpecs"][0]
    worker = group["template"]["spec"]["containers"][0]
    trial_cpus = float(_override(_launch_overrides(KUBERAY), "sweep.cpus_per_trial"))

    assert isinstance(group["rayStartParams"]["num-cpus"], str)  # KubeRay takes strings only
    assert int(group["rayStartParams"]["num-cpus"]) == trial_cpus
    assert worker["resources"]["limits"]["cpu"] == group["rayStartParams"]["num-cpus"]
    assert worker["resources"]["requests"]["cpu"] == group["rayStartParams"]["num-cpus"]


@pytest.mark.parametrize("role", ["head", "worker"])
def test_kuberay_installs_torch_first(role: str) -> None:
    spec = _load(KUBERAY)["spec"]
    group = spec["headGroupSpec"] if role == "head" else spec["workerGroupSpecs"][0]
    command = group["template"]["spec"]["containers"][0]["command"]

    assert len(command) == 1  # KubeRay joins it with `&& ray start ...` into one shell line
    steps = [step.strip() for step in command[0].split("&&")]
    _assert_torch_before_project(steps, "mtsweep")


# --- both ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [LAUNCHER, KUBERAY], ids=lambda path: path.name)
def test_launch_line_is_valid_config(path: Path) -> None:
    overrides = _launch_overrides(path)

    config, _ = load_launch_config(overrides)

    assert config.cluster.mode == "remote"
    assert config.cluster.address
    assert config.sweep.root.startswith("/mnt/")  # on the shared filesystem the template mounts
