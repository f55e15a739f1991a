"""Vision input through the API with the official `openai` client: images in user messages
read by the tiny vision towers of tests/data/vision, compared with libmtmd's references
(made with the same model, images and rendered prompt: `three` in cases.tsv)."""
import base64
import json
import shutil
import signal
import threading

import httpx
import openai
import pytest

from conftest import MODEL_ID, REPO, assert_billed_exactly_once, poll

VISION = REPO / "tests/data/vision"
SMOLVLM_ID = "tiny-smolvlm-q8_0"
PROMPT_PARTS = ["square", "Compare these.", "wide", "tall"]


def data_uri(path, mime="image/png"):
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode()


def image_part(name):
    return {"type": "image_url", "image_url": {"url": data_uri(VISION / "images" / f"{name}.png")}}


def three_images():
    return [image_part(p) if p in ("square", "wide", "tall") else {"type": "text", "text": p} for p in PROMPT_PARTS]


@pytest.fixture(scope="module")
def vision_server(tmp_path_factory):
    """SmolVLM-style tiny model with its tower, found beside it by llama.cpp's file naming."""
    from conftest import Server
    d = tmp_path_factory.mktemp("vision-models")
    shutil.copy(VISION / "tiny-smolvlm-q8_0.gguf", d / "tiny-smolvlm-q8_0.gguf")
    shutil.copy(VISION / "tiny-mmproj-idefics3.gguf", d / "mmproj-tiny-smolvlm-q8_0.gguf")
    s = Server(tmp_path_factory.mktemp("vision-serve"), models=(d / "tiny-smolvlm-q8_0.gguf",))
    yield s
    s.stop()


def reference(name):
    return json.loads((VISION / "refs/idefics3" / f"{name}.json").read_text())


def token_bytes(logprobs):
    return [list(t.bytes) for t in logprobs]


def test_three_images_give_llama_cpps_tokens_streaming_or_not(vision_server):
    ref = reference("three")
    _, key, _ = vision_server.account()
    client = vision_server.client(key)
    ask = dict(model=SMOLVLM_ID, messages=[{"role": "user", "content": three_images()}],
               temperature=0, max_tokens=len(ref["generated"]), logprobs=True)
    r = client.chat.completions.create(**ask)
    prompt_len = sum(len(c["tokens"]) if c["type"] == "text" else c["n_tokens"] for c in ref["chunks"])
    assert r.usage.prompt_tokens == prompt_len
    assert token_bytes(r.choices[0].logprobs.content) == ref["pieces"]

    streamed = []
    for chunk in client.chat.completions.create(**ask, stream=True):
        if chunk.choices and chunk.choices[0].logprobs:
            streamed += token_bytes(chunk.choices[0].logprobs.content)
    assert streamed == ref["pieces"]


def test_models_report_vision(vision_server, server):
    _, key, _ = vision_server.account()
    models = {m["id"]: m for m in vision_server.http(key).get("/v1/models").json()["data"]}
    assert models[SMOLVLM_ID]["capabilities"]["vision"] is True
    _, key, _ = server.account()
    models = {m["id"]: m for m in server.http(key).get("/v1/models").json()["data"]}
    assert models[MODEL_ID]["capabilities"]["vision"] is False


def test_a_resent_image_is_read_from_the_prefix_cache(vision_server, make_server):
    _, key, _ = vision_server.account()
    client = vision_server.client(key)
    first = [{"role": "user", "content": [image_part("wide"), {"type": "text", "text": "What is it?"}]}]
    r1 = client.chat.completions.create(model=SMOLVLM_ID, messages=first, temperature=0, max_tokens=8)
    encoded = vision_server.metric("supernet:images_encoded_total")
    hits = vision_server.metric("supernet:image_cache_hits_total")
    second = first + [{"role": "assistant", "content": r1.choices[0].message.content},
                      {"role": "user", "content": "And the colours?"}]
    r2 = client.chat.completions.create(model=SMOLVLM_ID, messages=second, temperature=0, max_tokens=8)
    assert vision_server.metric("supernet:images_encoded_total") == encoded
    assert vision_server.metric("supernet:image_cache_hits_total") == hits + 1

    # The same output as a server that encodes everything afresh.
    fresh_dir = vision_server.data_dir.parent / "fresh-models"
    fresh_dir.mkdir(exist_ok=True)
    shutil.copy(VISION / "tiny-smolvlm-q8_0.gguf", fresh_dir / "tiny-smolvlm-q8_0.gguf")
    cold = make_server(args=("--no-prefix-cache", "--mmproj", str(VISION / "tiny-mmproj-idefics3.gguf")),
                       models=(fresh_dir / "tiny-smolvlm-q8_0.gguf",))
    _, cold_key, _ = cold.account()
    r3 = cold.client(cold_key).chat.completions.create(model=SMOLVLM_ID, messages=second, temperature=0, max_tokens=8)
    assert r3.choices[0].message.content == r2.choices[0].message.content
    assert cold.metric("supernet:images_encoded_total") == 1


def bad(server, key, content, model=SMOLVLM_ID):
    r = server.http(key).post("/v1/chat/completions", json={
        "model": model, "messages": [{"role": "user", "content": content}], "max_tokens": 4})
    assert r.status_code == 400, r.text
    return r.json()["error"]


def test_bad_images_are_400s_naming_the_field_and_nothing_is_held(vision_server, server):
    acct, key, _ = vision_server.account()
    before = vision_server.balances(acct)
    tiny = image_part("square")

    e = bad(vision_server, key, [tiny] * 21)
    assert e["param"] == "messages" and "21 images" in e["message"]

    big = "data:image/png;base64," + base64.b64encode(b"\x89PNG" + bytes(11 * 1024 * 1024)).decode()
    e = bad(vision_server, key, [{"type": "image_url", "image_url": {"url": big}}])
    assert e["param"] == "messages[0].content[0].image_url.url" and "10 MB" in e["message"]

    corrupt = (VISION / "images/wide.png").read_bytes()[:2000]
    e = bad(vision_server, key, [{"type": "text", "text": "hi"},
                                 {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(corrupt).decode()}}])
    assert e["param"] == "messages[0].content[1].image_url.url" and "decoded" in e["message"]

    gif = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
    e = bad(vision_server, key, [{"type": "image_url", "image_url": {"url": "data:image/gif;base64," + base64.b64encode(gif).decode()}}])
    assert e["param"] == "messages[0].content[0].image_url.url" and "gif" in e["message"]
    e = bad(vision_server, key, [{"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(gif).decode()}}])
    assert e["param"] == "messages[0].content[0].image_url.url"

    e = bad(vision_server, key, [{"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}])
    assert e["param"] == "messages[0].content[0].image_url.url" and "remote" in e["message"]

    assert vision_server.balances(acct) == before

    acct, key, _ = server.account()
    before = server.balances(acct)
    e = bad(server, key, [tiny], model=MODEL_ID)
    assert e["param"] == "messages" and MODEL_ID in e["message"]
    assert server.balances(acct) == before


def test_a_jobs_images_cross_the_bus_once_and_move_with_a_failover(cluster):
    """In a cluster the images are stored once, as blobs beside the streams: the placement
    and the worker's inbox name them. The job's first worker hangs before it starts; its
    next attempt goes to a worker that joins later, which reads and encodes the same images
    and gives libmtmd's tokens. The blobs are gone when the turn ends."""
    ref = reference("three")
    mmproj = ("--mmproj", str(VISION / "tiny-mmproj-idefics3.gguf"))
    model = VISION / "tiny-smolvlm-q8_0.gguf"
    cluster.coordinator("coord1")
    cluster.worker("w1", 1, *mmproj, model=model)
    url = cluster.front("front1")
    cluster.wait_workers(url, 1)
    acct, key = cluster.account()
    client = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=120)
    image_bytes = sum(len((VISION / "images" / f"{n}.png").read_bytes()) for n in ("square", "wide", "tall"))

    cluster.signal("w1", signal.SIGSTOP)
    out = {}

    def ask():
        stream = client.chat.completions.create(
            model=SMOLVLM_ID, messages=[{"role": "user", "content": three_images()}], temperature=0,
            max_tokens=len(ref["generated"]), logprobs=True, stream=True, stream_options={"include_usage": True})
        out["pieces"] = []
        for chunk in stream:
            if chunk.choices and chunk.choices[0].logprobs:
                out["pieces"] += token_bytes(chunk.choices[0].logprobs.content)
            if chunk.usage:
                out["usage"] = chunk.usage

    asking = threading.Thread(target=ask)
    asking.start()
    inbox, images = cluster.bus_key("worker:w1"), cluster.bus_key("image:*")
    poll(lambda: cluster.redis_cli("XLEN", inbox) == "1", "the job to reach w1's inbox")
    blobs = cluster.redis_cli("--scan", "--pattern", images).split()
    assert len(blobs) == 3
    assert sum(int(cluster.redis_cli("STRLEN", b)) for b in blobs) == image_bytes
    for stream in (inbox, cluster.bus_key("coordinator")):
        used = int(cluster.redis_cli("MEMORY", "USAGE", stream, "SAMPLES", "0"))
        assert used < image_bytes / 4, f"{stream} holds {used} bytes: the images went in the message"

    cluster.worker("w2", 1, *mmproj, model=model)
    asking.join(timeout=150)
    cluster.signal("w1", signal.SIGCONT)
    assert out.get("pieces") == ref["pieces"]
    assert cluster.metric(url, "supernet:failovers_total", model=SMOLVLM_ID) == 1
    assert cluster.redis_cli("XLEN", cluster.bus_key("worker:w2")) == "1"
    poll(lambda: not cluster.redis_cli("--scan", "--pattern", images), "the images to be dropped")
    assert_billed_exactly_once(cluster, acct, [out["usage"]])
