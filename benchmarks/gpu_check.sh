#!/usr/bin/env bash
# The device check: on a machine with an NVIDIA GPU and TensorRT (workstation, server or Jetson),
# builds FP16 and INT8 TensorRT engines of the default model and glia_vit_small, checks them
# against ONNX Runtime FP32 on the default model's held-out set, runs `glia-edge bench --targets
# torch,onnx,trt` on the GPU and writes benchmarks/RESULTS-gpu.md (always, with a FAIL row or note
# for any step that raised). Unattended, under 10 min.
#
#   benchmarks/gpu_check.sh [--out DIR] [--models default,glia_vit_small] [--time-limit 600] [--no-bench]
#   benchmarks/gpu_check.sh --help
#
# Exit codes: 0 passed, 1 a check failed its gate, 2 bad arguments, 3 no GPU/TensorRT here (says
# why, at once), 4 out of time, 5 a step raised an error (build, bench: RESULTS-gpu.md says which).
# PYTHON picks the interpreter (default: python3 on PATH, e.g. your venv's).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${PYTHON:-python3}"
if ! command -v "$python" >/dev/null 2>&1; then
    echo "gpu_check: no Python interpreter '$python' (set PYTHON=/path/to/venv/bin/python)" >&2
    exit 3
fi
if ! "$python" -c "import glia_edge.benchmarks.gpu_check" 2>/dev/null; then
    echo "gpu_check: this glia-edge (with benchmarks/gpu_check.py) is not importable by $python: pip install -e '.[export,bench,tensorrt-cu12]' (or see README 'Jetson')" >&2
    exit 3
fi
cd "$here/.."
exec "$python" -m glia_edge.benchmarks.gpu_check "$@"
