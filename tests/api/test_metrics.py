"""`/metrics` on every process: the text must pass the Prometheus client's own text-format
parser, and a known load must move the right counters by the right amounts (tokens as
billed, requests by finish reason, errors by type, placements, holds and settles)."""
import json
import re
from pathlib import Path

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import MODEL_ID, poll

HI = [{"role": "user", "content": "Say hi"}]


def scrape(url):
    """Every sample of `url`/metrics, parsed by prometheus_client: {(name, labels): value}."""
    r = httpx.get(url + "/metrics", timeout=30)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = {}
    for family in text_string_to_metric_families(r.text):
        assert family.documentation, f"{family.name} has no HELP"
        for s in family.samples:
            key = (s.name, tuple(sorted(s.labels.items())))
            assert key not in samples, f"duplicate sample {key}"
            samples[key] = s.value
    return samples


def value(samples, name, **labels):
    """The sum of the samples of `name` whose labels include `labels` (0 if none)."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


def delta(before, after, name, **labels):
    return value(after, name, **labels) - value(before, name, **labels)


def known_load(url, key):
    """Three requests that finish (two by length, one streamed by stop or length), one 400
    and one 401. Returns the usages."""
    c = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=120)
    usages = [c.chat.completions.create(model=MODEL_ID, messages=HI, max_tokens=n, temperature=0).usage for n in (3, 5)]
    stream = c.chat.completions.create(model=MODEL_ID, messages=HI, max_tokens=6, temperature=0, stream=True, stream_options={"include_usage": True})
    usages += [chunk.usage for chunk in stream if chunk.usage]
    with pytest.raises(openai.BadRequestError):
        c.chat.completions.create(model=MODEL_ID, messages=[], max_tokens=3)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=url + "/v1", api_key="sk-wrong", max_retries=0).chat.completions.create(model=MODEL_ID, messages=HI)
    return usages


def assert_front_counted(before, after, usages):
    assert delta(before, after, "supernet:prompt_tokens_total", model=MODEL_ID) == sum(u.prompt_tokens for u in usages)
    assert delta(before, after, "supernet:generation_tokens_total", model=MODEL_ID) == sum(u.completion_tokens for u in usages)
    assert delta(before, after, "supernet:request_success_total", model=MODEL_ID) == 3
    assert delta(before, after, "supernet:request_success_total", finished_reason="length") >= 2
    for h in ("time_to_first_token_seconds", "e2e_request_latency_seconds", "request_queue_time_seconds"):
        assert delta(before, after, f"supernet:{h}_count", model=MODEL_ID) == 3, h
        assert delta(before, after, f"supernet:{h}_bucket", model=MODEL_ID, le="+Inf") == 3, h
    # One gap per token after the first.
    assert delta(before, after, "supernet:inter_token_latency_seconds_count", model=MODEL_ID) == sum(u.completion_tokens - 1 for u in usages)
    # Only the streamed request relays chunks; at least one piece of text, each relayed once.
    relayed = delta(before, after, "supernet:front_relay_seconds_count")
    assert 1 <= relayed <= usages[-1].completion_tokens, relayed
    assert delta(before, after, "supernet:request_errors_total", type="invalid_request_error", status="400") == 1
    assert delta(before, after, "supernet:request_errors_total", type="authentication_error", status="401") == 1
    assert delta(before, after, "supernet:billing_holds_total", outcome="held") == 3
    assert delta(before, after, "supernet:billing_settles_total", outcome="settled") == 3
    assert value(after, "supernet:requests_in_flight") == 0


def test_serve_metrics_parse_and_count_a_known_load(server, account):
    key = account[1]
    before = scrape(server.url)
    usages = known_load(server.url, key)
    after = poll(lambda: (lambda s: s if delta(before, s, "supernet:worker_jobs_finished_total", outcome="completed") == 3 else None)(scrape(server.url)), "the worker's count")
    assert_front_counted(before, after, usages)
    assert value(after, "supernet:workers", model=MODEL_ID, state="serving") == 1
    assert value(after, "supernet:num_requests_running") == 0
    assert 0 <= value(after, "supernet:kv_cache_usage_perc") <= 1
    assert delta(before, after, "supernet:worker_batch_size_count") > 0


def test_every_cluster_process_serves_metrics_that_move_under_load(cluster):
    cluster.coordinator("coord1")
    cluster.worker("w1")
    front = cluster.front("front1")
    cluster.wait_workers(front, 1)
    coordinator, worker = cluster.metrics_url("coord1"), cluster.metrics_url("w1")
    for url in (coordinator, worker):
        assert httpx.get(url + "/healthz", timeout=10).json() == {"status": "ok"}
    _, key = cluster.account()
    before = {u: scrape(u) for u in (front, coordinator, worker)}
    usages = known_load(front, key)
    after = {front: scrape(front), coordinator: scrape(coordinator)}
    after[worker] = poll(lambda: (lambda s: s if delta(before[worker], s, "supernet:worker_jobs_finished_total", worker="w1", outcome="completed") == 3 else None)(scrape(worker)), "the worker's count")

    assert_front_counted(before[front], after[front], usages)
    # Each piece of text the front relayed (the streamed request's) was also timed from its
    # entry's append to the front's stream (Redis's clock), as the memory bus cannot.
    relayed = delta(before[front], after[front], "supernet:front_relay_seconds_count")
    delayed = delta(before[front], after[front], "supernet:front_token_delay_seconds_count")
    assert relayed >= 1 and delayed == relayed, (relayed, delayed)
    # And every piece but the stream's first had its gap to the one before timed.
    assert delta(before[front], after[front], "supernet:front_token_gap_added_seconds_count") == relayed - 1
    c0, c1 = before[coordinator], after[coordinator]
    assert value(c1, "supernet:coordinator_is_leader") == 1
    assert delta(c0, c1, "supernet:placements_total", outcome="placed") == 3
    assert delta(c0, c1, "supernet:placement_seconds_count") == 3
    assert delta(c0, c1, "supernet:placement_decision_seconds_count") == 3
    assert value(c1, "supernet:coordinator_queue_depth") == 0
    assert value(c1, "supernet:workers", model=MODEL_ID, state="serving") == 1
    w1 = after[worker]
    assert value(w1, "supernet:num_requests_running", worker="w1") == 0
    assert value(w1, "supernet:worker_kv_blocks", worker="w1", state="total") > 0
    # The Grafana dashboard only queries metrics these processes serve.
    served = {n for samples in after.values() for n, _ in samples}
    dashboard = (Path(__file__).resolve().parents[2] / "deploy/grafana/supernet.json").read_text()
    # (Failovers show once one happened: test_cluster.py counts them.)
    queried = set(re.findall(r"supernet:[a-z0-9_]+", dashboard)) - {"supernet:failovers_total"}
    assert len(queried) >= 20 and queried <= served, f"the dashboard queries metrics nobody serves: {queried - served}"
    # Each process shows its own role's metrics only.
    assert value(w1, "supernet:placements_total") == 0 and not any(n.startswith("supernet:placement") for n, _ in w1)
    assert not any(n.startswith("supernet:prompt_tokens") for n, _ in c1)


def test_json_logs_are_one_object_per_line(cluster):
    cluster.coordinator("coord1", "--log-format", "json")
    cluster.metrics_url("coord1")
    lines = [line for line in cluster.logs("coord1").splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]
    assert any(r["fields"]["message"].startswith("metrics on http://") for r in records)
    assert all({"timestamp", "level", "fields"} <= r.keys() for r in records)
