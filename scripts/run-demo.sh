#!/usr/bin/env bash
# `make run`: serves the bundled model on 127.0.0.1 and prints a ready-to-paste curl line
# with a freshly created demo account and key. Ctrl-C stops the server.
#   PORT (default 8080) and SUPERNET_DATA_DIR (default data) change where it runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/release/supernet
model=models/SmolLM2-135M-Instruct.Q4_1.gguf
data=${SUPERNET_DATA_DIR:-data}
port=${PORT:-8080}

field() { sed -E "s/.*\"$1\":\"([^\"]+)\".*/\1/"; }
account=$("$bin" admin --data-dir "$data" accounts create --name demo --spark 100 | field account_id)
key=$("$bin" admin --data-dir "$data" keys create --account "$account" | field api_key)

"$bin" serve --model "$model" --host 127.0.0.1 --port "$port" --data-dir "$data" &
server=$!
trap 'kill -TERM $server 2>/dev/null; wait $server' INT TERM
for _ in $(seq 600); do
  # The port opens only once the model is loaded.
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
  kill -0 $server 2>/dev/null || { wait $server; exit 1; }
  sleep 0.1
done

cat <<MSG

supernet is serving on http://127.0.0.1:$port (demo account $account, 100 Spark).
Try it:

curl -N http://127.0.0.1:$port/v1/chat/completions -H "Authorization: Bearer $key" -H "Content-Type: application/json" -d '{"messages":[{"role":"user","content":"Say hello in French."}],"stream":true}'

Or from Python: openai.OpenAI(base_url="http://127.0.0.1:$port/v1", api_key="$key")
Ctrl-C stops the server.

MSG
wait $server
