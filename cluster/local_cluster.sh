#!/usr/bin/env bash
# A Ray cluster of one head and N worker nodes on this machine, every node on 127.0.0.1, for trying
# the multi-node path of mtsweep (placement across raylets, cluster=remote) without other hosts.
#
#   cluster/local_cluster.sh start [--workers N] [--cpus-per-node C] [--port P] [--dir D] [--object-store-mb M]
#   cluster/local_cluster.sh status [--dir D]
#   cluster/local_cluster.sh stop [--dir D]
#
# Every node, the head included, offers C CPUs to trials, (N + 1) * C in total.
# `start` prints the `mtsweep launch ... cluster=remote cluster.address=127.0.0.1:P` line to use.
#
# Every node gets its own Ray temp folder under D and its own ports, derived from P:
#   P          GCS of the head (the cluster address)
#   P+1        Ray Client server of the head (ray://127.0.0.1:P+1)
#   P+2        dashboard port (the dashboard is off; set so that nothing falls back to 8265)
#   P+10+10i   node i (0 = head, 1..N = workers): node manager, object manager, dashboard agent
#     ..+5     HTTP and gRPC, runtime env agent, metrics export, in that order
#   P+1000+200i .. +199   ports of node i's worker processes
# so two raylets on one host never hand out the same port. `start` checks that every one is free.
#
# `stop` ends only the processes of the cluster in D: the node processes it recorded, their
# descendants, and processes whose command line names one of D's node folders. It never runs
# `ray stop`, which ends every Ray process it may signal on the machine, other sweeps included.
#
# Environment: MTSWEEP_PYTHON (default: the repository's .venv/bin/python, else python3) must have
# mtsweep installed, because Ray runs the trials with the node's Python. RAY_AUTH_MODE defaults to
# `token` (Ray 2.60's default for local clusters); the token lives in ~/.ray/auth_token, and
# `start` creates it with `ray get-auth-token --generate` if it is missing.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HERE="$ROOT/cluster"
MARKER=".mtsweep-local-cluster"
START_TIMEOUT_S=180  # per node; a node usually starts in seconds, longer on a busy machine
STOP_GRACE_S=45      # Ray drains a node for up to 30 s on SIGTERM before it ends its processes

usage() {
  sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

fail() {
  echo "local_cluster.sh: $*" >&2
  exit 1
}

find_python() {
  if [ -n "${MTSWEEP_PYTHON:-}" ]; then
    echo "$MTSWEEP_PYTHON"
  elif [ -x "$ROOT/.venv/bin/python" ]; then
    echo "$ROOT/.venv/bin/python"
  else
    command -v python3 || fail "no Python found; set MTSWEEP_PYTHON to a Python that has mtsweep installed"
  fi
}

is_uint() {
  [[ "$1" =~ ^[0-9]+$ ]]
}

# --- Options ------------------------------------------------------------------------------------

COMMAND=${1:-}
[ -n "$COMMAND" ] || { usage; exit 2; }
shift

WORKERS=1
CPUS=1
PORT=26379
DIR=/tmp/mtsweep-local-cluster
OBJECT_STORE_MB=256

while [ $# -gt 0 ]; do
  case "$1" in
    --workers) WORKERS=${2:-}; shift 2 || fail "--workers needs a value" ;;
    --cpus-per-node) CPUS=${2:-}; shift 2 || fail "--cpus-per-node needs a value" ;;
    --port) PORT=${2:-}; shift 2 || fail "--port needs a value" ;;
    --dir) DIR=${2:-}; shift 2 || fail "--dir needs a value" ;;
    --object-store-mb) OBJECT_STORE_MB=${2:-}; shift 2 || fail "--object-store-mb needs a value" ;;
    -h|--help) usage; exit 0 ;;
    *) echo "local_cluster.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
done

case "$DIR" in
  /*) ;;
  *) DIR="$(pwd)/$DIR" ;;
esac
DIR=${DIR%/}
PIDS_FILE="$DIR/pids"
STATE_FILE="$DIR/cluster.env"

PYTHON=$(find_python)

# --- Process helpers ----------------------------------------------------------------------------

# Print the pids of the recorded node processes that are still alive and still ours: the command
# line must name this cluster's folder, so a pid reused by an unrelated process is left alone.
recorded_pids() {
  [ -f "$PIDS_FILE" ] || return 0
  local name pid
  while read -r name pid; do
    [ -n "$pid" ] || continue
    if [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' < "/proc/$pid/cmdline" | grep -qF "$DIR/"; then
      echo "$pid"
    fi
  done < "$PIDS_FILE"
}

# Print every process of this user that belongs to the cluster: the recorded node processes, the
# processes whose command line names one of this cluster's node folders, and all their descendants.
# Ray worker processes rename themselves to ray::..., so only their ancestry finds them.
cluster_pids() {
  local roots table
  table=$(ps -u "$(id -u)" -o pid=,ppid=,args=)
  roots=$( { recorded_pids; echo "$table" | grep -F -e "$DIR/ray-head/" -e "$DIR/ray-worker-" | awk '{print $1}'; } | sort -un)
  [ -n "$roots" ] || return 0
  echo "$table" | awk -v roots="$roots" '
    BEGIN { n = split(roots, list, "\n"); for (i = 1; i <= n; i++) keep[list[i]] = 1 }
    { parent[$1] = $2; pids[NR] = $1 }
    END {
      changed = 1
      while (changed) {
        changed = 0
        for (i in pids) { p = pids[i]; if (!(p in keep) && (parent[p] in keep)) { keep[p] = 1; changed = 1 } }
      }
      for (p in keep) if (p != "") print p
    }' | sort -n
}

any_alive() {
  local pid
  for pid in "$@"; do
    kill -0 "$pid" 2>/dev/null && return 0
  done
  return 1
}

# Send SIGTERM to the node processes (workers first, then the head), wait, then SIGKILL whatever of
# the cluster is left.
stop_cluster() {
  local all recorded pid waited=0
  all=$(cluster_pids)
  if [ -z "$all" ]; then
    echo "no running cluster in $DIR"
    rm -f "$PIDS_FILE"
    return 0
  fi

  recorded=$(recorded_pids | sort -rn)
  if [ -f "$PIDS_FILE" ]; then
    for pid in $(grep -v '^head ' "$PIDS_FILE" | awk '{print $2}') $(grep '^head ' "$PIDS_FILE" | awk '{print $2}'); do
      if echo "$recorded" | grep -qx "$pid"; then
        kill -TERM "$pid" 2>/dev/null || true
      fi
    done
  fi
  # shellcheck disable=SC2086  # word splitting of the pid list is intended
  while any_alive $recorded && [ "$waited" -lt "$STOP_GRACE_S" ]; do
    sleep 1
    waited=$((waited + 1))
  done

  # Processes that outlived their node (or started while it stopped) get SIGKILL.
  sleep 1
  all=$( { echo "$all"; cluster_pids; } | sort -un)
  for pid in $all; do
    if kill -0 "$pid" 2>/dev/null; then
      echo "process $pid did not exit after SIGTERM; sending SIGKILL" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  rm -f "$PIDS_FILE"
  echo "stopped the cluster in $DIR"
}

# --- start --------------------------------------------------------------------------------------

check_start_options() {
  is_uint "$WORKERS" && [ "$WORKERS" -le 32 ] || fail "--workers must be an integer from 0 to 32, got '$WORKERS'"
  is_uint "$CPUS" && [ "$CPUS" -ge 1 ] || fail "--cpus-per-node must be a positive integer, got '$CPUS'"
  is_uint "$OBJECT_STORE_MB" && [ "$OBJECT_STORE_MB" -ge 80 ] \
    || fail "--object-store-mb must be an integer of at least 80 (Ray's minimum is 75 MiB), got '$OBJECT_STORE_MB'"
  local max_port=$((65535 - 1000 - 200 * (WORKERS + 1) + 1))
  is_uint "$PORT" && [ "$PORT" -ge 1024 ] && [ "$PORT" -le "$max_port" ] \
    || fail "--port must be an integer from 1024 to $max_port with $WORKERS workers, got '$PORT'"
  # Ray puts Unix sockets at <node folder>/session_<date>_<pid>/sockets/plasma_store, and Linux
  # limits a socket path to 107 bytes; the session part takes up to 64.
  local longest="$DIR/ray-worker-$((WORKERS > 0 ? WORKERS : 1))"
  [ "${#longest}" -le 43 ] || fail "--dir $DIR is too long for Ray's socket paths; use a folder of at most $((43 - ${#longest} + ${#DIR})) characters, e.g. under /tmp"
  command -v setsid >/dev/null || fail "setsid (util-linux) is missing; it keeps each node in a process group of its own"
}

prepare_dir() {
  if [ -n "$(cluster_pids)" ]; then
    fail "a cluster started from $DIR is running ($(grep ^ADDRESS= "$STATE_FILE" 2>/dev/null || true)); stop it first: cluster/local_cluster.sh stop --dir $DIR"
  fi
  if [ -d "$DIR" ] && [ -n "$(ls -A "$DIR")" ] && [ ! -f "$DIR/$MARKER" ]; then
    fail "$DIR exists and was not made by this script; choose another --dir"
  fi
  mkdir -p "$DIR/logs"
  touch "$DIR/$MARKER"
  : > "$PIDS_FILE"
}

# Print every port the cluster will bind, one a line.
cluster_ports() {
  local node base
  echo "$PORT"; echo $((PORT + 1)); echo $((PORT + 2))
  for node in $(seq 0 "$WORKERS"); do
    base=$((PORT + 10 + 10 * node))
    seq "$base" $((base + 5))
    seq $((PORT + 1000 + 200 * node)) $((PORT + 1000 + 200 * node + 199))
  done
}

check_ports_free() {
  local taken
  taken=$(cluster_ports | "$PYTHON" -c '
import socket, sys
for line in sys.stdin:
    port = int(line)
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            print(port)
')
  [ -z "$taken" ] || fail "ports in use on 127.0.0.1: $(echo $taken | cut -c1-200); choose another --port"
}

# Ray 2.60 enables token authentication for a new head only if a token exists, and every node and
# driver of a cluster must use the same mode. So the mode is set here for all of them.
prepare_auth() {
  export RAY_AUTH_MODE=${RAY_AUTH_MODE:-token}
  if [ "$RAY_AUTH_MODE" = "token" ]; then
    "$PYTHON" -m ray.scripts.scripts get-auth-token --generate > /dev/null 2> "$DIR/logs/auth-token.err" \
      || fail "could not create a Ray auth token with 'ray get-auth-token --generate': $(cat "$DIR/logs/auth-token.err")"
  fi
}

# wait_for_line NAME PID LOG TEXT: wait until LOG contains TEXT, failing if PID exits first.
wait_for_line() {
  local name=$1 pid=$2 log=$3 text=$4 waited=0
  until grep -qF "$text" "$log" 2>/dev/null; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "local_cluster.sh: the $name node exited during startup; its output ($log):" >&2
      tail -n 20 "$log" >&2
      return 1
    fi
    if [ "$waited" -ge "$START_TIMEOUT_S" ]; then
      echo "local_cluster.sh: the $name node did not start within ${START_TIMEOUT_S} s; see $log" >&2
      return 1
    fi
    sleep 1
    waited=$((waited + 1))
  done
}

node_ports() {  # node_ports INDEX: the six per-node ports of node INDEX
  local base=$((PORT + 10 + 10 * $1))
  echo "$base $((base + 1)) $((base + 2)) $((base + 3)) $((base + 4)) $((base + 5))"
}

start_head() {
  local nm om agent_http agent_grpc runtime_env metrics log="$DIR/logs/head.out"
  read -r nm om agent_http agent_grpc runtime_env metrics <<< "$(node_ports 0)"
  # RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 keeps 127.0.0.1 as the head's address; without it Ray
  # 2.60 replaces a loopback --node-ip-address with the machine's outward IP. setsid gives the
  # node a process group of its own, because Ray's reaper ends its whole group when the node dies.
  RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 RAY_USAGE_STATS_ENABLED=0 setsid "$PYTHON" -m ray.scripts.scripts start \
    --head --block --disable-usage-stats \
    --node-ip-address=127.0.0.1 --port="$PORT" --ray-client-server-port=$((PORT + 1)) \
    --include-dashboard=false --dashboard-host=127.0.0.1 --dashboard-port=$((PORT + 2)) \
    --num-cpus="$CPUS" --num-gpus=0 --object-store-memory=$((OBJECT_STORE_MB * 1024 * 1024)) \
    --temp-dir="$DIR/ray-head" \
    --node-manager-port="$nm" --object-manager-port="$om" \
    --dashboard-agent-listen-port="$agent_http" --dashboard-agent-grpc-port="$agent_grpc" \
    --runtime-env-agent-port="$runtime_env" --metrics-export-port="$metrics" \
    --min-worker-port=$((PORT + 1000)) --max-worker-port=$((PORT + 1199)) \
    > "$log" 2>&1 < /dev/null &
  echo "head $!" >> "$PIDS_FILE"
  wait_for_line head "$!" "$log" "Ray runtime started"
}

start_worker() {  # start_worker INDEX: start worker node INDEX in the background
  local index=$1 nm om agent_http agent_grpc runtime_env metrics
  local log="$DIR/logs/worker-$index.out" low=$((PORT + 1000 + 200 * index))
  read -r nm om agent_http agent_grpc runtime_env metrics <<< "$(node_ports "$index")"
  RAY_USAGE_STATS_ENABLED=0 setsid "$PYTHON" "$HERE/local_worker_node.py" \
    --address="127.0.0.1:$PORT" --temp-dir="$DIR/ray-worker-$index" \
    --num-cpus="$CPUS" --object-store-bytes=$((OBJECT_STORE_MB * 1024 * 1024)) \
    --node-manager-port="$nm" --object-manager-port="$om" \
    --dashboard-agent-listen-port="$agent_http" --dashboard-agent-grpc-port="$agent_grpc" \
    --runtime-env-agent-port="$runtime_env" --metrics-export-port="$metrics" \
    --min-worker-port="$low" --max-worker-port=$((low + 199)) \
    > "$log" 2>&1 < /dev/null &
  echo "worker-$index $!" >> "$PIDS_FILE"
}

# A driver that connects to an explicit address uses token authentication only when
# RAY_AUTH_MODE=token is set (Ray 2.60 enables it on its own only for clusters it finds itself).
print_launch_line() {
  local mtsweep="mtsweep"
  [ -x "$ROOT/.venv/bin/mtsweep" ] && mtsweep="$ROOT/.venv/bin/mtsweep"
  echo "Run a sweep on it with:"
  echo "  RAY_AUTH_MODE=$RAY_AUTH_MODE $mtsweep launch search_space=smoke cluster=remote cluster.address=127.0.0.1:$PORT"
  echo "Stop it with:"
  echo "  $HERE/local_cluster.sh stop --dir $DIR"
}

start_cluster() {
  check_start_options
  prepare_dir
  check_ports_free
  prepare_auth
  {
    echo "ADDRESS=127.0.0.1:$PORT"
    echo "WORKERS=$WORKERS"
    echo "CPUS_PER_NODE=$CPUS"
    echo "RAY_AUTH_MODE=$RAY_AUTH_MODE"
  } > "$STATE_FILE"

  # An interrupted start leaves no half-started cluster behind.
  trap 'stop_cluster >&2; exit 130' INT TERM
  echo "starting the head node on 127.0.0.1:$PORT (logs in $DIR/logs)"
  start_head || { stop_cluster >&2; fail "the cluster did not start"; }

  local index pid
  for index in $(seq 1 "$WORKERS"); do
    start_worker "$index"
  done
  for index in $(seq 1 "$WORKERS"); do
    pid=$(awk -v name="worker-$index" '$1 == name {print $2}' "$PIDS_FILE")
    wait_for_line "worker-$index" "$pid" "$DIR/logs/worker-$index.out" "worker node ready" \
      || { stop_cluster >&2; fail "the cluster did not start"; }
  done

  trap - INT TERM
  echo "started a Ray cluster at 127.0.0.1:$PORT: a head and $WORKERS worker node(s), $CPUS CPU(s) per node"
  print_launch_line
}

# --- status -------------------------------------------------------------------------------------

status_cluster() {
  if [ ! -f "$PIDS_FILE" ]; then
    echo "no cluster started from $DIR"
    return 1
  fi
  # shellcheck disable=SC1090  # the state file is written by start_cluster
  . "$STATE_FILE"
  PORT=${ADDRESS##*:}
  local alive name pid state
  alive=$(recorded_pids)
  echo "cluster in $DIR at $ADDRESS"
  while read -r name pid; do
    state="not running"
    echo "$alive" | grep -qx "$pid" && state="running"
    echo "  $name  pid $pid  $state"
  done < "$PIDS_FILE"
  [ -n "$alive" ] || return 1
  RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 RAY_AUTH_MODE="$RAY_AUTH_MODE" \
    "$PYTHON" -m ray.scripts.scripts status --address "$ADDRESS" || true
  print_launch_line
}

case "$COMMAND" in
  start) start_cluster ;;
  stop) stop_cluster ;;
  status) status_cluster ;;
  -h|--help|help) usage ;;
  *) echo "local_cluster.sh: unknown command '$COMMAND'; use start, stop or status" >&2; usage >&2; exit 2 ;;
esac
