"""The load harness end to end: `loadtest run` against a real `supernet serve`, its JSON
report checked against the published schema and against the server's own billing; and
`supernet worker --simulate` in a real cluster, which a coordinator ignores unless it was
started with --allow-simulated; and `supernet bench placement`, the coordinator driven straight
through the bus."""
import json
import subprocess
import time

import httpx
import jsonschema
import openai

from conftest import REPO, poll

LOADTEST = REPO / "target/release/loadtest"
SCHEMA = json.loads((REPO / "loadtest/report.schema.json").read_text())


def loadtest(*args, timeout=300):
    out = subprocess.run([str(LOADTEST), *args], capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_a_short_run_against_serve_reports_what_the_server_billed(server, tmp_path):
    account, key, _ = server.account(spark="100")
    before = server.balances(account)[0]
    svg = tmp_path / "latency.svg"
    out = loadtest("run", "--base-url", server.url + "/v1", "--api-key", key, "--concurrency", "2,3", "--requests", "6",
                   "--max-tokens", "8", "--json", "--svg", str(svg))
    lines = [json.loads(line) for line in out.strip().splitlines()]
    assert len(lines) == 2, "one report per level"
    for report in lines:
        jsonschema.validate(report, SCHEMA)
        assert report["requests"] == {"sent": 6, "completed": 6, "failed": 0}
        assert 0 < report["tokens"]["output"] <= 6 * 8
        assert report["ttft"]["count"] == 6 and report["e2e"]["count"] == 6
        assert report["ttft"]["p50"] <= report["ttft"]["p99"] <= report["e2e"]["max"]
        assert report["throughput"]["requests_per_s"] > 0
    assert [r["load"] for r in lines] == [{"mode": "concurrency", "level": 2.0}, {"mode": "concurrency", "level": 3.0}]
    # Every request it counted (and its probe) was billed; nothing else was.
    assert server.balances(account)[0] < before
    text = svg.read_text()
    assert text.startswith("<svg") and "Latency against load" in text and "TTFT p50" in text


def test_the_same_seed_sends_the_same_requests_and_errors_are_counted(server):
    _, key, _ = server.account(spark="100")
    first = json.loads(loadtest("run", "--base-url", server.url + "/v1", "--api-key", key, "--rate", "20", "--requests", "4",
                                "--max-tokens", "4", "--json", "--seed", "7").strip().splitlines()[-1])
    again = json.loads(loadtest("run", "--base-url", server.url + "/v1", "--api-key", key, "--rate", "20", "--requests", "4",
                                "--max-tokens", "4", "--json", "--seed", "7").strip().splitlines()[-1])
    assert first["tokens"]["prompt"] == again["tokens"]["prompt"]
    # A model the server does not serve: every request fails with the server's own error.
    bad = subprocess.run([str(LOADTEST), "run", "--base-url", server.url + "/v1", "--api-key", "sn-wrong", "--concurrency", "1",
                          "--requests", "2"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "401" in bad.stderr and "refused a probe request" in bad.stderr


def test_simulated_workers_get_jobs_only_where_simulation_is_allowed(cluster):
    cluster.coordinator("coord1")
    cluster.spawn("sim", "worker", "--redis", cluster.redis_url, "--simulate", "--simulate-workers", "2", "--worker-id", "sim",
                  "--tokens-per-s", "200", "--prefill-ms", "5", "--metrics-addr", "127.0.0.1:0")
    url = cluster.front("front1")
    _, key = cluster.account(spark="100")
    poll(lambda: "ignoring a simulated worker" in cluster.logs("coord1"), "the coordinator to ignore the simulator")
    time.sleep(1.5)
    assert httpx.get(url + "/readyz", timeout=10).status_code == 503, "no worker the front may use"
    client = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0)
    try:
        client.chat.completions.create(model="simulated", messages=[{"role": "user", "content": "hi"}])
        raise AssertionError("a simulated worker served a cluster without --allow-simulated")
    except openai.NotFoundError as e:
        assert e.body["code"] == "model_not_found"

    cluster.kill("coord1")
    cluster.coordinator("coord2", "--allow-simulated")
    cluster.wait_workers(url, 2)
    stream = client.chat.completions.create(model="simulated", messages=[{"role": "user", "content": "hi"}], max_tokens=6, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == " lorem ipsum dolor sit amet sed"
    assert chunks[-1].usage.completion_tokens == 6
    assert chunks[-1].choices == [] and any(c.choices and c.choices[0].finish_reason == "length" for c in chunks)
    models = httpx.get(url + "/v1/models", headers={"Authorization": f"Bearer {key}"}, timeout=10).json()["data"]
    assert [(m["id"], m["workers"]) for m in models] == [("simulated", 2)]


def bench_placement(cluster, *args):
    out = subprocess.run([str(REPO / "target/release/supernet"), "bench", "placement", "--redis", cluster.redis_url, "--json", *args],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_bench_placement_times_every_job_through_the_coordinator(cluster):
    cluster.coordinator("coord1")
    cluster.spawn("sim", "worker", "--redis", cluster.redis_url, "--simulate", "--simulate-workers", "4", "--worker-id", "sim",
                  "--tokens-per-s", "1000", "--prefill-ms", "0", "--metrics-addr", "127.0.0.1:0")
    poll(lambda: "ignoring a simulated worker" in cluster.logs("coord1"), "the coordinator to ignore the simulator")
    # Without --allow-simulated no worker serves the model: every job is refused, none lost.
    r = bench_placement(cluster, "--rate", "100", "--duration", "1")
    assert (r["sent"], r["refused"], r["placed"], r["unanswered"]) == (100, 100, 0, 0)

    cluster.kill("coord1")
    cluster.coordinator("coord2", "--allow-simulated")
    cluster.wait_workers(cluster.front("front1"), 4)
    coordinator = cluster.procs["coord2"][0].pid
    r = bench_placement(cluster, "--rate", "300", "--duration", "2", "--max-tokens", "3", "--cpu-of", str(coordinator))
    assert (r["sent"], r["placed"], r["finished"], r["refused"], r["unanswered"]) == (600, 600, 600, 0, 0)
    assert 0 < r["placement_ms"]["p50"] <= r["placement_ms"]["p99"] <= r["placement_ms"]["max"]
    # A job is placed and taken before it ends. (The coordinator's `Placed` and the worker's
    # `Accepted` travel on different streams and race: their medians differ by microseconds,
    # either way.)
    assert max(r["placement_ms"]["p50"], r["accepted_ms"]["p50"]) <= r["finished_ms"]["p50"]
    assert 0 < r["cpu_percent"] < 200
    assert 250 < r["placed_per_s"] < 350
