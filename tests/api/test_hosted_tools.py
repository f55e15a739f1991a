"""Hosted creative tools end to end: `supernet serve --media-backend comfyui=URL` against the
ComfyUI stand-in (tests/support/comfyui_standin.py; ComfyUI and diffusion models cannot run
here), driven with the official `openai` client, raw HTTP and Sogni's own Python SDK. Only
ComfyUI is stood in for: the model, the tool loop, the media worker, placement, the media
store and billing are the real ones."""
import asyncio
import io
import json
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import httpx
import jsonschema
import pytest
from PIL import Image

from conftest import MODEL_ID, REPO, Server, free_port, poll, price

STANDIN = REPO / "tests/support/comfyui_standin.py"
TOOLS = REPO / "tools/hosted"
FORCE_IMAGE = {"type": "function", "function": {"name": "sogni_generate_image"}}
# $0.02 an image at $0.005 a Spark.
IMAGE_SPARK = Decimal(4)


class Standin:
    """The ComfyUI stand-in on a free port."""

    def __init__(self, root: Path, delay=0.2):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(root / "standin.log", "w")
        self.proc = subprocess.Popen([sys.executable, str(STANDIN), "--port", str(self.port), "--delay", str(delay)],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        poll(self.up, "the stand-in to listen", timeout=30)

    def up(self):
        try:
            return httpx.get(self.url + "/system_stats", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def prompts(self):
        return httpx.get(self.url + "/standin/prompts").json()

    def config(self, **kw):
        return httpx.post(self.url + "/standin/config", json=kw).json()

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.log.close()


@pytest.fixture(scope="module")
def standin(tmp_path_factory):
    s = Standin(tmp_path_factory.mktemp("standin"))
    yield s
    s.stop()


@pytest.fixture(scope="module")
def media(tmp_path_factory, standin):
    # Two rounds of calls at most keep the tests quick; the model may call more tools after
    # the one a test forces.
    s = Server(tmp_path_factory.mktemp("media-serve"), config="[tools]\nmax_rounds = 2\n",
               args=["--media-backend", f"comfyui={standin.url}"])
    yield s
    s.stop()


def spent(server, acct, before):
    spark, _ = server.balances(acct)
    return before - spark


def forced(client, **kw):
    return client.chat.completions.create(
        model=MODEL_ID, max_tokens=60, temperature=0, tool_choice=FORCE_IMAGE,
        messages=[{"role": "user", "content": "Create a cinematic image of a neon alley in Tokyo during rain."}], **kw)


def png_ok(url):
    r = httpx.get(url, timeout=30)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    img = Image.open(io.BytesIO(r.content))
    img.verify()
    return r.content


def test_a_forced_image_call_runs_on_the_media_worker_and_returns_a_signed_png(media, standin):
    acct, key, _ = media.account()
    seen = len(standin.prompts()["prompts"])
    r = forced(media.client(key))
    extra = r.model_extra
    assert r.choices[0].message.content, "the final round answers in text"
    result = extra["sogni_tool_results"][0]
    assert result["ok"] and result["tool"] == "sogni_generate_image" and result["status"] == "completed"
    assert result["startIndex"] == 0 and result["indices"] == [0]
    [asset] = result["output_assets"]
    assert asset["type"] == "image" and asset["width"] > 0
    png_ok(asset["url"])
    # Later rounds see the results (fresh ids and URLs each time), so what the model calls
    # after the forced call varies; the workflow's status follows every call's outcome.
    [wf] = extra["creative_workflows"]
    every_ok = all(x["ok"] for x in extra["sogni_tool_results"])
    assert wf["workflowId"].startswith("wf_") and wf["status"] == ("completed" if every_ok else "partial_failure")
    assert wf["eventsUrl"] == f"/v1/creative-agent/workflows/{wf['workflowId']}/events"
    # The stand-in got one graph per call that was dispatched (a later call whose arguments
    # fail the tool's checks never reaches it), the first carrying the prompt the model wrote.
    prompts = standin.prompts()["prompts"][seen:]
    dispatched = [x for x in extra["sogni_tool_results"] if x.get("error_type") != "PARAMETER_INVALID"]
    assert len(prompts) == len(dispatched) and prompts[0]["error"] is None
    assert prompts[0]["graph"]["6"]["inputs"]["text"] == result["params"]["prompt"]
    # A URL with a changed signature or expiry is refused.
    bad = asset["url"].replace("sig=", "sig=00")
    assert httpx.get(bad).status_code == 403
    tampered = asset["url"].replace("exp=", "exp=1")
    assert httpx.get(tampered).status_code == 403


def test_streaming_shows_each_call_s_progress_and_ends_with_the_results(media, standin):
    acct, key, _ = media.account()
    chunks = list(forced(media.client(key), stream=True))
    notes = [c.model_extra["sogni_tool_progress"] for c in chunks if c.model_extra.get("sogni_tool_progress")]
    # The forced call's notes (later rounds may call other tools).
    progress = [p for p in notes if p["call_id"] == notes[0]["call_id"]]
    assert progress[0]["status"] == "queued" and progress[-1]["status"] == "completed"
    assert any(p["status"] == "in_progress" and 0 < p["progress"] < 1 for p in progress), progress
    assert all(p["tool"] == "sogni_generate_image" for p in progress)
    last = chunks[-1]
    assert last.choices[0].finish_reason in ("stop", "length")
    results = last.model_extra["sogni_tool_results"]
    png_ok(results[0]["output_assets"][0]["url"])
    every_ok = all(x["ok"] for x in results)
    assert last.model_extra["creative_workflows"][0]["status"] == ("completed" if every_ok else "partial_failure")


def test_a_hosted_call_is_billed_at_its_price_and_the_tokens_of_every_round(media):
    acct, key, _ = media.account()
    before, _ = media.balances(acct)
    r = forced(media.client(key))
    # A call refused for its arguments made (and costs) no image.
    images = sum(len(x.get("output_assets", [])) for x in r.model_extra["sogni_tool_results"])
    tokens = price(r.usage.prompt_tokens, r.usage.completion_tokens)
    # Each round settles on its own (rounded up once at the 18th decimal each).
    assert abs(spent(media, acct, before) - (tokens + IMAGE_SPARK * images)) < Decimal("1e-15")


def test_a_failed_media_job_releases_its_hold_and_reaches_the_model_as_an_error(media, standin):
    acct, key, _ = media.account()
    before, _ = media.balances(acct)
    standin.config(fail=True)
    try:
        r = forced(media.client(key))
    finally:
        standin.config(fail=False)
    results = r.model_extra["sogni_tool_results"]
    assert not any(x["ok"] for x in results), results
    made = [x for x in results if x["tool"] == "sogni_generate_image"]
    assert made and all(x == {**x, "error_type": "GENERATION_FAILED", "retryable": False} for x in made), results
    assert r.model_extra["creative_workflows"][0]["status"] == "failed"
    tokens = price(r.usage.prompt_tokens, r.usage.completion_tokens)
    assert abs(spent(media, acct, before) - tokens) < Decimal("1e-15")


def test_a_client_that_leaves_cancels_the_media_job_and_pays_for_no_media(media, standin):
    acct, key, _ = media.account()
    standin.config(delay=30)
    try:
        # The client (and its connection) goes once the job runs.
        with media.http(key) as http, http.stream("POST", "/v1/chat/completions", json={
                "model": MODEL_ID, "max_tokens": 60, "temperature": 0, "stream": True, "tool_choice": FORCE_IMAGE,
                "messages": [{"role": "user", "content": "A lighthouse at dawn."}]}) as r:
            for line in r.iter_lines():
                if '"in_progress"' in line:
                    break
        poll(lambda: standin.prompts()["interrupted"], "the stand-in to be interrupted")
    finally:
        standin.config(delay=0.2)
    # The media call's hold is released, and nothing is charged for it.
    def media_entries():
        ledger = media.admin("accounts", "show", "--account", acct, "--entries", "50")["ledger"]
        return [e for e in ledger if e["reference"].endswith("-t0-0")]
    entries = poll(lambda: [e for e in media_entries() if e["kind"] != "hold"] and media_entries(), "the media hold to be settled")
    assert {e["kind"] for e in entries} >= {"hold", "release"}, entries
    assert sum(Decimal(e["amount"]) for e in entries if e["kind"] == "settle") == 0, entries


def test_manual_mode_returns_the_raw_call_and_runs_and_bills_nothing_else(media, standin):
    acct, key, _ = media.account()
    before, _ = media.balances(acct)
    seen = len(standin.prompts()["prompts"])
    r = forced(media.client(key), extra_body={"sogni_tool_execution": False})
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls
    assert call.function.name == "sogni_generate_image"
    assert "prompt" in json.loads(call.function.arguments)
    assert "sogni_tool_results" not in r.model_extra
    assert len(standin.prompts()["prompts"]) == seen
    assert spent(media, acct, before) == price(r.usage.prompt_tokens, r.usage.completion_tokens)


def test_the_rich_family_resolves_a_result_index_in_a_later_round(media, standin):
    import hashlib
    acct, key, _ = media.account()
    # The model makes the image, then refines one of its outputs by index in a later round.
    # What it calls after the forced call depends on the results it read (fresh ids each
    # time), so the request is asked again until it does; the index resolution is then
    # checked exactly.
    for _ in range(4):
        seen = len(standin.prompts()["prompts"])
        r = media.client(key).chat.completions.create(
            model=MODEL_ID, max_tokens=100, temperature=0,
            tool_choice={"type": "function", "function": {"name": "generate_image"}},
            extra_body={"sogni_tools": "creative-agent"},
            messages=[{"role": "user", "content": "Make an image of a red fox, then refine that result to add snow."}])
        results = r.model_extra["sogni_tool_results"]
        made = results[0]
        assert made["tool"] == "generate_image" and made["ok"] and made["startIndex"] == 0, results
        if any(x["tool"] == "refine_result" and x["ok"] for x in results[1:]):
            break
    else:
        raise AssertionError(f"the model never refined its image: {results}")
    refine = next(x for x in results[1:] if x["tool"] == "refine_result" and x["ok"])
    # The images made before the refinement, by index; omitted, the index means the newest.
    before = results[:results.index(refine)]
    images = {i: a for x in before if x["ok"] for i, a in zip(x["indices"], x["output_assets"]) if a["type"] == "image"}
    index = refine["params"].get("sourceImageIndex", max(images))
    want = hashlib.sha256(httpx.get(images[index]["url"]).content).hexdigest()
    # The stand-in received exactly that image as an edit's input.
    edits = [p for p in standin.prompts()["prompts"][seen:] if "10" in p["graph"]]
    assert any(list(p["inputs"].values()) == [want] for p in edits), (want, [p["inputs"] for p in edits])
    # Later results number their outputs after the earlier ones.
    assert refine["startIndex"] >= len(made["indices"])


def test_an_index_that_names_nothing_reaches_the_model_as_asset_not_found(media, standin):
    acct, key, _ = media.account()
    r = media.client(key).chat.completions.create(
        model=MODEL_ID, max_tokens=60, temperature=0,
        tool_choice={"type": "function", "function": {"name": "refine_result"}},
        extra_body={"sogni_tools": "creative-agent"},
        messages=[{"role": "user", "content": "Refine image 7 to add snow."}])
    result = r.model_extra["sogni_tool_results"][0]
    assert result["ok"] is False and result["error_type"] == "ASSET_NOT_FOUND", result


def tool_schema(name):
    return json.loads((TOOLS / f"{name}.json").read_text())


COMPOSITION = {
    "enhance_prompt": {"prompt": "a fox in snow", "target_output": "image_prompt", "destination_model": "z-turbo"},
    "compose_script": {"brief": "a 10 second ad for coffee", "scene_count": 2},
    "compose_lyrics": {"prompt": "a song about the sea"},
    "compose_instrumental": {"prompt": "calm piano for studying"},
    "compose_workflow": {"brief": "a fox image, then animate it", "scene_count": 1},
    "compose_workflow_template": {"brief": "turn a selfie into a painting", "name": "Painted selfie"},
}


@pytest.mark.parametrize("tool", sorted(COMPOSITION))
def test_each_composition_tool_executes_directly_and_its_result_fits_its_schema(media, tool):
    acct, key, _ = media.account()
    before, _ = media.balances(acct)
    r = media.http(key).post("/v1/creative-agent/tools/execute", json={"tool": tool, "arguments": COMPOSITION[tool]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "success" and body["data"]["tool"] == tool
    jsonschema.validate(body["data"]["result"], tool_schema(tool)["result"])
    assert spent(media, acct, before) > 0, "the sub-generation's tokens are billed"


def test_composition_tools_refuse_bad_arguments_in_sogni_s_envelope(media):
    acct, key, _ = media.account()
    http = media.http(key)
    r = http.post("/v1/creative-agent/tools/execute", json={"tool": "enhance_prompt", "arguments": {**COMPOSITION["enhance_prompt"], "color": 1}})
    assert r.status_code == 400 and r.json()["status"] == "error" and "color" in r.json()["message"]
    r = http.post("/v1/creative-agent/tools/execute", json={"tool": "sogni_generate_image", "arguments": {}})
    assert r.status_code == 400 and "composition" in r.json()["message"]


def data_uri(mime, raw):
    import base64
    return f"data:{mime};base64,{base64.b64encode(raw).decode()}"


def tiny_png():
    out = io.BytesIO()
    Image.new("RGB", (4, 4), (200, 10, 10)).save(out, "PNG")
    return out.getvalue()


@pytest.mark.parametrize("body,param", [
    ({"media_references": [{"kind": "image", "url": "https://example.com/cat.png"}]}, "media_references[0].url"),
    ({"media_references": [{"kind": "image", "url": data_uri("image/png", b"\x89PNG not really")}]}, "media_references[0].url"),
    ({"media_references": [{"kind": "audio", "url": data_uri("audio/wav", b"RIFF....WAVE" + b"\0" * (11 << 20))}]}, "media_references[0].url"),
    ({"media_references": [{"kind": "image", "url": data_uri("image/gif", b"GIF89a")}]}, "media_references[0].url"),
    ({"sogni_tools": "everything"}, "sogni_tools"),
    ({"tools": [{"type": "function", "function": {"name": "sogni_generate_image", "parameters": {"type": "object"}}}]}, "tools[0].function.name"),
])
def test_bad_hosted_input_is_a_400_and_bills_nothing(media, body, param):
    acct, key, _ = media.account()
    before, _ = media.balances(acct)
    r = media.http(key).post("/v1/chat/completions", json={
        "model": MODEL_ID, "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}], **body})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param
    assert spent(media, acct, before) == 0


def test_a_good_media_reference_is_taken(media):
    acct, key, _ = media.account()
    r = media.http(key).post("/v1/chat/completions", json={
        "model": MODEL_ID, "max_tokens": 8, "sogni_tools": False,
        "media_references": [{"kind": "image", "url": data_uri("image/png", tiny_png())}],
        "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200, r.text


def test_a_remote_url_the_model_writes_is_a_tool_error_and_nothing_is_fetched(media, standin):
    acct, key, _ = media.account()
    seen = len(standin.prompts()["prompts"])
    r = media.client(key).chat.completions.create(
        model=MODEL_ID, max_tokens=120, temperature=0,
        tool_choice={"type": "function", "function": {"name": "sogni_edit_image"}},
        messages=[{"role": "user", "content": "Edit https://example.com/cat.png to make the cat blue."}])
    result = r.model_extra["sogni_tool_results"][0]
    assert result["ok"] is False and result["error_type"] == "PARAMETER_INVALID", result
    assert not any(p["graph"]["10"]["inputs"]["image"].startswith("http") for p in standin.prompts()["prompts"][seen:] if "10" in p.get("graph", {}))


def test_the_tool_list_says_which_hosted_tools_can_run(media, server):
    acct, key, _ = media.account()
    tools = {t["name"]: t for t in media.http(key).get("/v1/creative-agent/tools").json()["data"]["tools"]}
    assert tools["sogni_generate_image"]["available"] and "creative-tools" in tools["sogni_generate_image"]["modes"]
    assert not tools["stitch_video"]["available"], "no default graph runs stitch_video"
    assert tools["enhance_prompt"]["available"]
    # Without a media worker the media tools are neither listed as available nor offered.
    _, key2, _ = server.account()
    plain = {t["name"]: t for t in server.http(key2).get("/v1/creative-agent/tools").json()["data"]["tools"]}
    assert not plain["sogni_generate_image"]["available"]
    r = server.http(key2).post("/v1/chat/completions", json={
        "model": MODEL_ID, "max_tokens": 8, "tool_choice": FORCE_IMAGE, "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "tool_choice.function.name"


def test_our_rich_tools_are_named_as_in_sogni_s_protocol_manifest():
    from importlib.resources import files
    manifest = json.loads(files("sogni_client").joinpath("data/hosted_tools.json").read_text())
    theirs = {t["function"]["name"]: t["function"]["parameters"] for t in manifest["tools"]}
    for path in TOOLS.glob("*.json"):
        ours = json.loads(path.read_text())
        if ours["family"] == "default":
            continue
        assert ours["name"] in theirs, ours["name"]
        for required in theirs[ours["name"]].get("required", []):
            assert required in ours["parameters"]["required"], (ours["name"], required)


def test_account_me_answers_both_sdks(media):
    acct, key, _ = media.account()
    for headers in ({"api-key": key}, {"Authorization": f"Bearer {key}"}):
        r = httpx.get(media.url + "/v1/account/me", headers=headers)
        assert r.status_code == 200 and r.json()["data"]["accountId"] == acct
    r = httpx.get(media.url + "/v1/account/me", headers={"api-key": "nope"})
    assert r.status_code == 401 and r.json()["status"] == "error"


def test_sogni_s_python_sdk_runs_hosted_chat_and_execute_tool(media):
    from sogni_client import SogniClient

    acct, key, _ = media.account()

    async def go():
        async with await SogniClient.create(api_key=key, rest_endpoint=media.url, disable_socket=True) as s:
            r = await s.chat.hosted.create(
                model=MODEL_ID, max_tokens=60, temperature=0, tool_choice=FORCE_IMAGE,
                messages=[{"role": "user", "content": "A watercolor of a lighthouse."}])
            t = await s.chat.hosted.execute_tool(tool="enhance_prompt", arguments=COMPOSITION["enhance_prompt"])
            return r, t

    r, t = asyncio.run(go())
    assert r["sogni_tool_results"][0]["ok"], r
    png_ok(r["sogni_tool_results"][0]["output_assets"][0]["url"])
    data = t.get("data", t)
    jsonschema.validate(data["result"], tool_schema("enhance_prompt")["result"])
