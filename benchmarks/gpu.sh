#!/usr/bin/env bash
# Questions 1, 3 and 4 on CUDA, in under 8 minutes on one recent GPU.
# Writes benchmarks/results-gpu.json and benchmarks/results-gpu.md (one table, as make bench).
#   bash benchmarks/gpu.sh            # uses .venv/bin/python when present, else python
#   PY=/path/to/python bash benchmarks/gpu.sh
# Sizes: question 1 at the issue's size (512 x 128 tokens), question 3 on the whole
# balanced sentiment probe set (4200 sentences), question 4 at the issue's size (12 layers,
# n = 4096, d = 768; cka_matrix and both baselines in float64 on the GPU; the streaming-memory
# row stays on the CPU). Each question is capped at 200 s.
# A machine without the PyPI model package: NEURONMAP_MINILM_PATH=/folder/of/all-MiniLM-L6-v2.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}"
"$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else "gpu.sh: torch sees no CUDA device")'
export HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total,utilization.gpu --format=csv || true
exec "$PY" benchmarks/run_all.py --only 1 3 4 --device cuda --timeout 200 \
    --gpu-sizes --out benchmarks/results-gpu
