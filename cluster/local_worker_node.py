"""Run one Ray worker node on 127.0.0.1 until SIGTERM; started by `cluster/local_cluster.sh`.

`ray start --address=127.0.0.1:P` cannot start this node in Ray 2.60: on Linux it replaces a
loopback `--node-ip-address` and a loopback GCS address with the machine's outward IP, while the
head started by the script listens on 127.0.0.1 only. The opposite setting
(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, which keeps 127.0.0.1) makes `ray start` reject worker nodes.
So this script builds the node the way `ray start --block` does after those checks, through
`ray._private.node.Node`, the layer that Ray's own `ray.cluster_utils.Cluster` uses for several
nodes on one machine. That module is private to Ray and may change between releases.

    python cluster/local_worker_node.py --address 127.0.0.1:26379 --temp-dir /tmp/c/ray-worker-1 \
        --num-cpus 1 --node-manager-port 26399 ... --min-worker-port 27579 --max-worker-port 27778
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

logger = logging.getLogger("local_worker_node")

# Seconds to wait for the new node to register with the GCS before giving up.
REGISTER_TIMEOUT_S = 120.0


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Run one Ray worker node on 127.0.0.1 until SIGTERM.")
    parser.add_argument("--address", required=True, help="GCS address of the head node, 127.0.0.1:PORT")
    parser.add_argument("--temp-dir", required=True, help="Ray temp folder of this node (logs, sockets)")
    parser.add_argument("--num-cpus", type=int, required=True, help="CPUs this node offers to Ray")
    parser.add_argument("--object-store-bytes", type=int, required=True, help="object store size in bytes")
    ports = {
        "--node-manager-port": "raylet gRPC port",
        "--object-manager-port": "object manager port",
        "--dashboard-agent-listen-port": "dashboard agent HTTP port",
        "--dashboard-agent-grpc-port": "dashboard agent gRPC port",
        "--runtime-env-agent-port": "runtime env agent HTTP port",
        "--metrics-export-port": "Prometheus metrics port",
        "--min-worker-port": "lowest port of this node's worker processes",
        "--max-worker-port": "highest port of this node's worker processes",
    }
    for flag, meaning in ports.items():
        parser.add_argument(flag, type=int, required=True, help=meaning)
    return parser.parse_args(argv)


def start_node(args: argparse.Namespace):  # -> ray._private.node.Node
    """Start the raylet, agents and log monitor of one worker node and wait until the GCS lists it."""
    import ray._private.services as services
    from ray._private.node import Node
    from ray._private.parameter import RayParams

    params = RayParams(
        node_ip_address="127.0.0.1",
        gcs_address=args.address,
        num_cpus=args.num_cpus,
        num_gpus=0,
        object_store_memory=args.object_store_bytes,
        temp_dir=args.temp_dir,
        node_manager_port=args.node_manager_port,
        object_manager_port=args.object_manager_port,
        dashboard_agent_listen_port=args.dashboard_agent_listen_port,
        metrics_agent_port=args.dashboard_agent_grpc_port,
        runtime_env_agent_port=args.runtime_env_agent_port,
        metrics_export_port=args.metrics_export_port,
        min_worker_port=args.min_worker_port,
        max_worker_port=args.max_worker_port,
        # Each node has its own temp folder, so each needs its own log monitor to stream its
        # workers' output to the driver. No two log monitors read the same files.
        include_log_monitor=True,
    )
    # shutdown_at_exit installs Ray's SIGTERM handler, which drains the node and ends its processes.
    node = Node(params, head=False, shutdown_at_exit=True, spawn_reaper=True)
    services.wait_for_node(node.gcs_address, node.plasma_store_socket_name, REGISTER_TIMEOUT_S)
    return node


def wait_until_stopped(node) -> int:
    """Block until SIGTERM (handled by Ray); return 1 if one of the node's processes dies first."""
    while True:
        time.sleep(1.0)
        dead = node.dead_processes()
        if dead:
            names = ", ".join(f"{kind} (exit code {process.returncode})" for kind, process in dead)
            logger.error("Ray processes of this node exited unexpectedly: %s; stopping the rest", names)
            node.kill_all_processes(check_alive=False, allow_graceful=False)
            return 1


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    node = start_node(args)
    # local_cluster.sh waits for this line in the node's log before it reports the cluster as up.
    print(f"worker node ready: node_id={node.node_id} temp_dir={args.temp_dir}", flush=True)
    return wait_until_stopped(node)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
