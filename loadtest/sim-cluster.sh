#!/usr/bin/env bash
# A simulated cluster on this machine, for load tests of the control plane: a private
# redis-server, a coordinator started with --allow-simulated, simulated workers (no model;
# `supernet worker --simulate`) and one front, plus an account with credit and an API key.
#
#   loadtest/sim-cluster.sh                      # prints BASE_URL and API_KEY, runs until Ctrl-C
#   loadtest/sim-cluster.sh 'target/release/loadtest run --base-url $BASE_URL --api-key $API_KEY --rate 100'
#
# With a command, runs it (with BASE_URL, API_KEY, REDIS_URL, COORDINATOR_METRICS (its
# /metrics URL) and the PIDs COORDINATOR_PID, FRONT_PID, WORKER_PIDS exported), then stops
# everything. Settings, from the environment:
#   WORKERS (1)            simulated workers in all
#   WORKER_PROCESSES (1)   processes they are spread over
#   TOKENS_PER_S (50)      PREFILL_MS (20)   JITTER (0)   MAX_BATCH (8)   MAX_QUEUE (64)
#   PORT (18700)           REDIS_PORT (a free one)   HTTP_WORKERS (0: the front's default)
#   ISOLATE (0)            1: Redis and the front run SCHED_FIFO (needs root or CAP_SYS_NICE),
#                          so the harness and the simulated workers, which stand for clients
#                          and GPU machines elsewhere, get only the CPU those two leave: as if
#                          the front and Redis had cores of their own
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${SUPERNET_BIN:-target/release/supernet}
workers=${WORKERS:-1}
processes=${WORKER_PROCESSES:-1}
port=${PORT:-18700}
data=$(mktemp -d)
pids=()
stop() {
  # Redis (the first) goes last, so the others can say they are leaving.
  for p in "${pids[@]:1}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]:1}"; do wait "$p" 2>/dev/null || true; done
  kill -TERM "${pids[0]}" 2>/dev/null || true
  wait "${pids[0]}" 2>/dev/null || true
  rm -rf "$data"
}
trap stop EXIT

redis_port=${REDIS_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --maxclients 20000 --dir "$data" >"$data/redis.log" 2>&1 &
pids+=($!)
export REDIS_URL=redis://127.0.0.1:$redis_port/0
for _ in $(seq 100); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.05; done

"$bin" coordinator --redis "$REDIS_URL" --allow-simulated --metrics-addr 127.0.0.1:0 >"$data/coordinator.log" 2>&1 &
pids+=($!)
export COORDINATOR_PID=$!
WORKER_PIDS=""
for i in $(seq 0 $((processes - 1))); do
  n=$(( workers / processes + (i < workers % processes ? 1 : 0) ))
  [ "$n" -gt 0 ] || continue
  "$bin" worker --redis "$REDIS_URL" --simulate --simulate-workers "$n" --worker-id "sim$i" \
    --tokens-per-s "${TOKENS_PER_S:-50}" --prefill-ms "${PREFILL_MS:-20}" --jitter "${JITTER:-0}" \
    --max-batch "${MAX_BATCH:-8}" --max-queue "${MAX_QUEUE:-64}" --metrics-addr 127.0.0.1:0 >"$data/worker$i.log" 2>&1 &
  pids+=($!)
  WORKER_PIDS="$WORKER_PIDS $!"
done
export WORKER_PIDS
# The load is one API key's: lift the per-key limits.
printf '[server]\nhttp_workers = %s\n[limits]\nmax_concurrent = 0\nrequests_per_minute = 0\n' "${HTTP_WORKERS:-0}" >"$data/front.toml"
"$bin" front --redis "$REDIS_URL" --host 127.0.0.1 --port "$port" --config "$data/front.toml" >"$data/front.log" 2>&1 &
pids+=($!)
export FRONT_PID=$!
if [ "${ISOLATE:-0}" = 1 ]; then
  for p in "${pids[0]}" "$FRONT_PID"; do
    chrt --fifo --all-tasks --pid 10 "$p" || { echo "ISOLATE=1: cannot make pid $p SCHED_FIFO (root or CAP_SYS_NICE needed)" >&2; exit 1; }
  done
fi

field() { sed -E "s/.*\"$1\":\"([^\"]+)\".*/\1/"; }
account=$("$bin" admin --redis "$REDIS_URL" accounts create --name loadtest --spark 1000000000 | field account_id)
export API_KEY=$("$bin" admin --redis "$REDIS_URL" keys create --account "$account" | field api_key)
export BASE_URL=http://127.0.0.1:$port/v1
# Ready when the front lists every simulated worker.
for _ in $(seq 600); do
  seen=$(curl -sf "$BASE_URL/models" -H "Authorization: Bearer $API_KEY" | sed -nE 's/.*"workers":([0-9]+).*/\1/p')
  [ "${seen:-0}" -ge "$workers" ] && break
  sleep 0.2
done
[ "${seen:-0}" -ge "$workers" ] || { echo "only ${seen:-0} of $workers simulated workers registered; logs in $data" >&2; tail -5 "$data"/*.log >&2; exit 1; }

export COORDINATOR_METRICS=$(sed -nE 's#.*metrics on (http://[^ ]+/metrics).*#\1#p' "$data/coordinator.log" | head -1)

if [ $# -gt 0 ]; then
  bash -c "$*"
else
  echo "BASE_URL=$BASE_URL"
  echo "API_KEY=$API_KEY"
  echo "$workers simulated workers; Ctrl-C stops the cluster"
  wait
fi
