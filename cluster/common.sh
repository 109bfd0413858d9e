# shellcheck shell=bash
# Sourced by the cluster scripts: the Ray release they run, the ray CLI, the head's private dir.
#
#   RAY_VERSION   the Ray release of the head (default: cluster/ray-version, which rayjob.yaml matches)
#   RAY           the ray CLI (default: `ray` next to $PYTHON, else on PATH)
#   PYTHON        python used to pick free ports (default: python3)
#   RAY_HEAD_DIR  the head's temp dir (default /tmp/concurry-head-<uid>); see check_private_dir

RAY_VERSION=${RAY_VERSION:-$(<"$(dirname "${BASH_SOURCE[0]}")/ray-version")}
PYTHON=${PYTHON:-python3}
if [[ -z "${RAY:-}" ]]; then
  candidate="$(dirname "$(command -v "$PYTHON")")/ray"
  if [[ -x "$candidate" ]]; then RAY=$candidate; else RAY=ray; fi
fi
RAY_HEAD_DIR=${RAY_HEAD_DIR:-/tmp/concurry-head-$(id -u)}
RAY_HEAD_DIR=${RAY_HEAD_DIR%/}

die() {
  echo "$(basename "$0"): $*" >&2
  exit 1
}

# Driver and cluster must run the same Ray release.
check_ray_version() {
  local found
  found=$("$RAY" --version 2>/dev/null) || die "cannot run the ray CLI ($RAY)"
  found=${found##* }
  [[ "$found" == "$RAY_VERSION" ]] ||
    die "$RAY is Ray $found, but this head runs Ray $RAY_VERSION (cluster/ray-version, or RAY_VERSION); driver and cluster must match"
}

# The head's dir holds head.env, which submit_job.sh sources, and Ray's sockets and session
# files: use it only if it is a real directory of ours that nobody else can open.
check_private_dir() {
  local dir=$1 mode
  [[ -d "$dir" && ! -L "$dir" ]] || die "$dir is not a directory"
  [[ -O "$dir" ]] || die "$dir belongs to someone else; set RAY_HEAD_DIR to a directory of yours (e.g. one made by mktemp -d)"
  mode=$(stat -c %a "$dir")
  (( (8#$mode & 8#077) == 0 )) || die "$dir has mode $mode: others can reach into it; chmod 700 it, or use another RAY_HEAD_DIR"
}
