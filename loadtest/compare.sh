#!/usr/bin/env bash
# `loadtest compare` of llama.cpp's llama-server (A: --parallel 8, the anchor) and
# `supernet serve` (B) on this machine, both on loopback with the bundled model. Both start
# first; the harness then runs the same requests against A, then B, and prints the table.
# LLAMA_SERVER names the llama-server binary (built from the llama.cpp copy in PyPI's
# llama-cpp-python 0.3.36 sdist; see docs/BENCHMARKS.md). Extra arguments go to
# `loadtest compare` (default: --concurrency 1,8 --requests 32 --max-tokens 64).
#   LLAMA_SERVER=... loadtest/compare.sh [--concurrency 8 --requests 64 --json --svg out.svg]
set -euo pipefail
cd "$(dirname "$0")/.."
: "${LLAMA_SERVER:?set LLAMA_SERVER to the llama-server binary}"
model=models/SmolLM2-135M-Instruct.Q4_1.gguf
bin=${SUPERNET_BIN:-target/release/supernet}
data=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait; rm -rf "$data"' EXIT

wait_port() {
  for _ in $(seq 600); do
    curl -sf "http://127.0.0.1:$1$2" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  echo "nothing answered on port $1" >&2; exit 1
}

"$LLAMA_SERVER" -m "$model" --host 127.0.0.1 --port 18200 -t 2 --parallel 8 -c 8192 >"$data/llama.log" 2>&1 &
pids+=($!)
field() { sed -E "s/.*\"$1\":\"([^\"]+)\".*/\1/"; }
account=$("$bin" admin --data-dir "$data" accounts create --name bench --spark 1000000 | field account_id)
key=$("$bin" admin --data-dir "$data" keys create --account "$account" | field api_key)
"$bin" serve --model "$model" --host 127.0.0.1 --port 18201 --data-dir "$data" --threads 2 ${SUPERNET_FLAGS:-} >"$data/serve.log" 2>&1 &
pids+=($!)
wait_port 18200 /health
wait_port 18201 /readyz
[ $# -gt 0 ] || set -- --concurrency 1,8 --requests 32 --max-tokens 64
target/release/loadtest compare --a http://127.0.0.1:18200/v1 --a-label llama-server --b http://127.0.0.1:18201/v1 --b-key "$key" --b-label supernet \
  --a-model SmolLM2-135M-Instruct "$@"
