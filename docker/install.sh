#!/bin/sh
# The image's install steps. The Dockerfile runs them, and scripts/image_smoke.py runs the very same
# file in a fresh virtual environment (tests, and machines without a container runtime).
#   sh docker/install.sh PYTHON [SRC]
# NEURONMAP_OFFLINE_SITE=DIR: take the dependencies from an existing site-packages (no network),
# install only NeuronMap itself.
set -eu
PY=${1:-python}
SRC=${2:-.}
TORCH_INDEX_URL=${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}
if [ -n "${NEURONMAP_OFFLINE_SITE:-}" ]; then
    SITE=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    echo "$NEURONMAP_OFFLINE_SITE" > "$SITE/_neuronmap_offline_deps.pth"
    "$PY" -m pip install --quiet --disable-pip-version-check --no-deps --no-index --no-build-isolation "$SRC"
else
    # CPU torch, pinned by constraints.txt, from the PyTorch CPU index (the default wheel carries CUDA)
    "$PY" -m pip install --quiet --no-cache-dir -c "$SRC/constraints.txt" --index-url "$TORCH_INDEX_URL" torch
    "$PY" -m pip install --quiet --no-cache-dir -c "$SRC/constraints.txt" "$SRC[service,mlflow,hf]"
fi
"$PY" -c "import fastapi, uvicorn, httpx, plotly, neuronmap.service.app; print('neuronmap service installed')"
