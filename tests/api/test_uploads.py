"""Presigned media uploads (contract §4) on `supernet serve`: the upload URL routes, the
front's own upload routes (a presigned POST of form fields then `file`; the legacy presigned
PUT), their refusals (a tampered or expired signature 403, too large 413, the wrong type
415), download URLs, and an upload used as a workflow's `media_references`."""
import base64
import hashlib
import hmac
import json
import time

import httpx
import pytest

from conftest import Server, poll
from test_hosted_tools import standin  # noqa: F401 (the stand-in fixture)
from test_workflows import prompt_of

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")
WAV = b"RIFF" + (36).to_bytes(4, "little") + b"WAVEfmt " + bytes(28)


@pytest.fixture(scope="module")
def server(tmp_path_factory, standin):
    s = Server(tmp_path_factory.mktemp("uploads-serve"), args=["--media-backend", f"comfyui={standin.url}"])
    yield s
    s.stop()


@pytest.fixture(scope="module")
def key(server):
    _, key, _ = server.account(spark="100")
    return key


def post_form(form, data, content_type="image/png", **fields):
    files = {"file": ("upload.bin", data, content_type)}
    return httpx.post(form["url"], data={**form["fields"], **fields}, files=files, timeout=120)


def upload_png(http, job="job-1", slot="startingImage", data=PNG):
    form = http.get("/v2/image/uploadUrl", params={"jobId": job, "type": slot, "contentType": "image/png"}).json()["data"]
    r = post_form(form, data)
    assert r.status_code == 204, r.text
    return http.get("/v2/image/downloadUrl", params={"jobId": job, "type": slot}).json()["data"]["downloadUrl"]


def test_a_posted_file_comes_back_through_its_download_url_and_feeds_a_workflow(server, key, standin):
    http = server.http(key)
    form = http.get("/v2/image/uploadUrl", params={"jobId": "j1", "type": "startingImage", "contentType": "image/png"}).json()["data"]
    assert form["url"].endswith("/v2/uploads") and set(form["fields"]) == {"key", "Content-Type", "policy", "signature"}
    # Nothing to download before the upload.
    assert http.get("/v2/image/downloadUrl", params={"jobId": "j1", "type": "startingImage"}).status_code == 404
    assert post_form(form, PNG).status_code == 204
    url = http.get("/v2/image/downloadUrl", params={"jobId": "j1", "type": "startingImage"}).json()["data"]["downloadUrl"]
    got = httpx.get(url, timeout=30)
    assert got.status_code == 200 and got.content == PNG and got.headers["content-type"] == "image/png"
    # The v1 download route names the same slot.
    assert http.get("/v1/image/downloadUrl", params={"jobId": "j1", "type": "startingImage"}).json()["data"]["downloadUrl"].split("?")[0] == url.split("?")[0]
    plan = {"steps": [{"id": "edit", "toolName": "edit_image", "arguments": {"prompt": "the uploaded photo, restyled"},
                       "dependsOn": [{"sourceStepId": "$input_media", "targetArgument": "sourceImageIndex", "transform": "image_index"}]}]}
    r = http.post("/v1/creative-agent/workflows", json={"input": plan, "media_references": [{"url": url}]})
    assert r.status_code == 201, r.text
    wid = r.json()["data"]["workflow"]["workflowId"]
    poll(lambda: http.get(f"/v1/creative-agent/workflows/{wid}").json()["data"]["workflow"]["status"] == "completed",
         "the workflow on the upload to complete", timeout=60)
    edit = prompt_of(standin, "the uploaded photo, restyled")
    assert list(edit["inputs"].values()) == [hashlib.sha256(PNG).hexdigest()]
    done = http.get(f"/v1/creative-agent/workflows/{wid}").json()["data"]["workflow"]
    assert done["steps"][0]["arguments"]["sourceImageIndex"] == -1
    # A durable chat run takes the same URL.
    r = http.post("/v1/chat/runs", json={"messages": [{"role": "user", "content": "Describe the photo."}],
                                         "media_references": [{"url": url}], "sampling": {"max_tokens": 8}})
    assert r.status_code == 202, r.text
    assert r.json()["data"]["run"]["mediaContext"]["uploadedImages"] == [url]


def test_the_legacy_put_and_media_slots(server, key):
    http = server.http(key)
    r = http.get("/v1/media/uploadUrl", params={"jobId": "j2", "type": "referenceAudio", "contentType": "audio/wav"})
    put = r.json()["data"]["uploadUrl"]
    assert httpx.put(put, content=WAV, headers={"Content-Type": "audio/mpeg"}, timeout=30).status_code == 403
    assert httpx.put(put, content=WAV, headers={"Content-Type": "audio/wav"}, timeout=30).status_code == 200
    url = http.get("/v2/media/downloadUrl", params={"jobId": "j2", "type": "referenceAudio"}).json()["data"]["downloadUrl"]
    assert httpx.get(url, timeout=30).content == WAV
    form = http.get("/v2/media/uploadUrl", params={"jobId": "j3", "type": "referenceVideo", "contentType": "video/mp4"}).json()["data"]
    mp4 = b"\0\0\0\x18ftypisom" + bytes(64)
    assert post_form(form, mp4, "video/mp4").status_code == 204


def sign(server, policy):
    secret = (server.data_dir / "media" / "url.key").read_bytes()
    encoded = base64.urlsafe_b64encode(json.dumps(policy).encode()).rstrip(b"=").decode()
    return encoded, hmac.new(secret, b"policy\n" + encoded.encode(), hashlib.sha256).hexdigest()


def test_tampered_expired_oversized_and_wrong_type_uploads_are_refused(server, key):
    http = server.http(key)
    form = http.get("/v2/image/uploadUrl", params={"jobId": "j4", "type": "cnImage", "contentType": "image/png"}).json()["data"]
    f = form["fields"]
    assert post_form(form, PNG, signature="0" * 64).status_code == 403
    policy = json.loads(base64.urlsafe_b64decode(f["policy"] + "=" * (-len(f["policy"]) % 4)))
    bigger = base64.urlsafe_b64encode(json.dumps({**policy, "max_bytes": 1 << 40}).encode()).rstrip(b"=").decode()
    r = post_form(form, PNG, policy=bigger)
    assert r.status_code == 403 and r.json()["status"] == "error"
    assert post_form(form, PNG, key="image-upother").status_code == 403
    encoded, sig = sign(server, {**policy, "exp": int(time.time()) - 1})
    r = post_form(form, PNG, policy=encoded, signature=sig)
    assert r.status_code == 403 and "expired" in r.json()["message"]
    # The test's own signature is right: the same policy unexpired goes through.
    encoded, sig = sign(server, {**policy, "exp": int(time.time()) + 60})
    assert post_form(form, PNG, policy=encoded, signature=sig).status_code == 204
    # Not a PNG, whatever its part says; more than 100 MB.
    r = post_form(form, b"%PDF-1.4 not an image")
    assert r.status_code == 415, r.text
    r = post_form(form, b"\x89PNG\r\n\x1a\n" + bytes(100 * 1024 * 1024))
    assert r.status_code == 413, r.text[:200]
    r = http.get("/v2/image/uploadUrl", params={"jobId": "j4", "type": "cnImage", "contentType": "application/pdf"})
    assert r.status_code == 400 and "contentType" in r.json()["message"]
    assert http.get("/v2/image/uploadUrl", params={"jobId": "j4", "type": "poster", "contentType": "image/png"}).status_code == 400
    assert http.get("/v2/media/uploadUrl", params={"jobId": "j4", "type": "referenceAudio", "contentType": "image/png"}).status_code == 400


def test_another_account_cannot_reach_an_upload(server, key):
    http = server.http(key)
    url = upload_png(http, job="mine")
    _, other, _ = server.account(spark="10")
    o = server.http(other)
    assert o.get("/v2/image/downloadUrl", params={"jobId": "mine", "type": "startingImage"}).status_code == 404
    r = o.post("/v1/creative-agent/workflows", json={
        "input": {"steps": [{"toolName": "generate_image", "arguments": {"prompt": "x"}}]},
        "media_references": [{"url": url}]})
    assert r.status_code == 400 and "media_references[0]" in r.json()["message"]
    for path in ["/v2/image/uploadUrl", "/v2/media/uploadUrl", "/v1/image/uploadUrl", "/v1/media/uploadUrl",
                 "/v2/image/downloadUrl", "/v1/media/downloadUrl"]:
        assert httpx.get(server.url + path, params={"jobId": "x", "type": "startingImage"}).status_code == 401
