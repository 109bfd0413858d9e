#!/usr/bin/env bash
# Stop the head started by start_head.sh, by the process ids of its temp dir: every process
# that inherited CONCURRY_RAY_HEAD=$RAY_HEAD_DIR from start_head.sh or whose command line names
# $RAY_HEAD_DIR, and their descendants (gcs_server, raylet, dashboard, agents, log monitor,
# Ray client server, workers and job drivers). Never `ray stop`, which ends every Ray process of the user,
# including runtimes this script did not start.
#
#   cluster/stop_head.sh          SIGTERM (raylet, the rest, GCS), SIGKILL what outlives $STOP_GRACE/3 s each (default 10)
#   cluster/stop_head.sh --list   only print the pids
set -euo pipefail

# shellcheck source=cluster/common.sh
source "$(dirname "$0")/common.sh"   # RAY_HEAD_DIR
STOP_GRACE=${STOP_GRACE:-10}
unset CONCURRY_RAY_HEAD   # never match this script's own helpers

# Processes that carry the head's marker or whose command line names its dir; descendants too
# (agents and workers rename themselves: ray::DashboardAgent, ray::IDLE).
head_pids() {
  local pid cmd
  local -a roots=()
  for dir in /proc/[0-9]*; do
    pid=${dir#/proc/}
    [[ "$pid" == "$$" || "$pid" == "$BASHPID" ]] && continue
    cmd=$({ tr '\0' ' ' < "$dir/cmdline"; } 2>/dev/null) || continue
    # not these scripts (nor their subshells, which keep the environment they were forked with)
    [[ "$cmd" == *stop_head.sh* || "$cmd" == *start_head.sh* || "$cmd" == *submit_job.sh* ]] && continue
    if grep -qzxF "CONCURRY_RAY_HEAD=$RAY_HEAD_DIR" "$dir/environ" 2>/dev/null; then
      roots+=("$pid")
    # the dir followed by "/", a space or a quote: /tmp/x must not match /tmp/x2
    elif [[ "$cmd" == *"$RAY_HEAD_DIR/"* || "$cmd" == *"$RAY_HEAD_DIR "* || "$cmd" == *"$RAY_HEAD_DIR\""* ]]; then
      roots+=("$pid")
    fi
  done
  (( ${#roots[@]} )) || return 0
  # exited processes not yet reaped (state Z) are left out: they are gone already
  ps -e -o pid=,ppid=,stat= | awk -v roots="${roots[*]}" '
    BEGIN { n = split(roots, r, " "); for (i = 1; i <= n; i++) keep[r[i]] = 1 }
    $3 ~ /^Z/ { delete keep[$1]; zombie[$1] = 1; next }
    { parent[$1] = $2; pids[NR] = $1 }
    END {
      do { grew = 0
        for (i in pids) { p = pids[i]; if (!(p in keep) && (parent[p] in keep)) { keep[p] = 1; grew = 1 } }
      } while (grew)
      for (p in keep) if (!(p in zombie)) print p
    }' | sort -n
}

if [[ "${1:-}" == "--list" ]]; then
  head_pids
  exit 0
fi

alive() {  # those of the given pids still running (exited ones may linger as zombies)
  local pid
  for pid in "$@"; do
    [[ -e /proc/$pid ]] || continue
    [[ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" == Z ]] && continue
    echo "$pid"
  done
}

# SIGTERM a group, wait up to $1 seconds, SIGKILL what is left.
stop_group() {
  local grace=$1; shift
  local -a left
  (( $# )) || return 0
  echo "stop_head.sh: SIGTERM to $*"
  kill -TERM "$@" 2>/dev/null || true
  local deadline=$(( SECONDS + grace ))
  while (( SECONDS < deadline )); do
    mapfile -t left < <(alive "$@")
    (( ${#left[@]} )) || return 0
    sleep 0.2
  done
  mapfile -t left < <(alive "$@")
  if (( ${#left[@]} )); then
    echo "stop_head.sh: SIGKILL to ${left[*]}"
    kill -KILL "${left[@]}" 2>/dev/null || true
  fi
}

mapfile -t pids < <(head_pids)
if (( ${#pids[@]} == 0 )); then
  echo "stop_head.sh: no process of a head in $RAY_HEAD_DIR"
  exit 0
fi
# The order `ray stop` uses: raylet first (its agents and workers follow it), then the
# rest, GCS last. Signalled all at once, raylet and GCS wait on each other and hang.
raylets=() gcs=() rest=()
for pid in "${pids[@]}"; do
  case "$(cat "/proc/$pid/comm" 2>/dev/null)" in
    raylet) raylets+=("$pid") ;;
    gcs_server) gcs+=("$pid") ;;
    *) rest+=("$pid") ;;
  esac
done
grace=$(( STOP_GRACE / 3 > 1 ? STOP_GRACE / 3 : 1 ))
stop_group "$grace" "${raylets[@]}"
mapfile -t rest < <(alive "${rest[@]}")
stop_group "$grace" "${rest[@]}"
stop_group "$grace" "${gcs[@]}"
mapfile -t left < <(head_pids)
if (( ${#left[@]} )); then   # e.g. a worker started while we were stopping
  stop_group 1 "${left[@]}"
fi
echo "stop_head.sh: stopped"
