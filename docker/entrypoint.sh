#!/bin/sh
# The image's entrypoint: `neuronmap serve`, configured by environment variables.
set -eu
set -- --host "${NEURONMAP_HOST:-0.0.0.0}" --port "${NEURONMAP_PORT:-8000}" \
    --runs "${NEURONMAP_RUNS:-/data/runs}" --tokens "${NEURONMAP_TOKEN_FILE:-/data/tokens.json}" \
    --executor "${NEURONMAP_EXECUTOR:-local}" --workers "${NEURONMAP_WORKERS:-1}" "$@"
if [ -n "${NEURONMAP_MODEL_ROOT:-}" ]; then set -- "$@" --model-root "$NEURONMAP_MODEL_ROOT"; fi
if [ -n "${NEURONMAP_MLFLOW_URI:-}" ]; then set -- "$@" --mlflow "$NEURONMAP_MLFLOW_URI"; fi
exec neuronmap serve "$@"
