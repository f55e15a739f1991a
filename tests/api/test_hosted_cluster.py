"""Hosted tools in a cluster: a front, a coordinator, an LLM worker and two media workers as
separate processes on one Redis, the media store an S3 bucket (moto's S3 server stands in
for S3), ComfyUI stood in for (tests/support/comfyui_standin.py). A media worker killed mid-job hands the job to the other,
which finds the backend job the first one recorded and waits for it: one image is made, the
client gets one result, and the call is billed once."""
import re
import subprocess
import sys
import threading
from decimal import Decimal

import httpx

from conftest import MODEL_ID, free_port, poll
from test_hosted_tools import FORCE_IMAGE, IMAGE_SPARK, Standin, png_ok


def start_front(cluster, store):
    cluster.spawn("front", "front", "--redis", cluster.redis_url, "--port", "0", "--media-store", str(store))
    m = poll(lambda: re.search(r"listening on (http://[\d.]+:\d+)", cluster.logs("front")), "the front to listen", timeout=60)
    return m.group(1)


class S3:
    """moto's S3 server on a free port, with one bucket."""

    def __init__(self, root):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(root / "moto.log", "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-p", str(self.port)],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        poll(self.up, "moto's S3 server", timeout=60)
        assert httpx.put(f"{self.url}/media").status_code == 200
        self.env = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
                    "AWS_ENDPOINT": self.url, "AWS_ALLOW_HTTP": "true"}

    def up(self):
        try:
            return httpx.get(self.url, timeout=2).status_code < 500
        except httpx.HTTPError:
            return False

    def keys(self):
        return re.findall(r"<Key>([^<]+)</Key>", httpx.get(f"{self.url}/media?list-type=2").text)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.log.close()


def test_a_killed_media_worker_s_job_moves_and_is_made_and_billed_once(cluster, tmp_path):
    standin = Standin(tmp_path, delay=8)
    s3 = S3(tmp_path)
    cluster.env.update(s3.env)
    store = "s3://media/supernet"
    try:
        cluster.coordinator("coord")
        cluster.worker("w1", 2)
        for name in ("m1", "m2"):
            cluster.spawn(name, "worker", "--redis", cluster.redis_url, "--kind", "media", "--worker-id", name,
                          "--backend", f"comfyui={standin.url}", "--media-store", str(store))
        url = start_front(cluster, store)
        cluster.wait_workers(url, 3)
        acct, key = cluster.account()
        http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=300)
        poll(lambda: http.get("/v1/creative-agent/tools").json()["data"]["pipelines"], "the media pipelines")
        out = {}

        def ask():
            out["r"] = http.post("/v1/chat/completions", json={
                "model": MODEL_ID, "max_tokens": 60, "temperature": 0, "tool_choice": FORCE_IMAGE,
                "messages": [{"role": "user", "content": "A neon alley in Tokyo in the rain."}]})

        t = threading.Thread(target=ask)
        t.start()
        # The job reaches ComfyUI through one media worker; that worker dies mid-job.
        poll(lambda: standin.prompts()["prompts"], "the job to reach the stand-in", timeout=120)
        first = poll(lambda: next((n for n in ("m1", "m2") if "media job started" in cluster.logs(n)), None), "a media worker")
        cluster.kill(first)
        other = "m2" if first == "m1" else "m1"
        t.join(timeout=240)
        r = out["r"]
        assert r.status_code == 200, r.text
        body = r.json()
        results = [x for x in body["sogni_tool_results"] if x["tool"] == "sogni_generate_image"]
        assert results[0]["ok"], results
        asset = results[0]["output_assets"][0]
        png_ok(asset["url"])
        # The output is in the bucket (and the front served it from there).
        assert f"supernet/assets/{asset['asset_id']}/data" in s3.keys()
        assert "resuming the backend job" in cluster.logs(other)
        # One prompt per call reached ComfyUI: the retry waited for the first one.
        assert len(standin.prompts()["prompts"]) == len(results)
        # The media call is billed once, at its price.
        ledger = cluster.ledger(acct)
        media = [e for e in ledger if e["kind"] == "settle" and re.search(r"-t\d+-\d+$", e["reference"])]
        assert len(media) == len(results) and len({e["reference"] for e in media}) == len(media), ledger
        images = sum(len(x["output_assets"]) for x in results if x["ok"])
        assert sum(Decimal(e["amount"]) for e in media) == IMAGE_SPARK * images
    finally:
        standin.stop()
        s3.stop()


def test_uploads_go_straight_to_the_bucket_with_s3s_own_presigned_post_and_put(cluster, tmp_path):
    from test_uploads import PNG, WAV
    s3 = S3(tmp_path)
    cluster.env.update(s3.env)
    try:
        url = start_front(cluster, "s3://media/supernet")
        _, key = cluster.account()
        http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60)
        form = http.get("/v2/image/uploadUrl", params={"jobId": "s3", "type": "startingImage", "contentType": "image/png"}).json()["data"]
        # The form posts to the bucket itself, with SigV4 policy fields.
        assert form["url"] == f"{s3.url}/media"
        assert form["fields"]["key"].startswith("supernet/assets/image-up") and form["fields"]["x-amz-signature"]
        r = httpx.post(form["url"], data=form["fields"], files={"file": ("a.png", PNG, "image/png")}, timeout=60)
        assert r.status_code in (200, 201, 204), r.text
        assert form["fields"]["key"] in s3.keys()
        down = http.get("/v2/image/downloadUrl", params={"jobId": "s3", "type": "startingImage"}).json()["data"]["downloadUrl"]
        got = httpx.get(down, timeout=30)
        assert got.status_code == 200 and got.content == PNG
        put = http.get("/v1/media/uploadUrl", params={"jobId": "s3", "type": "referenceAudio", "contentType": "audio/wav"}).json()["data"]["uploadUrl"]
        assert put.startswith(s3.url) and "X-Amz-Signature" in put
        assert httpx.put(put, content=WAV, timeout=30).status_code == 200
        down = http.get("/v1/media/downloadUrl", params={"jobId": "s3", "type": "referenceAudio"}).json()["data"]["downloadUrl"]
        assert httpx.get(down, timeout=30).content == WAV
    finally:
        s3.stop()
