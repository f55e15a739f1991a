"""Streaming load against a running supernet (or any OpenAI-compatible server).

Runs REQUESTS streaming chat completions, CONCURRENCY at a time, each with a fixed
max_tokens and ignore-nothing greedy sampling, and prints one JSON line: time to first
token (p50, p95), per-stream decode rate, and aggregate completion tokens per second.

    python3 loadtest/stream.py --url http://127.0.0.1:8080 --key sn-... \
        [--concurrency 1] [--requests 8] [--max-tokens 128]
"""
import argparse
import json
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import openai


def one(client, model, max_tokens, i):
    start = time.perf_counter()
    first = None
    stream = client.chat.completions.create(
        model=model, max_tokens=max_tokens, temperature=0, stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": f"Write a long story about dragon number {i}."}],
    )
    usage = None
    for chunk in stream:
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter()
        if chunk.usage:
            usage = chunk.usage
    end = time.perf_counter()
    tokens = usage.completion_tokens if usage else 0
    decode = (tokens - 1) / (end - first) if first and tokens > 1 and end > first else 0.0
    return first - start if first else end - start, decode, tokens


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--model", default=None, help="default: the server's first model")
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--requests", type=int, default=8)
    p.add_argument("--max-tokens", type=int, default=128)
    a = p.parse_args()
    client = openai.OpenAI(base_url=a.url.rstrip("/") + "/v1", api_key=a.key, max_retries=0, timeout=600)
    model = a.model or client.models.list().data[0].id
    start = time.perf_counter()
    with ThreadPoolExecutor(a.concurrency) as pool:
        results = list(pool.map(lambda i: one(client, model, a.max_tokens, i), range(a.requests)))
    wall = time.perf_counter() - start
    ttft = sorted(r[0] for r in results)
    print(json.dumps({
        "requests": a.requests,
        "concurrency": a.concurrency,
        "ttft_p50_ms": round(statistics.median(ttft) * 1000, 1),
        "ttft_p95_ms": round(ttft[min(len(ttft) - 1, int(0.95 * len(ttft)))] * 1000, 1),
        "decode_tok_s_per_stream": round(statistics.median(r[1] for r in results), 1),
        "completion_tokens": sum(r[2] for r in results),
        "aggregate_tok_s": round(sum(r[2] for r in results) / wall, 1),
    }))


main()
