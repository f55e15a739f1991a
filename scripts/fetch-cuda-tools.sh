#!/usr/bin/env bash
# Puts NVRTC and ptxas (CUDA 13.0, from PyPI's nvidia-cuda-nvrtc and nvidia-cuda-nvcc
# wheels) under target/cuda-wheels, so the kernel-compile test runs on machines without a
# GPU or a CUDA toolkit. Nothing else uses them: a GPU machine brings its own CUDA.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=target/cuda-wheels
if [ -f "$DEST/nvidia/cu13/lib/libnvrtc.so.13" ] && [ -x "$DEST/nvidia/cu13/bin/ptxas" ]; then
    exit 0
fi
mkdir -p "$DEST"
python3 -m pip install --quiet --disable-pip-version-check --no-deps --target "$DEST" \
    "nvidia-cuda-nvrtc==13.0.*" "nvidia-cuda-nvcc==13.0.*"
