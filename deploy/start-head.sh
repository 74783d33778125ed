#!/usr/bin/env bash
# Start the main server by hand: a Ray head on this machine. Then start every worker with
# deploy/start-worker.sh, then run `facenet-ray up` here (this script prints the commands).
# usage: deploy/start-head.sh            (FACENET_VENV, RAY_PORT, RAY_START_ARGS may be set)
set -euo pipefail
venv="${FACENET_VENV:-$HOME/facenet-venv}"
port="${RAY_PORT:-6379}"
case "${1:-}" in -h|--help) sed -n '2,4p' "$0"; exit 0 ;; esac

# Ray's token authentication: every node (and every client of Ray itself) needs this token.
export RAY_AUTH_MODE="${RAY_AUTH_MODE:-token}"
if [ "$RAY_AUTH_MODE" = token ]; then
    "$venv/bin/ray" get-auth-token --generate >/dev/null
fi

# shellcheck disable=SC2086  # RAY_START_ARGS is a list of options
"$venv/bin/ray" start --head --port="$port" --include-dashboard=false --disable-usage-stats \
    ${RAY_START_ARGS:-}
ip="$("$venv/bin/python" -c 'import ray.util; print(ray.util.get_node_ip_address())')"
cat <<NEXT

Ray head started at $ip:$port. Next:
  copy ~/.ray/auth_token (Ray's cluster token) to ~/.ray/auth_token on each worker machine
  on each worker machine:  deploy/start-worker.sh $ip:$port
  then here, once they joined:
    $venv/bin/facenet-ray up --detach --address auto --data-dir ~/facenet-data \\
        --gallery /path/to/gallery --servers <number of machines, this one included>
NEXT
