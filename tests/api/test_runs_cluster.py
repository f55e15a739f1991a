"""Durable runs in a cluster: two fronts, a coordinator, an LLM worker and a media worker as
separate processes on one Redis (the media store a shared folder, ComfyUI stood in for by
tests/support/comfyui_standin.py). The front executing a run is killed with SIGKILL in the
middle of a hosted call, or of an LLM round: the other front adopts the run once its lease
ends, and a client following the run on that front sees one gapless log with exactly one
`run_resumed`, the media backend gets the job once, and the ledger settles each job once."""
import json
import re
import threading

import httpx

from conftest import MODEL_ID, poll
from test_hosted_tools import FORCE_IMAGE, Standin, png_ok

TERMINAL = {"run_completed", "run_partial_failure", "run_failed", "run_cancelled"}


def sse(url, key, run_id, last_event_id=None, until=TERMINAL, out=None, stop_after=None):
    """The run's events from the SSE stream at `url` (after `last_event_id`), until a type in
    `until`, the server closing the stream, or `stop_after` events."""
    out = [] if out is None else out
    headers = {"Authorization": f"Bearer {key}"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = str(last_event_id)
    with httpx.stream("GET", f"{url}/v1/chat/runs/{run_id}/events/stream", headers=headers, timeout=300) as r:
        assert r.status_code == 200, r.read()
        event = None
        for line in r.iter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:") and event != "run_status":
                e = json.loads(line[5:])
                out.append(e)
                if e["type"] in until or (stop_after and len(out) >= stop_after):
                    return out
    return out


def start(cluster, tmp_path, standin):
    config = tmp_path / "front.toml"
    config.write_text("[runs]\nlease_secs = 3\n[tools]\nmax_rounds = 1\n")
    store = tmp_path / "media"
    cluster.coordinator("coord")
    cluster.worker("w1", 2)
    cluster.spawn("m1", "worker", "--redis", cluster.redis_url, "--kind", "media", "--worker-id", "m1",
                  "--backend", f"comfyui={standin.url}", "--media-store", str(store))
    urls = []
    for name in ("f1", "f2"):
        cluster.spawn(name, "front", "--redis", cluster.redis_url, "--port", "0", "--media-store", str(store),
                      "--config", str(config))
        urls.append(poll(lambda: re.search(r"listening on (http://[\d.]+:\d+)", cluster.logs(name)), f"{name}", 60).group(1))
    for u in urls:
        cluster.wait_workers(u, 2)
    return urls


def assert_one_settlement_per_job(ledger):
    settles = [e["reference"] for e in ledger if e["kind"] == "settle"]
    assert len(settles) == len(set(settles)), ledger


def test_a_front_killed_mid_media_call_hands_the_run_over_without_a_second_job(cluster, tmp_path):
    standin = Standin(tmp_path, delay=6)
    try:
        f1, f2 = start(cluster, tmp_path, standin)
        acct, key = cluster.account(spark="1000")
        http = httpx.Client(base_url=f1, headers={"Authorization": f"Bearer {key}"}, timeout=60)
        poll(lambda: httpx.get(f1 + "/v1/creative-agent/tools", headers={"Authorization": f"Bearer {key}"}).json()["data"]["pipelines"], "the media pipelines")
        r = http.post("/v1/chat/runs", json={"model": MODEL_ID, "tool_choice": FORCE_IMAGE, "sampling": {"max_tokens": 60, "temperature": 0},
                                             "messages": [{"role": "user", "content": "Draw a lighthouse at dawn."}]})
        assert r.status_code == 202, r.text
        rid = r.json()["data"]["run"]["runId"]
        # One client follows on f1 until the call is dispatched, then reconnects to f2.
        first = sse(f1, key, rid, until={"tool_call_dispatched"})
        k = first[-1]["sequence"]
        followed = []
        t = threading.Thread(target=sse, args=(f2, key, rid), kwargs={"last_event_id": k, "out": followed})
        t.start()
        poll(lambda: standin.prompts()["prompts"], "the job to reach the backend", 60)
        cluster.kill("f1")
        t.join(timeout=120)
        assert followed and followed[0]["sequence"] == k + 1, (k, followed[:2])
        log = first + followed
        assert [e["sequence"] for e in log] == list(range(len(log))), [e["sequence"] for e in log]
        kinds = [e["type"] for e in log]
        assert kinds.count("run_resumed") == 1 and kinds[-1] == "run_completed", kinds
        run = httpx.get(f"{f2}/v1/chat/runs/{rid}", headers={"Authorization": f"Bearer {key}"}).json()["data"]["run"]
        assert run["status"] == "completed" and run["recovery"]["resumeCount"] == 1
        assert run["recovery"]["lastRecoveredAt"]
        # The backend got the job once; its output downloads.
        assert len(standin.prompts()["prompts"]) == 1
        # Its URL names the origin the run was created at (behind a load balancer, every
        # front's); here that front is dead, so the same path is fetched from f2.
        png_ok(f2 + "/v1/media/" + run["artifacts"][0]["url"].split("/v1/media/", 1)[1])
        assert_one_settlement_per_job(cluster.ledger(acct))
        media = [e for e in cluster.ledger(acct) if e["kind"] == "settle" and e["reference"].endswith("-t0-0")]
        assert len(media) == 1
        # A finished run's stream replays everything and closes, on either live front.
        assert [e["sequence"] for e in sse(f2, key, rid, until=())] == list(range(len(log)))
    finally:
        standin.stop()


def test_a_front_killed_mid_llm_round_hands_the_run_over(cluster, tmp_path):
    standin = Standin(tmp_path)
    try:
        f1, f2 = start(cluster, tmp_path, standin)
        acct, key = cluster.account(spark="1000")
        http = httpx.Client(base_url=f1, headers={"Authorization": f"Bearer {key}"}, timeout=60)
        r = http.post("/v1/chat/runs", json={"model": MODEL_ID, "sampling": {"max_tokens": 400, "temperature": 0},
                                             "messages": [{"role": "user", "content": "Write a long story about a dragon who learns to bake bread."}]})
        rid = r.json()["data"]["run"]["runId"]
        first = sse(f1, key, rid, until={"assistant_message_delta"})
        cluster.kill("f1")
        rest = sse(f2, key, rid, last_event_id=first[-1]["sequence"])
        log = first + rest
        assert [e["sequence"] for e in log] == list(range(len(log)))
        kinds = [e["type"] for e in log]
        assert kinds.count("run_resumed") == 1 and kinds[-1] == "run_completed", kinds
        # The round ran again after the resume, and its text is the final answer.
        resumed = kinds.index("run_resumed")
        assert "llm_round_started" in kinds[resumed:]
        run = httpx.get(f"{f2}/v1/chat/runs/{rid}", headers={"Authorization": f"Bearer {key}"}).json()["data"]["run"]
        assert run["status"] == "completed" and run["finalResponse"]["content"]
        ledger = cluster.ledger(acct)
        assert_one_settlement_per_job(ledger)
        assert [e for e in ledger if e["kind"] == "settle" and e["reference"].endswith("-r0-a1")]
    finally:
        standin.stop()
