#!/usr/bin/env bash
# Runs loadtest/sweep.py against llama.cpp's llama-server (--parallel 8, the anchor) and
# against `supernet serve`, one after the other on this machine, and prints both sets of
# JSON lines. LLAMA_SERVER names the llama-server binary (built from the llama.cpp copy in
# PyPI's llama-cpp-python 0.3.36 sdist; see docs/BENCHMARKS.md).
#   loadtest/compare.sh [extra sweep.py flags, e.g. --concurrency 8 --requests 32]
set -euo pipefail
cd "$(dirname "$0")/.."
: "${LLAMA_SERVER:?set LLAMA_SERVER to the llama-server binary}"
model=models/SmolLM2-135M-Instruct.Q4_1.gguf
bin=target/release/supernet
data=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; rm -rf "$data"' EXIT

wait_port() {
  for _ in $(seq 600); do
    if curl -sf "http://127.0.0.1:$1$2" >/dev/null 2>&1; then return 0; fi
    kill -0 "$pid" 2>/dev/null || { echo "the server exited" >&2; exit 1; }
    sleep 0.2
  done
  echo "the server did not come up" >&2; exit 1
}

"$LLAMA_SERVER" -m "$model" --host 127.0.0.1 --port 18200 -t 2 --parallel 8 -c 8192 >"$data/llama.log" 2>&1 &
pid=$!
wait_port 18200 /health
python3 loadtest/sweep.py --url http://127.0.0.1:18200 --label llama-server "$@"
kill "$pid"; wait "$pid" 2>/dev/null || true

field() { sed -E "s/.*\"$1\":\"([^\"]+)\".*/\1/"; }
account=$("$bin" admin --data-dir "$data" accounts create --name bench --spark 1000 | field account_id)
key=$("$bin" admin --data-dir "$data" keys create --account "$account" | field api_key)
"$bin" serve --model "$model" --port 18201 --data-dir "$data" --threads 2 ${SUPERNET_FLAGS:-} >"$data/serve.log" 2>&1 &
pid=$!
wait_port 18201 /readyz
python3 loadtest/sweep.py --url http://127.0.0.1:18201 --key "$key" --label supernet "$@"
