"""Creative workflows in a cluster: two fronts, a coordinator, an LLM worker and a media
worker as separate processes on one Redis (the media store a shared folder, ComfyUI stood in
for). The front executing a workflow is killed with SIGKILL during a step, and right after a
step completed: the other front adopts the workflow once its lease ends, the backend gets
each step's job once, and the ledger settles each job once."""
import json
import threading

import httpx

from conftest import poll
from test_hosted_tools import Standin
from test_runs_cluster import assert_one_settlement_per_job, start

TERMINAL = {"completed", "failed", "cancelled", "partial_failure"}


def sse(url, key, wid, last_event_id=None, until=(), out=None):
    """The workflow's events from the SSE stream at `url`, until a type in `until` or the
    stream's closing `workflow_status` frame."""
    out = [] if out is None else out
    headers = {"Authorization": f"Bearer {key}"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = str(last_event_id)
    with httpx.stream("GET", f"{url}/v1/creative-agent/workflows/{wid}/events/stream", headers=headers, timeout=300) as r:
        assert r.status_code == 200, r.read()
        event = None
        for line in r.iter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:") and event != "workflow_status":
                e = json.loads(line[5:])
                out.append(e)
                if e["type"] in until:
                    return out
    return out


def chain(tag):
    return {"steps": [
        {"id": "a", "toolName": "generate_image", "arguments": {"prompt": f"first {tag}"}},
        {"id": "b", "toolName": "edit_image", "arguments": {"prompt": f"second {tag}"},
         "dependsOn": [{"sourceStepId": "a", "targetArgument": "sourceImageIndex", "transform": "image_index"}]},
        {"id": "c", "toolName": "animate_photo", "arguments": {"prompt": f"third {tag}", "duration": 2},
         "dependsOn": [{"sourceStepId": "b", "targetArgument": "sourceImageIndex", "transform": "image_index"}]},
    ]}


def texts(standin):
    return [n["inputs"]["text"] for p in standin.prompts()["prompts"] for n in p.get("graph", {}).values()
            if n.get("class_type") == "CLIPTextEncode" and n["inputs"].get("text", "").split(" ")[0] in ("first", "second", "third")]


def handed_over(cluster, tmp_path, kill_after):
    standin = Standin(tmp_path, delay=3)
    try:
        f1, f2 = start(cluster, tmp_path, standin)
        acct, key = cluster.account(spark="1000")
        poll(lambda: httpx.get(f1 + "/v1/creative-agent/tools", headers={"Authorization": f"Bearer {key}"}).json()["data"]["pipelines"], "the media pipelines")
        r = httpx.post(f1 + "/v1/creative-agent/workflows", headers={"Authorization": f"Bearer {key}"},
                       json={"input": chain(kill_after)}, timeout=60)
        assert r.status_code == 201, r.text
        wid = r.json()["data"]["workflow"]["workflowId"]
        first = sse(f1, key, wid, until={kill_after})
        k = first[-1]["sequence"]
        followed = []
        t = threading.Thread(target=sse, args=(f2, key, wid), kwargs={"last_event_id": k, "out": followed})
        t.start()
        if kill_after == "step_started":
            poll(lambda: texts(standin), "the first step's job to reach the backend", 60)
        cluster.kill("f1")
        t.join(timeout=180)
        log = first + followed
        assert [e["sequence"] for e in log] == list(range(len(log))), [e["sequence"] for e in log]
        assert log[-1]["type"] == "workflow_completed", [e["type"] for e in log]
        recovered = [e for e in log if e["type"] == "workflow_progress" and e["data"].get("recovered")]
        assert len(recovered) == 1, [e["type"] for e in log]
        wf = httpx.get(f"{f2}/v1/creative-agent/workflows/{wid}", headers={"Authorization": f"Bearer {key}"}).json()["data"]["workflow"]
        assert wf["status"] == "completed" and wf["plan"]["recovery"]["resumeCount"] == 1
        # Each step's media job reached the backend once, under one job id.
        seen = texts(standin)
        assert sorted(seen) == sorted(f"{n} {kill_after}" for n in ("first", "second", "third")), seen
        assert [s["jobId"] for s in wf["steps"]] == [f"{wid}-{s}-a1" for s in "abc"]
        ledger = cluster.ledger(acct)
        assert_one_settlement_per_job(ledger)
        for s in "abc":
            assert len([e for e in ledger if e["kind"] == "settle" and e["reference"] == f"{wid}-{s}-a1"]) == 1, ledger
    finally:
        standin.stop()


def test_a_front_killed_during_a_step_hands_the_workflow_over(cluster, tmp_path):
    handed_over(cluster, tmp_path, "step_started")


def test_a_front_killed_between_steps_hands_the_workflow_over(cluster, tmp_path):
    handed_over(cluster, tmp_path, "step_completed")
