"""Time to first token with and without a cached prefix.

For each of ROUNDS fresh system prompts of about 400 tokens (a different one per round, so
each round's first request finds nothing cached), sends two streamed chat requests one
after the other: the first with one user question, the second with another. With prefix
caching the second computes only its own tokens after the shared system prompt. Prints one
JSON line per round and a summary: median TTFT of first and second requests and their ratio.

    python3 loadtest/prefix_ttft.py --url http://127.0.0.1:8080 --key sn-... [--rounds 5]
"""
import argparse
import http.client
import json
import statistics
import time
import urllib.parse

FACTS = [
    "The keepers trimmed the wicks every four hours through the night.",
    "Each lighthouse had its own pattern of flashes so sailors could tell them apart.",
    "Supply boats came once a fortnight, weather permitting.",
    "The log recorded wind, sea state, visibility and every passing ship.",
    "Fog signals sounded twice a minute whenever visibility fell below five miles.",
]


def system_prompt(round_no, words=300):
    text = f"You are archivist number {round_no} of the Northern Lighthouse Board. "
    while len(text.split()) < words:
        text += " ".join(FACTS) + " "
    return text


def ttft(url, key, model, system, question):
    u = urllib.parse.urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
    body = {
        "model": model, "max_tokens": 8, "temperature": 0, "stream": True, "stream_options": {"include_usage": True},
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": question}],
    }
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    start = time.perf_counter()
    conn.request("POST", "/v1/chat/completions", json.dumps(body), headers)
    resp = conn.getresponse()
    if resp.status != 200:
        raise RuntimeError(f"HTTP {resp.status}: {resp.read()[:300]!r}")
    first, usage = None, None
    for raw in resp:
        line = raw.strip()
        if not line.startswith(b"data:") or line[5:].strip() == b"[DONE]":
            continue
        chunk = json.loads(line[5:])
        if first is None and chunk.get("choices") and (chunk["choices"][0].get("delta") or {}).get("content"):
            first = time.perf_counter()
        usage = chunk.get("usage") or usage
    conn.close()
    return (first or time.perf_counter()) - start, usage["prompt_tokens"] if usage else None


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--model", default=None)
    p.add_argument("--rounds", type=int, default=5)
    a = p.parse_args()
    model = a.model
    if model is None:
        u = urllib.parse.urlparse(a.url)
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
        conn.request("GET", "/v1/models", headers={"Authorization": f"Bearer {a.key}"})
        model = json.loads(conn.getresponse().read())["data"][0]["id"]
    firsts, seconds = [], []
    for r in range(a.rounds):
        system = system_prompt(r)
        t1, n1 = ttft(a.url, a.key, model, system, "When did the supply boats come?")
        t2, n2 = ttft(a.url, a.key, model, system, "What did the log record?")
        firsts.append(t1)
        seconds.append(t2)
        print(json.dumps({"round": r, "prompt_tokens": [n1, n2], "ttft_first_ms": round(t1 * 1000, 1), "ttft_second_ms": round(t2 * 1000, 1), "ratio": round(t2 / t1, 3)}), flush=True)
    m1, m2 = statistics.median(firsts), statistics.median(seconds)
    print(json.dumps({"summary": True, "ttft_first_p50_ms": round(m1 * 1000, 1), "ttft_second_p50_ms": round(m2 * 1000, 1), "ratio": round(m2 / m1, 3)}))


main()
