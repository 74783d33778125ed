#!/usr/bin/env bash
# Join this machine to the facenet_ray cluster as a worker server: its Ray node gets a shard
# that holds its share of the gallery (by its CPU count) under the same data dir path.
# usage: deploy/start-worker.sh HEAD_IP:PORT     (FACENET_VENV and RAY_START_ARGS may be set)
set -euo pipefail
venv="${FACENET_VENV:-$HOME/facenet-venv}"
case "${1:-}" in
    ""|-h|--help) sed -n '2,4p' "$0"; exit "$([ -n "${1:-}" ] && echo 0 || echo 2)" ;;
esac

# Ray's token authentication: the head's token, from ~/.ray/auth_token or $RAY_AUTH_TOKEN.
export RAY_AUTH_MODE="${RAY_AUTH_MODE:-token}"
if [ "$RAY_AUTH_MODE" = token ] && [ -z "${RAY_AUTH_TOKEN:-}" ] \
        && [ ! -s "${RAY_AUTH_TOKEN_PATH:-$HOME/.ray/auth_token}" ]; then
    echo "start-worker.sh: copy the head's ~/.ray/auth_token to this machine first" >&2
    exit 1
fi
# shellcheck disable=SC2086  # RAY_START_ARGS is a list of options
"$venv/bin/ray" start --address="$1" --disable-usage-stats ${RAY_START_ARGS:-}
echo "joined $1; the main server picks this machine up at its next heartbeat"
