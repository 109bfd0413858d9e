#!/usr/bin/env bash
# Submit examples/pool_job.py to the head started by start_head.sh, shipping this checkout
# (concurry_ray and local_backends) to the cluster as the job's working_dir.
#
#   cluster/submit_job.sh [extra `ray job submit` options...]
#
# Reads $RAY_HEAD_DIR/head.env (default /tmp/concurry-head-<uid>; refused unless ours and 0700)
# for the dashboard address and the head's Ray version; RAY_JOB_ADDRESS or RAY_DASHBOARD_PORT
# override the address. RAY_VERSION, RAY, PYTHON as in common.sh: the ray CLI must be of the
# head's Ray release. Waits for the job and exits with its status (pass --no-wait to return at once).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$HERE")
# shellcheck source=cluster/common.sh
source "$HERE/common.sh"
given_address=${RAY_JOB_ADDRESS:-}
given_port=${RAY_DASHBOARD_PORT:-}
if [[ -e "$RAY_HEAD_DIR" || -L "$RAY_HEAD_DIR" ]]; then
  check_private_dir "$RAY_HEAD_DIR"
  if [[ -f "$RAY_HEAD_DIR/head.env" ]]; then
    # shellcheck disable=SC1091
    source "$RAY_HEAD_DIR/head.env"
  fi
fi
check_ray_version
[[ -n "$given_port" ]] && RAY_JOB_ADDRESS=http://127.0.0.1:$given_port
[[ -n "$given_address" ]] && RAY_JOB_ADDRESS=$given_address
RAY_JOB_ADDRESS=${RAY_JOB_ADDRESS:-http://127.0.0.1:8265}
export RAY_AUTH_MODE=${RAY_AUTH_MODE:-disabled}
export RAY_USAGE_STATS_ENABLED=${RAY_USAGE_STATS_ENABLED:-0}

# working_dir is uploaded once (a zip of a few hundred KB), unpacked on every node and put
# first on the job's PYTHONPATH, so the shipped package wins over any installed copy.
RUNTIME_ENV=$(cat <<JSON
{
  "working_dir": "$REPO",
  "excludes": [".venv*", ".git", "**/__pycache__", "*.pyc", ".pytest_cache", "benchmarks", "docs"],
  "env_vars": {"RAY_USAGE_STATS_ENABLED": "0"}
}
JSON
)

echo "submit_job.sh: $RAY job submit --address $RAY_JOB_ADDRESS --runtime-env-json <working_dir=$REPO> -- python examples/pool_job.py"
exec "$RAY" job submit --address "$RAY_JOB_ADDRESS" --runtime-env-json "$RUNTIME_ENV" "$@" -- python examples/pool_job.py
