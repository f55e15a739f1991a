"""Creative workflows (`/v1/creative-agent/workflows`, contract §4) on `supernet serve`, driven
by Sogni's own SDKs (Python here, TypeScript through tests/node/sogni_workflows.mjs) and by raw
HTTP for the envelopes, the 400s at start and the isolation between accounts. Media goes
through the ComfyUI stand-in, which records when each prompt started and finished; the
executor, the log, placement and billing are the real ones."""
import asyncio
import hashlib
import json
import subprocess

import httpx
import pytest

from conftest import REPO, Server, poll
from test_hosted_tools import png_ok, standin  # noqa: F401 (the stand-in fixture)

NODE_DIR = REPO / "tests/node"
BASE = "/v1/creative-agent/workflows"


@pytest.fixture(scope="module")
def server(tmp_path_factory, standin):
    s = Server(tmp_path_factory.mktemp("workflows-serve"), args=["--media-backend", f"comfyui={standin.url}"])
    yield s
    s.stop()


@pytest.fixture(scope="module")
def key(server):
    _, key, _ = server.account(spark="1000")
    return key


def sdk(server, key):
    from sogni_client import SogniClient
    return SogniClient.create(api_key=key, rest_endpoint=server.url, disable_socket=True)


def dag(tag):
    """Two independent images, an edit taking both, a video from the edit."""
    return {"title": f"fox {tag}", "steps": [
        {"id": "a", "toolName": "generate_image", "arguments": {"prompt": f"a red fox {tag}", "width": 512, "height": 512}},
        {"id": "b", "toolName": "generate_image", "arguments": {"prompt": f"a snowy forest {tag}", "width": 512, "height": 512}},
        {"id": "edit", "toolName": "edit_image", "arguments": {"prompt": f"the fox in the forest {tag}"},
         "dependsOn": [{"sourceStepId": "a", "targetArgument": "sourceImageIndex", "transform": "image_index"},
                       {"sourceStepId": "b", "targetArgument": "referenceImageIndices", "transform": "image_index", "mediaType": "image"}]},
        {"id": "clip", "toolName": "animate_photo", "arguments": {"prompt": f"the fox runs {tag}", "duration": 2},
         "dependsOn": [{"sourceStepId": "edit", "targetArgument": "sourceImageIndex", "transform": "image_index"}]},
    ]}


def one_step(tag):
    return {"steps": [{"id": "only", "toolName": "generate_image", "arguments": {"prompt": f"a lighthouse {tag}"}}]}


def prompt_of(standin, text):
    """The stand-in's record of the prompt whose graph holds `text`."""
    for p in standin.prompts()["prompts"]:
        if any(n.get("inputs", {}).get("text") == text for n in p.get("graph", {}).values()):
            return p
    return None


async def frames(s, workflow_id, **kw):
    return [f async for f in s.workflows.stream_events(workflow_id, **kw)]


def sha(url):
    r = httpx.get(url, timeout=30)
    assert r.status_code == 200
    return hashlib.sha256(r.content).hexdigest()


def test_a_dag_runs_independent_steps_together_and_binds_each_output_into_the_next(server, key, standin):
    async def go():
        async with await sdk(server, key) as s:
            wf = await s.workflows.start(input=dag("dag"), idempotency_key="dag-1", token_type="spark")
            assert wf["status"] == "queued" and wf["workflowId"].startswith("wf_")
            assert [st["id"] for st in wf["plan"]["steps"]] == ["a", "b", "edit", "clip"]
            assert wf["billingPreview"]["estimatedCapacityUnits"] > 0
            seen = await frames(s, wf["workflowId"], last_event_id=0)
            done = await s.workflows.get(wf["workflowId"])
            again = await s.workflows.start(input=dag("dag"), idempotency_key="dag-1")
            return wf, seen, done, again
    wf, seen, done, again = asyncio.run(go())
    assert again["workflowId"] == wf["workflowId"]
    assert seen[-1]["data"]["status"] == "completed" and seen[-1]["data"]["type"] == "workflow_completed"
    assert [f["data"]["sequence"] for f in seen] == list(range(1, len(seen) + 1))
    assert done["status"] == "completed"
    assert [st["status"] for st in done["steps"]] == ["completed"] * 4
    assert len(done["artifacts"]) == 4 and all(a["url"].startswith("http") for a in done["artifacts"])
    # The two independent images ran at the same time on the stand-in.
    a, b = prompt_of(standin, "a red fox dag"), prompt_of(standin, "a snowy forest dag")
    assert a["started"] < b["finished"] and b["started"] < a["finished"], (a, b)
    # The edit got both images, the video the edit.
    out = {st["id"]: st["artifacts"][0]["url"] for st in done["steps"]}
    edit, clip = prompt_of(standin, "the fox in the forest dag"), prompt_of(standin, "the fox runs dag")
    assert sorted(edit["inputs"].values()) == sorted([sha(out["a"]), sha(out["b"])])
    assert list(clip["inputs"].values()) == [sha(out["edit"])]
    assert done["steps"][2]["arguments"]["sourceImageIndex"] == 0
    assert done["steps"][2]["arguments"]["referenceImageIndices"] == [1]
    png_ok(out["edit"])
    http = server.http(key)
    listed = http.get(BASE, params={"limit": 5}).json()["data"]
    assert wf["workflowId"] in [w["workflowId"] for w in listed["workflows"]]


def test_cancel_mid_step_then_resume_and_reseed(server, key, standin):
    standin.config(delay=4)
    try:
        async def go():
            async with await sdk(server, key) as s:
                wf = await s.workflows.start(input=one_step("cancel"))
                wid = wf["workflowId"]
                poll(lambda: prompt_of(standin, "a lighthouse cancel"), "the step to reach the stand-in", timeout=30)
                cancelled = await s.workflows.cancel(wid)
                standin.config(delay=0.2)
                resumed = await s.workflows.resume(wid)
                seen = await frames(s, wid, last_event_id=len(resumed["workflow"]["events"]) - 1)
                done = await s.workflows.get(wid)
                first = await s.workflows.reseed(wid, seed_overrides={"only": 7}, idempotency_key="rs-1")
                second = await s.workflows.reseed(wid, seed_overrides={"only": 7}, idempotency_key="rs-1")
                other = await s.workflows.reseed(wid)
                reseeded = first["workflow"]["workflowId"]
                await frames(s, reseeded, last_event_id=0)
                return cancelled, resumed, seen, done, first, second, other, await s.workflows.get(reseeded)
        cancelled, resumed, seen, done, first, second, other, reseeded = asyncio.run(go())
    finally:
        standin.config(delay=0.2)
    assert cancelled["status"] == "cancelled"
    assert cancelled["steps"][0]["status"] == "cancelled"
    assert standin.prompts()["interrupted"], "the running media job was interrupted"
    assert resumed["resumed"] is True and resumed["workflow"]["status"] == "running"
    assert seen[-1]["data"]["status"] == "completed"
    assert done["status"] == "completed" and done["plan"]["recovery"]["resumeCount"] == 1
    # The resumed step ran as a new attempt under a new job id.
    assert done["steps"][0]["attempt"] == 2 and done["steps"][0]["jobId"].endswith("-a2")
    assert first["reseed"] == {"cloned_from_run_id": done["workflowId"], "steps": [{"stepId": "only", "seed": 7}]}
    assert second.get("idempotent") is True and second["workflow"]["workflowId"] == first["workflow"]["workflowId"]
    assert other["workflow"]["workflowId"] != first["workflow"]["workflowId"]
    assert reseeded["status"] == "completed" and reseeded["steps"][0]["arguments"]["seed"] == 7
    assert reseeded["safeContentFilter"] is True


def test_a_plan_over_budget_waits_for_approval_and_resume_approves_it(server, key, standin):
    http = server.http(key)
    body = {"input": one_step("budget"), "max_estimated_capacity_units": 0.5, "safe_content_filter": False}
    r = http.post(BASE, json=body)
    assert r.status_code == 201, r.text
    wf = r.json()["data"]["workflow"]
    assert wf["status"] == "waiting_for_user" and wf["awaitingCostApproval"] is True
    assert wf["waitingReason"] == "cost_approval_required"
    assert wf["billingPreview"]["estimatedCapacityUnits"] > 0.5
    assert prompt_of(standin, "a lighthouse budget") is None
    # The stream replays and closes at the pause.
    with http.stream("GET", f"{BASE}/{wf['workflowId']}/events/stream") as s:
        text = "".join(s.iter_text())
    assert "event: workflow_status" in text and '"waiting_for_user"' in text
    r = http.post(f"{BASE}/{wf['workflowId']}/resume", json={})
    assert r.json()["data"]["resumed"] is True
    poll(lambda: http.get(f"{BASE}/{wf['workflowId']}").json()["data"]["workflow"]["status"] == "completed",
         "the approved workflow to complete", timeout=60)
    done = http.get(f"{BASE}/{wf['workflowId']}").json()["data"]["workflow"]
    assert done["safeContentFilter"] is False
    # Resuming a completed workflow changes nothing; a reseed keeps the filter setting.
    assert http.post(f"{BASE}/{wf['workflowId']}/resume").json()["data"]["resumed"] is False
    again = http.post(f"{BASE}/{wf['workflowId']}/reseed", json={}).json()["data"]["workflow"]
    assert again["safeContentFilter"] is False


def test_confirm_cost_approves_with_the_preview_or_declines(server, key, standin):
    http = server.http(key)
    body = {"input": one_step("confirm"), "max_estimated_capacity_units": 0.1}
    wf = http.post(BASE, json=body).json()["data"]["workflow"]
    url = f"{BASE}/{wf['workflowId']}/confirm-cost"
    assert http.post(url, json={"decision": "confirm"}).status_code == 400
    changed = {**wf["billingPreview"], "estimatedCapacityUnits": wf["billingPreview"]["estimatedCapacityUnits"] + 1}
    assert http.post(url, json={"decision": "confirm", "acceptedCostPreview": changed}).status_code == 409
    assert http.post(url, json={"decision": "maybe"}).status_code == 400
    r = http.post(url, json={"decision": "confirm", "acceptedCostPreview": wf["billingPreview"]})
    assert r.status_code == 200, r.text
    poll(lambda: http.get(f"{BASE}/{wf['workflowId']}").json()["data"]["workflow"]["status"] == "completed",
         "the confirmed workflow to complete", timeout=60)
    assert http.post(url, json={"decision": "confirm", "acceptedCostPreview": wf["billingPreview"]}).status_code == 409
    declined = http.post(BASE, json={"input": one_step("decline"), "max_estimated_capacity_units": 0.1}).json()["data"]["workflow"]
    r = http.post(f"{BASE}/{declined['workflowId']}/confirm-cost", json={"decision": "cancel"})
    assert r.json()["data"]["workflow"]["status"] == "cancelled"
    assert prompt_of(standin, "a lighthouse decline") is None


BAD = [
    ({"input": one_step("x"), "workflow_id": "t"}, "workflow_id"),
    ({}, "input"),
    ({"input": {"steps": []}}, "input.steps"),
    ({"input": {"steps": [{"toolName": "compose_workflow", "arguments": {"brief": "x"}}]}}, "input.steps[0].toolName"),
    ({"input": {"steps": [{"id": "a", "toolName": "generate_image", "arguments": {"prompt": "x", "width": "big"}}]}},
     "input.steps[0].arguments"),
    ({"input": {"steps": [{"id": "a", "toolName": "generate_image", "arguments": {}}]}}, "input.steps[0].arguments"),
    ({"input": {"steps": [
        {"id": "a", "toolName": "edit_image", "arguments": {"prompt": "x"},
         "dependsOn": [{"sourceStepId": "b", "targetArgument": "sourceImageIndex", "transform": "image_index"}]},
        {"id": "b", "toolName": "edit_image", "arguments": {"prompt": "y"},
         "dependsOn": [{"sourceStepId": "a", "targetArgument": "sourceImageIndex", "transform": "image_index"}]}]}},
     "cycle"),
    ({"input": {"steps": [{"id": "a", "toolName": "edit_image", "arguments": {"prompt": "x"},
                           "dependsOn": [{"sourceStepId": "nope", "targetArgument": "sourceImageIndex", "transform": "image_index"}]}]}},
     "no step `nope`"),
    ({"input": {"steps": [
        {"id": "m", "toolName": "generate_music", "arguments": {"prompt": "x"}},
        {"id": "a", "toolName": "edit_image", "arguments": {"prompt": "x"},
         "dependsOn": [{"sourceStepId": "m", "targetArgument": "sourceImageIndex", "transform": "image_index"}]}]}},
     "audio"),
    ({"input": {"steps": [{"id": "a", "toolName": "edit_image", "arguments": {"prompt": "x"}}]}}, "needs an image"),
    ({"input": one_step("x"), "media_references": [{"url": "data:image/png;base64,AAAA"}]}, "media_references[0].url"),
    ({"input": one_step("x"), "media_references": [{"url": "https://example.com/x.png"}]}, "media_references[0]"),
]


@pytest.mark.parametrize("body,names", BAD)
def test_a_bad_start_is_a_400_naming_the_step_and_field(server, key, body, names):
    r = server.http(key).post(BASE, json=body)
    assert r.status_code == 400, r.text
    err = r.json()
    assert err["status"] == "error" and names in err["message"], err


def test_another_account_finds_nothing_on_any_workflow_route(server, key):
    http = server.http(key)
    wid = http.post(BASE, json={"input": one_step("mine")}).json()["data"]["workflow"]["workflowId"]
    _, other, _ = server.account(spark="10")
    o = server.http(other)
    for method, path in [("GET", ""), ("GET", "/events"), ("GET", "/events/stream"), ("POST", "/cancel"),
                         ("POST", "/resume"), ("POST", "/reseed"), ("POST", "/confirm-cost")]:
        r = o.request(method, f"{BASE}/{wid}{path}", json={} if method == "POST" else None)
        assert r.status_code == 404, (path, r.text)
        assert r.json()["status"] == "error"
    assert o.get(BASE).json()["data"] == {"workflows": [], "next": None}
    assert http.get(f"{BASE}/{wid}").status_code == 200
    # A chat run's id is not a workflow either.
    assert http.get(f"{BASE}/run_{'0' * 32}").status_code == 404


def test_the_typescript_sdk_drives_workflows(server, key):
    out = subprocess.run(["node", "sogni_workflows.mjs", server.url, key], cwd=NODE_DIR,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr + out.stdout
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report == {"completed": "completed", "artifacts": 1, "idempotent": True, "cancelled": "cancelled",
                      "resumed": True, "afterResume": "completed", "reseedIdempotent": True,
                      "reseedFrom": True, "listed": True}, report


def test_the_readme_workflow_example_runs_as_written(server, key):
    import os
    import sys
    readme = (REPO / "README.md").read_text().split("## Creative workflows\n", 1)[1]
    code = readme.split("```python\n", 1)[1].split("```", 1)[0]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "SUPERNET_URL": server.url, "SUPERNET_API_KEY": key})
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[0] == "workflow_progress running" and lines[-2] == "workflow_completed completed", lines
    assert json.loads(lines[-1].replace("'", '"'))[0].startswith("http"), lines
