#!/usr/bin/env bash
# Install facenet_ray from this checkout into a virtual environment, on any machine of the
# cluster (cluster.yaml's setup_commands run it on every node).
# usage: deploy/install.sh [VENV]      (default ~/facenet-venv; PYTHON picks the interpreter)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
venv="${1:-$HOME/facenet-venv}"
python="${PYTHON:-python3}"

test -x "$venv/bin/python" || "$python" -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q "$repo"
# face_recognition pins the source-only `dlib` (a 15+ minute compile); dlib-bin, a dependency
# of facenet_ray, provides the same module.
"$venv/bin/python" -m pip install -q --no-deps face_recognition==1.3.0
echo "facenet_ray installed in $venv: $("$venv/bin/facenet-ray" --help | head -1)"
