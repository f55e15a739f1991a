"""Durable chat runs (`/v1/chat/runs`, contract §3) on `supernet serve`, driven by Sogni's own
SDKs (Python here, TypeScript through tests/node/sogni_runs.mjs) and by raw HTTP for what the
SDKs do not reach (envelopes, 404 isolation, inline-media refusal). Media goes through the
ComfyUI stand-in (tests/support/comfyui_standin.py); the model, the executor, the log,
placement and billing are the real ones."""
import asyncio
import json
import subprocess
import time

import httpx
import pytest

from conftest import MODEL_ID, REPO, Server, poll
from test_hosted_tools import FORCE_IMAGE, png_ok, standin  # noqa: F401 (the stand-in fixture)

NODE_DIR = REPO / "tests/node"
TERMINAL = {"run_completed", "run_partial_failure", "run_failed", "run_cancelled"}
HI = [{"role": "user", "content": "Say hello in five words."}]
DRAW = [{"role": "user", "content": "Draw a red fox in the snow."}]


@pytest.fixture(scope="module")
def server(tmp_path_factory, standin):
    s = Server(tmp_path_factory.mktemp("runs-serve"), config="[tools]\nmax_rounds = 2\n",
               args=["--media-backend", f"comfyui={standin.url}"])
    yield s
    s.stop()


@pytest.fixture(scope="module")
def key(server):
    _, key, _ = server.account(spark="1000")
    return key


def sdk(server, key):
    from sogni_client import SogniClient
    return SogniClient.create(api_key=key, rest_endpoint=server.url, disable_socket=True)


def gapless(events):
    assert [e["sequence"] for e in events] == list(range(events[0]["sequence"], events[0]["sequence"] + len(events)))


async def follow(s, run_id, last_event_id=None, until=TERMINAL):
    out = []
    async for e in s.chat.runs.stream_events(run_id, last_event_id=last_event_id):
        out.append(e)
        if e["type"] in until:
            break
    return out


def test_the_python_sdk_runs_a_chat_to_completion_and_replays_it(server, key):
    async def go():
        async with await sdk(server, key) as s:
            run = await s.chat.runs.create(messages=HI, model=MODEL_ID, idempotency_key="py-a1",
                                           sampling={"max_tokens": 24, "temperature": 0})
            assert run["status"] == "queued" and run["events"][0]["type"] == "run_created"
            assert len(run["runId"]) == 4 + 32
            events = await follow(s, run["runId"], last_event_id=0)
            gapless(events)
            assert events[0]["sequence"] == 1 and events[-1]["type"] == "run_completed"
            kinds = [e["type"] for e in events]
            assert "llm_round_started" in kinds and "assistant_message_completed" in kinds
            done = await s.chat.runs.get(run["runId"])
            assert done["status"] == "completed"
            text = "".join(e["payload"]["content"] for e in events if e["type"] == "assistant_message_delta")
            assert text and done["finalResponse"]["content"] == text
            assert done["schemaVersion"] and done["timestamps"]["completedAt"]
            # Deltas are coalesced: far fewer events than tokens.
            assert len([k for k in kinds if k == "assistant_message_delta"]) < 24
            # The same key is the same run; the whole log replays and the stream closes.
            again = await s.chat.runs.create(messages=HI, model=MODEL_ID, idempotency_key="py-a1")
            assert again["runId"] == run["runId"]
            replay = await follow(s, run["runId"], until=())
            assert [e["sequence"] for e in replay] == list(range(len(done["events"])))
            return run["runId"]
    run_id = asyncio.run(go())
    http = server.http(key)
    r = http.post("/v1/chat/runs", headers={"Idempotency-Key": "py-a1"}, json={"messages": HI})
    assert r.status_code in (200, 202) and r.json()["data"] == {"run": r.json()["data"]["run"], "idempotent": True}
    assert r.json()["data"]["run"]["runId"] == run_id
    events = http.get(f"/v1/chat/runs/{run_id}/events", params={"after": 3}).json()["data"]["events"]
    assert events[0]["sequence"] == 4


def test_a_run_that_calls_a_hosted_tool_records_its_calls_and_artifacts(server, key, standin):
    async def go():
        async with await sdk(server, key) as s:
            run = await s.chat.runs.create(messages=DRAW, model=MODEL_ID, tool_choice=FORCE_IMAGE,
                                           sampling={"max_tokens": 60, "temperature": 0})
            events = await follow(s, run["runId"])
            return events, await s.chat.runs.get(run["runId"])
    events, run = asyncio.run(go())
    kinds = [e["type"] for e in events]
    for k in ("tool_call_proposed", "tool_call_dispatched", "tool_call_resolved", "artifact_created"):
        assert k in kinds, kinds
    assert run["status"] == "completed", run.get("failureReason")
    art = run["artifacts"][0]
    assert art["mediaType"] == "image" and art["toolName"] == "sogni_generate_image"
    png_ok(art["url"])
    assert run["mediaContext"]["images"][0] == art["url"]
    resolved = next(e for e in events if e["type"] == "tool_call_resolved")
    assert resolved["payload"]["status"] == "ok"
    assert {r["toolCallId"] for r in run["toolResults"]} >= {resolved["payload"]["toolCallId"]}


def test_cancel_stops_the_run_and_its_media_job_within_a_second(server, key, standin):
    standin.config(delay=20)
    try:
        async def go():
            async with await sdk(server, key) as s:
                run = await s.chat.runs.create(messages=DRAW, model=MODEL_ID, tool_choice=FORCE_IMAGE,
                                               sampling={"max_tokens": 60, "temperature": 0})
                rid = run["runId"]
                before = len(standin.prompts()["prompts"])
                await asyncio.to_thread(poll, lambda: len(standin.prompts()["prompts"]) > before, "the media job to start", 120)
                started = time.monotonic()
                cancelled = await s.chat.runs.cancel(rid, reason="changed my mind")
                after = await s.chat.runs.get(rid)
                return cancelled, after, time.monotonic() - started
        cancelled, after, took = asyncio.run(go())
    finally:
        standin.config(delay=0.2)
    assert after["status"] == "cancelled" and took < 1.0, (after["status"], took)
    assert after["events"][-1]["type"] == "run_cancelled"
    assert after["cancellationReason"] == "changed my mind"
    # The backend job was interrupted, not abandoned.
    poll(lambda: standin.prompts()["interrupted"], "the stand-in to be interrupted", 10)


async def approve_until_done(s, rid, after):
    """Follows the run to its end, approving each later pause (a later round may call a
    paid tool again) with the preview it shows."""
    seen = []
    while True:
        events = await follow(s, rid, last_event_id=after, until=TERMINAL | {"run_waiting_for_user"})
        seen += events
        if events[-1]["type"] in TERMINAL:
            return seen
        d = (await s.chat.runs.get(rid))["waiting"]["details"]
        await s.chat.runs.confirm_cost(rid, tool_call_id=d["toolCallId"], decision="confirm", accepted_cost_preview=d["costApprovalPreview"])
        after = events[-1]["sequence"]


def cost_paused_run(s):
    return s.chat.runs.create(
        messages=DRAW, model=MODEL_ID, tool_choice=FORCE_IMAGE, sampling={"max_tokens": 60, "temperature": 0},
        runtime_config={"requireJobConfirmation": True, "jobConfirmationThresholdUsd": 0.001})


def test_a_cost_pause_is_confirmed_with_its_preview_or_cancelled(server, key, standin):
    http = server.http(key)

    async def go():
        async with await sdk(server, key) as s:
            run = await cost_paused_run(s)
            rid = run["runId"]
            waiting = await follow(s, rid, until={"run_waiting_for_user"})
            assert waiting[-1]["payload"]["reason"] == "cost_approval_required"
            paused = await s.chat.runs.get(rid)
            assert paused["status"] == "waiting_for_user"
            details = paused["waiting"]["details"]
            preview = details["costApprovalPreview"]
            assert preview["totalEstimatedCapacityUnits"] > 0 and preview["validityUntil"]
            # No job ran, nothing was held yet.
            assert not any(e["type"] == "tool_call_dispatched" for e in paused["events"])
            # Confirming needs the preview, unchanged.
            r = http.post(f"/v1/chat/runs/{rid}/confirm-cost", json={"tool_call_id": details["toolCallId"], "decision": "confirm"})
            assert r.status_code == 400 and r.json()["status"] == "error", r.text
            changed = dict(preview, totalEstimatedCapacityUnits=0.01)
            r = http.post(f"/v1/chat/runs/{rid}/confirm-cost", json={"tool_call_id": details["toolCallId"], "decision": "confirm", "acceptedCostPreview": changed})
            assert r.status_code == 409, r.text
            confirmed = await s.chat.runs.confirm_cost(rid, tool_call_id=details["toolCallId"], decision="confirm",
                                                       accepted_cost_preview=preview, idempotency_key="c1")
            assert confirmed["status"] in ("queued", "running")
            # The same decision again under its key is a success.
            await s.chat.runs.confirm_cost(rid, tool_call_id=details["toolCallId"], decision="confirm",
                                           accepted_cost_preview=preview, idempotency_key="c1")
            rest = await approve_until_done(s, rid, waiting[-1]["sequence"])
            done = await s.chat.runs.get(rid)
            assert done["status"] == "completed", done.get("failureReason")
            assert "tool_call_resolved" in [e["type"] for e in rest]

            declined = await cost_paused_run(s)
            await follow(s, declined["runId"], until={"run_waiting_for_user"})
            paused = await s.chat.runs.get(declined["runId"])
            out = await s.chat.runs.confirm_cost(declined["runId"], tool_call_id=paused["waiting"]["details"]["toolCallId"], decision="cancel")
            assert out["status"] == "cancelled"
            assert not any(e["type"] == "tool_call_dispatched" for e in out["events"])
    asyncio.run(go())


def test_the_typescript_sdk_drives_runs(server, key, standin):
    if not (NODE_DIR / "node_modules/@sogni-ai/sogni-client").exists():
        out = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--silent"], cwd=NODE_DIR, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, f"npm install failed: {out.stderr}"
    out = subprocess.run(["node", "sogni_runs.mjs", server.url, key, MODEL_ID, standin.url], cwd=NODE_DIR,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["completed"] == "completed"
    assert report["idempotent"] is True
    assert report["cancelled"] == "cancelled" and report["cancelMs"] < 1000
    assert report["confirmed"] == "completed" and report["declined"] == "cancelled"
    assert report["artifactStatus"] == 200


def test_runs_are_private_to_their_account(server, key):
    http = server.http(key)
    run = http.post("/v1/chat/runs", json={"messages": HI, "model": MODEL_ID, "sampling": {"max_tokens": 8}})
    assert run.status_code == 202, run.text
    rid = run.json()["data"]["run"]["runId"]
    _, other, _ = server.account()
    stranger = server.http(other)
    for method, path in [("GET", ""), ("GET", "/events"), ("GET", "/events/stream"), ("POST", "/cancel"), ("POST", "/confirm-cost")]:
        r = stranger.request(method, f"/v1/chat/runs/{rid}{path}", json={} if method == "POST" else None)
        assert r.status_code == 404, (path, r.status_code, r.text)
        assert r.json()["status"] == "error" and r.json()["errorCode"] == 404
    assert server.http(None).get(f"/v1/chat/runs/{rid}").status_code == 401


@pytest.mark.parametrize("body, field", [
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": "what is this"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]}, "messages[0].content[1].image_url"),
    ({"messages": HI, "media_references": [{"kind": "image", "url": "data:image/png;base64,AAAA"}]}, "media_references[0].url"),
    ({"messages": HI, "media_context": {"images": ["data:image/png;base64,AAAA"]}}, "media_context.images[0]"),
    ({"messages": HI, "media_references": [{"kind": "image", "url": "https://example.com/a.png"}]}, "media_references[0]"),
    ({"messages": []}, "messages"),
])
def test_bad_create_bodies_are_400s_that_create_nothing(server, key, body, field):
    http = server.http(key)
    r = http.post("/v1/chat/runs", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["status"] == "error" and field in r.json()["message"], r.json()


def test_the_readme_python_example_runs_as_written(server, key):
    readme = (REPO / "README.md").read_text().split("## Durable chat runs\n", 1)[1]
    code = readme.split("```python\n", 1)[1].split("```", 1)[0]
    import os
    import sys
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "SUPERNET_URL": server.url, "SUPERNET_API_KEY": key})
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[0].startswith("1 run_started") and "run_completed" in lines[-2] and lines[-1], lines
