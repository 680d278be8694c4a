#!/usr/bin/env bash
# Regenerates the betterproto2 modules under proto/ from the .proto sources.
# Usage (from the repo root): make proto   (or: bash proto/generate.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
BIN=$(dirname "$PY")
find proto -mindepth 1 -name '*.py' ! -path 'proto/__init__.py' -delete
PATH="$BIN:$PATH" "$PY" -m grpc_tools.protoc -I proto --python_betterproto2_out=proto \
  $(cd proto && find . -name '*.proto' | sed 's|^\./|proto/|' | sort)
