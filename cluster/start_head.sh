#!/usr/bin/env bash
# Start a local Ray head on loopback, in its own temp dir, with every port it opens chosen here.
#
# Overridable by environment variables (unset ports are picked free at start):
#   RAY_VERSION, RAY, PYTHON  as in common.sh; the ray CLI must be of Ray $RAY_VERSION
#   RAY_HEAD_DIR      temp dir of this head (default /tmp/concurry-head-<uid>; keep it short: Ray puts
#                     sockets in it). Made with mode 0700 if missing; refused unless ours and 0700.
#   RAY_HEAD_PORT     GCS port (default 6379)
#   RAY_DASHBOARD_PORT  dashboard / job server port (default 8265)
#   RAY_AGENT_LISTEN_PORT RAY_AGENT_GRPC_PORT RAY_RUNTIME_ENV_AGENT_PORT
#   RAY_METRICS_PORT RAY_CLIENT_SERVER_PORT RAY_NODE_MANAGER_PORT RAY_OBJECT_MANAGER_PORT
#   RAY_HEAD_CPUS     --num-cpus (default: Ray's own count)
#
# Writes $RAY_HEAD_DIR/head.env (sourced by submit_job.sh) and prints it.
set -euo pipefail

# shellcheck source=cluster/common.sh
source "$(dirname "$0")/common.sh"
check_ray_version
# Job entrypoints say `python`: make it the interpreter next to this ray (the head's venv).
if [[ "$RAY" == */* ]]; then PATH="$(cd "$(dirname "$RAY")" && pwd):$PATH"; fi
export RAY_AUTH_MODE=${RAY_AUTH_MODE:-disabled}   # loopback-only cluster: no token (see cluster/README.md)
export RAY_USAGE_STATS_ENABLED=${RAY_USAGE_STATS_ENABLED:-0}

mkdir -m 700 "$RAY_HEAD_DIR" 2>/dev/null || true   # if it exists, the check below decides
check_private_dir "$RAY_HEAD_DIR"
if [[ -f "$RAY_HEAD_DIR/head.env" ]] && [[ -n "$(bash "$(dirname "$0")/stop_head.sh" --list 2>/dev/null)" ]]; then
  echo "start_head.sh: a head is already running in $RAY_HEAD_DIR (cluster/stop_head.sh stops it)" >&2
  exit 1
fi
# Every process of this head inherits this variable (stop_head.sh finds them by it, including
# the ones whose command line does not name the temp dir, like the Ray client server).
export CONCURRY_RAY_HEAD="$RAY_HEAD_DIR"

free_port() {
  "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}
RAY_HEAD_PORT=${RAY_HEAD_PORT:-6379}
RAY_DASHBOARD_PORT=${RAY_DASHBOARD_PORT:-8265}
RAY_AGENT_LISTEN_PORT=${RAY_AGENT_LISTEN_PORT:-$(free_port)}
RAY_AGENT_GRPC_PORT=${RAY_AGENT_GRPC_PORT:-$(free_port)}
RAY_RUNTIME_ENV_AGENT_PORT=${RAY_RUNTIME_ENV_AGENT_PORT:-$(free_port)}
RAY_METRICS_PORT=${RAY_METRICS_PORT:-$(free_port)}
RAY_CLIENT_SERVER_PORT=${RAY_CLIENT_SERVER_PORT:-$(free_port)}
RAY_NODE_MANAGER_PORT=${RAY_NODE_MANAGER_PORT:-$(free_port)}
RAY_OBJECT_MANAGER_PORT=${RAY_OBJECT_MANAGER_PORT:-$(free_port)}

args=(
  start --head --node-ip-address=127.0.0.1
  --port="$RAY_HEAD_PORT"
  --dashboard-host=127.0.0.1 --dashboard-port="$RAY_DASHBOARD_PORT"
  --dashboard-agent-listen-port="$RAY_AGENT_LISTEN_PORT"
  --dashboard-agent-grpc-port="$RAY_AGENT_GRPC_PORT"
  --runtime-env-agent-port="$RAY_RUNTIME_ENV_AGENT_PORT"
  --metrics-export-port="$RAY_METRICS_PORT"
  --ray-client-server-port="$RAY_CLIENT_SERVER_PORT"
  --node-manager-port="$RAY_NODE_MANAGER_PORT"
  --object-manager-port="$RAY_OBJECT_MANAGER_PORT"
  --temp-dir="$RAY_HEAD_DIR/ray"   # Ray opens its own temp dir to all (0777); ours, around it, stays 0700
  --disable-usage-stats
)
[[ -n "${RAY_HEAD_CPUS:-}" ]] && args+=(--num-cpus="$RAY_HEAD_CPUS")

cat > "$RAY_HEAD_DIR/head.env" <<ENV
export RAY_HEAD_DIR=$RAY_HEAD_DIR
export RAY_VERSION=$RAY_VERSION
export RAY_HEAD_PORT=$RAY_HEAD_PORT
export RAY_DASHBOARD_PORT=$RAY_DASHBOARD_PORT
export RAY_ADDRESS=127.0.0.1:$RAY_HEAD_PORT
export RAY_JOB_ADDRESS=http://127.0.0.1:$RAY_DASHBOARD_PORT
export RAY_AUTH_MODE=$RAY_AUTH_MODE
export RAY_USAGE_STATS_ENABLED=$RAY_USAGE_STATS_ENABLED
# agent ports: listen=$RAY_AGENT_LISTEN_PORT grpc=$RAY_AGENT_GRPC_PORT runtime-env=$RAY_RUNTIME_ENV_AGENT_PORT metrics=$RAY_METRICS_PORT client=$RAY_CLIENT_SERVER_PORT node-manager=$RAY_NODE_MANAGER_PORT object-manager=$RAY_OBJECT_MANAGER_PORT
ENV

echo "start_head.sh: $RAY ${args[*]}"
"$RAY" "${args[@]}"
echo "start_head.sh: head is up; settings in $RAY_HEAD_DIR/head.env:"
cat "$RAY_HEAD_DIR/head.env"
