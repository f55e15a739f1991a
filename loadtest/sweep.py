"""Continuous-batching sweep against any OpenAI-compatible server (supernet, llama-server).

For each concurrency level, runs REQUESTS streaming chat completions (greedy, MAX_TOKENS,
a short user message each), CONCURRENCY at a time, and prints one JSON line: aggregate
generated tokens per second, inter-token latency (the gaps between streamed chunks, over
all requests) p50 / p99, and time to first token p50 / p99. The client reads the raw
event stream with the standard library, so it takes little of the CPU it shares.

    python3 loadtest/sweep.py --url http://127.0.0.1:8080 [--key sn-...] \\
        [--concurrency 1,4,8,16] [--requests 32] [--max-tokens 64]
"""
import argparse
import http.client
import json
import statistics
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor


def pct(values, q):
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))] if v else 0.0


def stream_one(url, key, model, max_tokens, i):
    """One streamed completion: (ttft s, [chunk gaps s], completion tokens)."""
    u = urllib.parse.urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
    body = {
        "model": model, "max_tokens": max_tokens, "temperature": 0, "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": f"Write a long story about dragon number {i}."}],
    }
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    start = time.perf_counter()
    conn.request("POST", "/v1/chat/completions", json.dumps(body), headers)
    resp = conn.getresponse()
    if resp.status != 200:
        raise RuntimeError(f"HTTP {resp.status}: {resp.read()[:300]!r}")
    times, usage = [], None
    for raw in resp:
        line = raw.strip()
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if data == b"[DONE]":
            break
        chunk = json.loads(data)
        if chunk.get("usage"):
            usage = chunk["usage"]
        choices = chunk.get("choices") or []
        if choices and (choices[0].get("delta") or {}).get("content"):
            times.append(time.perf_counter())
    conn.close()
    tokens = usage["completion_tokens"] if usage else len(times)
    ttft = (times[0] if times else time.perf_counter()) - start
    return ttft, [b - a for a, b in zip(times, times[1:])], tokens


def level(url, key, model, concurrency, requests, max_tokens):
    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(lambda i: stream_one(url, key, model, max_tokens, i), range(requests)))
    wall = time.perf_counter() - start
    gaps = [g for r in results for g in r[1]]
    ttft = [r[0] for r in results]
    tokens = sum(r[2] for r in results)
    return {
        "concurrency": concurrency,
        "requests": requests,
        "completion_tokens": tokens,
        "aggregate_tok_s": round(tokens / wall, 1),
        "itl_p50_ms": round(statistics.median(gaps) * 1000, 1) if gaps else None,
        "itl_p99_ms": round(pct(gaps, 0.99) * 1000, 1),
        "ttft_p50_ms": round(statistics.median(ttft) * 1000, 1),
        "ttft_p99_ms": round(pct(ttft, 0.99) * 1000, 1),
    }


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True)
    p.add_argument("--key", default="", help="API key (llama-server needs none)")
    p.add_argument("--model", default=None, help="default: the server's first model")
    p.add_argument("--concurrency", default="1,4,8,16", help="comma-separated levels")
    p.add_argument("--requests", type=int, default=32, help="requests per level")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--label", default="", help="a name for the server, echoed in every line")
    a = p.parse_args()
    model = a.model
    if model is None:
        u = urllib.parse.urlparse(a.url)
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
        conn.request("GET", "/v1/models", headers={"Authorization": f"Bearer {a.key}"} if a.key else {})
        model = json.loads(conn.getresponse().read())["data"][0]["id"]
    stream_one(a.url, a.key, model, 8, 0)  # warm-up
    for c in (int(x) for x in a.concurrency.split(",")):
        print(json.dumps({"server": a.label, **level(a.url, a.key, model, c, a.requests, a.max_tokens)}), flush=True)


main()
