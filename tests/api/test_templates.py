"""Workflow templates (`/v1/creative-agent/workflows/templates`, contract §4) on `supernet
serve`: Sogni's Python and TypeScript SDKs create, invoke, patch, fork and delete them; typed
inputs are checked on invoke; fixed, batch and interactive stages run; visibility holds
between accounts; and the planner tools' output is taken by these routes as it is."""
import asyncio
import json
import subprocess

import pytest

from conftest import REPO, Server, poll
from test_hosted_tools import standin  # noqa: F401 (the stand-in fixture)
from test_uploads import WAV, post_form, upload_png
from test_workflows import prompt_of, sdk

NODE_DIR = REPO / "tests/node"
TEMPLATES = "/v1/creative-agent/workflows/templates"
WORKFLOWS = "/v1/creative-agent/workflows"


@pytest.fixture(scope="module")
def server(tmp_path_factory, standin):
    s = Server(tmp_path_factory.mktemp("templates-serve"), args=["--media-backend", f"comfyui={standin.url}"])
    yield s
    s.stop()


@pytest.fixture(scope="module")
def key(server):
    _, key, _ = server.account(spark="1000")
    return key


def portrait(tag):
    return {
        "name": f"Portrait {tag}", "description": "A styled portrait and a clip of it", "category": "portrait",
        "inputs": [
            {"name": "photo", "type": "image", "required": True, "description": "Who"},
            {"name": "style", "type": "select", "required": False, "description": "Look", "default": "ink",
             "options": [{"value": "ink", "label": "Ink"}, {"value": "oil", "label": "Oil"}]},
            {"name": "seconds", "type": "number", "required": False, "description": "Clip length", "default": 2},
        ],
        "stages": [
            {"id": "portrait", "type": "fixed", "tool": "edit_image",
             "args": {"prompt": f"a $inputs.style portrait {tag}", "sourceImageIndex": "$inputs.photo"}},
            {"id": "clip", "type": "fixed", "tool": "animate_photo",
             "args": {"prompt": f"the portrait smiles {tag}", "duration": "$inputs.seconds"},
             "requiredArtifactsIn": ["portrait"]},
        ],
        "tags": ["test"],
    }


async def run_to_end(s, wid):
    return [f async for f in s.workflows.stream_events(wid, last_event_id=0)]


def test_the_python_sdk_creates_invokes_patches_forks_and_deletes_a_template(server, key, standin):
    photo = upload_png(server.http(key), job="tpl-py")

    async def go():
        async with await sdk(server, key) as s:
            t = await s.workflows.templates.create(portrait("py"))
            assert t["version"] == "0.0.1" and t["id"].startswith("portrait-py-")
            assert t["author"]["userId"] and t["visibility"] == "private"
            assert (await s.workflows.templates.get(t["id"]))["name"] == "Portrait py"
            own = await s.workflows.templates.list(visibility="own")
            assert t["id"] in [x["id"] for x in own["templates"]]
            wf = await s.workflows.start(workflow_id=t["id"], inputs={"photo": photo, "style": "oil"})
            frames = await run_to_end(s, wf["workflowId"])
            done = await s.workflows.get(wf["workflowId"])
            patched = await s.workflows.templates.update(t["id"], {"description": "Now with a longer clip"})
            forked = await s.workflows.templates.fork(t["id"], new_name="My portrait")
            await s.workflows.templates.delete(t["id"])
            gone = None
            try:
                await s.workflows.templates.get(t["id"])
            except Exception as e:  # the SDK raises its ApiError
                gone = getattr(e, "status", None) or str(e)
            return t, frames, done, patched, forked, gone
    t, frames, done, patched, forked, gone = asyncio.run(go())
    assert frames[-1]["data"]["status"] == "completed"
    assert done["status"] == "completed" and done["templateId"] == t["id"]
    assert [s["id"] for s in done["steps"]] == ["portrait", "clip"]
    assert done["steps"][0]["arguments"] == {"prompt": "a oil portrait py", "sourceImageIndex": -1}
    assert done["steps"][1]["arguments"]["duration"] == 2 and done["steps"][1]["arguments"]["sourceImageIndex"] == 0
    assert prompt_of(standin, "the portrait smiles py")["inputs"], "the clip got the portrait"
    assert patched["version"] == "0.0.2" and patched["description"] == "Now with a longer clip"
    assert forked["id"] != t["id"] and forked["name"] == "My portrait" and forked["forkedFrom"] == {"id": t["id"], "version": "0.0.2"}
    assert gone == 404 or "404" in str(gone)


def test_the_typescript_sdk_drives_templates(server, key):
    photo = upload_png(server.http(key), job="tpl-ts")
    out = subprocess.run(["node", "sogni_templates.mjs", server.url, key, json.dumps(portrait("ts")), photo],
                         cwd=NODE_DIR, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr + out.stdout
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report == {"created": "0.0.1", "invoked": "completed", "patched": "0.0.2", "forked": True,
                      "listed": True, "deleted": True}, report


BAD_INPUTS = [
    ({}, "inputs.photo: is required"),
    ({"photo": "data:image/png;base64,AAAA"}, "inputs.photo"),
    ({"photo": "PHOTO", "style": "watercolor"}, "inputs.style"),
    ({"photo": "PHOTO", "seconds": "two"}, "inputs.seconds"),
    ({"photo": "PHOTO", "colour": "red"}, "inputs.colour"),
    ({"photo": "https://example.com/me.png"}, "media_references[0]"),
]


@pytest.mark.parametrize("inputs,names", BAD_INPUTS)
def test_typed_inputs_are_checked_on_invoke(server, key, inputs, names):
    http = server.http(key)
    t = http.post(TEMPLATES, json=portrait("typed")).json()["data"]["template"]
    photo = upload_png(http, job="tpl-typed")
    inputs = {k: (photo if v == "PHOTO" else v) for k, v in inputs.items()}
    r = http.post(WORKFLOWS, json={"workflow_id": t["id"], "inputs": inputs})
    assert r.status_code == 400, r.text
    assert names in r.json()["message"], r.json()


BAD_TEMPLATES = [
    ({"name": ""}, "name"),
    ({"category": "toys"}, "category"),
    ({"stages": []}, "stages"),
    ({"stages": [{"id": "a", "type": "fixed", "tool": "compose_script", "args": {"brief": "x"}}]}, "toolName"),
    ({"stages": [{"id": "a", "type": "fixed", "tool": "generate_image", "args": {"prompt": "$inputs.nope"}}]}, "$inputs.nope"),
    ({"stages": [{"id": "a", "type": "fixed", "tool": "generate_image", "args": {"prompt": "x"}, "requiredArtifactsIn": ["b"]}]},
     "requiredArtifactsIn"),
    ({"inputs": [{"name": "k", "type": "select"}]}, "options"),
    ({"colour": "red"}, "colour"),
    ({"stages": [{"id": "a", "type": "batch"}]}, "overBinding"),
    ({"stages": [{"type": "fixed", "tool": "generate_image", "args": {"prompt": "x"}}]}, "stages[0].id"),
    ({"stages": [{"id": "a", "type": "batch", "overBinding": "$inputs.photo", "itemName": "p", "partialExecutionEnabled": True,
                  "itemStage": {"id": "b", "type": "batch"}}]}, "itemStage.type"),
    ({"inputs": "none"}, "inputs"),
]


@pytest.mark.parametrize("change,names", BAD_TEMPLATES)
def test_a_bad_template_is_a_400_naming_the_field(server, key, change, names):
    r = server.http(key).post(TEMPLATES, json={**portrait("bad"), **change})
    assert r.status_code == 400, r.text
    assert names in r.json()["message"], r.json()


def test_private_templates_are_their_owners_and_public_ones_everyones(server, key):
    http = server.http(key)
    t = http.post(TEMPLATES, json=portrait("vis")).json()["data"]["template"]
    _, other, _ = server.account(spark="100")
    o = server.http(other)
    photo = upload_png(o, job="tpl-vis")

    def refused():
        yield o.get(f"{TEMPLATES}/{t['id']}")
        yield o.patch(f"{TEMPLATES}/{t['id']}", json={"description": "mine now"})
        yield o.delete(f"{TEMPLATES}/{t['id']}")
        yield o.post(f"{TEMPLATES}/{t['id']}/fork", json={})
        yield o.post(WORKFLOWS, json={"workflow_id": t["id"], "inputs": {"photo": photo}})
    for r in refused():
        assert r.status_code == 404, r.text
    assert t["id"] not in [x["id"] for x in o.get(TEMPLATES, params={"visibility": "all"}).json()["data"]["templates"]]
    r = http.patch(f"{TEMPLATES}/{t['id']}", json={"visibility": "public"})
    assert r.json()["data"]["template"]["version"] == "0.0.2"
    assert o.get(f"{TEMPLATES}/{t['id']}").status_code == 200
    assert t["id"] in [x["id"] for x in o.get(TEMPLATES, params={"visibility": "public"}).json()["data"]["templates"]]
    assert t["id"] not in [x["id"] for x in o.get(TEMPLATES, params={"visibility": "own"}).json()["data"]["templates"]]
    assert o.post(f"{TEMPLATES}/{t['id']}/fork", json={"newName": "theirs"}).status_code == 201
    r = o.post(WORKFLOWS, json={"workflow_id": t["id"], "inputs": {"photo": photo}})
    assert r.status_code == 201, r.text
    # Still only its owner changes or deletes it.
    assert o.patch(f"{TEMPLATES}/{t['id']}", json={"description": "x"}).status_code == 404
    assert o.delete(f"{TEMPLATES}/{t['id']}").status_code == 404
    # Paging: one at a time, with a cursor.
    page = http.get(TEMPLATES, params={"visibility": "own", "limit": 1}).json()["data"]
    assert len(page["templates"]) == 1 and page["next"] == 1
    assert http.get(TEMPLATES, params={"limit": 0}).status_code == 400


def test_batch_and_interactive_stages_run(server, key, standin):
    http = server.http(key)
    t = http.post(TEMPLATES, json={
        "name": "Variations",
        "inputs": [{"name": "subjects", "type": "text", "required": True, "multiple": {"min": 1, "max": 4}}],
        "stages": [
            {"id": "each", "type": "batch", "overBinding": "$inputs.subjects", "itemName": "subject",
             "partialExecutionEnabled": True, "concurrency": 1,
             "itemStage": {"id": "one", "type": "fixed", "tool": "generate_image", "args": {"prompt": "a batch $inputs.subject"}}},
            {"id": "pick", "type": "interactive", "allowedTools": ["edit_image"],
             "systemPrompt": "You edit images. Call edit_image on image 0.", "userMessage": "Make it brighter.",
             "requiredArtifactsIn": ["each"]},
        ],
    }).json()["data"]["template"]
    r = http.post(WORKFLOWS, json={"workflow_id": t["id"], "inputs": {"subjects": ["fox", "owl"]}})
    assert r.status_code == 201, r.text
    wid = r.json()["data"]["workflow"]["workflowId"]
    poll(lambda: http.get(f"{WORKFLOWS}/{wid}").json()["data"]["workflow"]["status"] in ("completed", "failed", "partial_failure"),
         "the batch workflow to end", timeout=120)
    done = http.get(f"{WORKFLOWS}/{wid}").json()["data"]["workflow"]
    assert [s["id"] for s in done["steps"]] == ["each_1", "each_2", "pick"]
    assert done["status"] == "completed", done["steps"]
    assert done["steps"][2]["toolName"] == "interactive"
    # The two batch items ran one at a time (concurrency 1).
    a, b = prompt_of(standin, "a batch fox"), prompt_of(standin, "a batch owl")
    assert a["finished"] <= b["started"] or b["finished"] <= a["started"], (a, b)
    # The interactive step's model wrote an edit_image call on the batch outputs.
    started = [e for e in done["events"] if e["type"] == "step_started" and e["data"]["stepId"] == "pick"]
    assert started[0]["data"]["toolName"] == "edit_image"


MP4 = b"\0\0\0\x18ftypisom" + bytes(64)


def upload_media(http, slot, content_type, data):
    form = http.get("/v2/media/uploadUrl", params={"jobId": "tpl-draft", "type": slot, "contentType": content_type}).json()["data"]
    assert post_form(form, data, content_type).status_code == 204
    return http.get("/v2/media/downloadUrl", params={"jobId": "tpl-draft", "type": slot}).json()["data"]["downloadUrl"]


def execute(http, tool, args):
    r = http.post("/v1/creative-agent/tools/execute", json={"tool": tool, "arguments": args})
    assert r.status_code == 200, r.text
    return r.json()["data"]["result"]


def test_the_planner_tools_output_is_taken_as_it_is(server, key):
    http = server.http(key)
    plan = execute(http, "compose_workflow", {"brief": "a two-shot teaser of a fox in snow", "scene_count": 2})
    r = http.post(WORKFLOWS, json={"input": plan})
    assert r.status_code == 201, (plan, r.text)
    wid = r.json()["data"]["workflow"]["workflowId"]
    poll(lambda: http.get(f"{WORKFLOWS}/{wid}").json()["data"]["workflow"]["status"] == "completed",
         "the composed plan to run", timeout=120)
    draft = execute(http, "compose_workflow_template", {"brief": "a product shot from a description", "name": "Product shot"})
    r = http.post(TEMPLATES, json=draft["template_draft"])
    assert r.status_code == 201, (draft, r.text)
    t = r.json()["data"]["template"]
    values = {"image": upload_png(http, job="tpl-draft"), "audio": upload_media(http, "referenceAudio", "audio/wav", WAV),
              "video": upload_media(http, "referenceVideo", "video/mp4", MP4), "text": "a red teapot", "number": 1,
              "boolean": True}
    inputs = {i["name"]: values[i["type"]] for i in t["inputs"] if i["type"] in values}
    r = http.post(WORKFLOWS, json={"workflow_id": t["id"], "inputs": inputs})
    assert r.status_code == 201, (t, r.text)
