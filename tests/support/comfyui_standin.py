"""A stand-in for ComfyUI's HTTP/WebSocket API, for tests (ComfyUI and diffusion models
cannot run on a machine without a GPU). It speaks the real routes with the real shapes
(`POST /prompt`, `GET /history/{id}` empty until done, `GET /queue`, `GET /view`,
`POST /upload/image`, `POST /interrupt`, `POST /queue {delete}`, `/ws?clientId=` progress),
validates every graph it gets (known node classes, links to existing nodes, an output node,
loaders naming uploaded files), records it, and "runs" it for `--delay` seconds, producing a
deterministic PNG, WAV or MP4 from the graph's text inputs (and input images).

Test hooks under /standin/: `GET /standin/prompts` (what was submitted, with the hashes of
the input files each used), `POST /standin/restart` (forget history and queue, as a
restarted ComfyUI does), `POST /standin/config {"delay": s, "fail": bool}`.

It also serves the OpenAI images API (`POST /v1/images/generations`, `/v1/images/edits`) for
the `openai-images` backend.

Run: python tests/support/comfyui_standin.py --port N [--delay 0.2]
"""
import argparse
import asyncio
import base64
import hashlib
import json
import time
import struct
import uuid
import zlib

from aiohttp import web, WSMsgType

KNOWN = {
    "CheckpointLoaderSimple", "EmptyLatentImage", "CLIPTextEncode", "KSampler", "VAEDecode", "SaveImage",
    "LoadImage", "VAEEncode", "UNETLoader", "CLIPLoader", "VAELoader", "EmptyHunyuanLatentVideo",
    "VHS_VideoCombine", "WanImageToVideo", "LoadAudio", "AudioEncoderLoader", "AudioEncoderEncode",
    "WanSoundImageToVideo", "VHS_LoadVideo", "TextEncodeAceStepAudio", "EmptyAceStepLatentAudio",
    "ConditioningZeroOut", "VAEDecodeAudio", "SaveAudio", "ImageBlend",
}
OUTPUTS = {"SaveImage", "VHS_VideoCombine", "SaveAudio"}
LOADERS = {"LoadImage": "image", "LoadAudio": "audio", "VHS_LoadVideo": "video"}


def png(width, height, seed: bytes) -> bytes:
    r, g, b = seed[0], seed[1], seed[2]
    row = b"\x00" + bytes([r, g, b]) * width
    raw = row * height
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def wav(seconds, seed: bytes) -> bytes:
    rate, n = 8000, int(8000 * seconds)
    data = bytes((seed[i % len(seed)] for i in range(n)))
    fmt = struct.pack("<4sIHHIIHH", b"fmt ", 16, 1, 1, rate, rate, 1, 8)
    return b"RIFF" + struct.pack("<I", 4 + len(fmt) + 8 + n) + b"WAVE" + fmt + b"data" + struct.pack("<I", n) + data


def mp4(seed: bytes) -> bytes:
    ftyp = struct.pack(">I", 24) + b"ftypisom" + struct.pack(">I", 512) + b"isomiso2"
    mdat = struct.pack(">I", 8 + len(seed)) + b"mdat" + seed
    return ftyp + mdat


class Standin:
    def __init__(self, delay):
        self.delay = delay
        self.fail = False
        self.history = {}
        self.running = {}      # prompt_id -> task
        self.order = []        # queue order
        self.prompts = []      # what was submitted
        self.uploads = {}      # name -> bytes
        self.outputs = {}      # filename -> bytes
        self.sockets = {}      # client_id -> ws
        self.interrupted = []
        self.counter = 0

    def validate(self, graph):
        errors = {}
        if not isinstance(graph, dict) or not graph:
            return "the graph must be a non-empty object", errors
        for nid, node in graph.items():
            cls = node.get("class_type") if isinstance(node, dict) else None
            if cls not in KNOWN:
                errors[nid] = {"errors": [{"type": "invalid_prompt", "message": f"unknown class {cls!r}"}], "class_type": cls}
                continue
            for name, v in node.get("inputs", {}).items():
                if isinstance(v, list) and len(v) == 2 and isinstance(v[0], str) and v[0] not in graph:
                    errors[nid] = {"errors": [{"type": "bad_linked_input", "message": f"{name} links to missing node {v[0]}"}], "class_type": cls}
            if cls in LOADERS:
                f = node["inputs"].get(LOADERS[cls])
                if f not in self.uploads:
                    errors[nid] = {"errors": [{"type": "value_not_in_list", "message": f"{f!r} is not an uploaded file"}], "class_type": cls}
        if not any(n.get("class_type") in OUTPUTS for n in graph.values() if isinstance(n, dict)):
            return "prompt_no_outputs", errors
        return (None if not errors else "prompt_outputs_failed_validation"), errors

    async def broadcast(self, client_id, event):
        ws = self.sockets.get(client_id)
        if ws is not None and not ws.closed:
            try:
                await ws.send_str(json.dumps(event))
            except ConnectionError:
                pass

    def stamp(self, pid, field):
        for p in self.prompts:
            if p.get("prompt_id") == pid:
                p[field] = time.time()

    async def execute(self, pid, graph, client_id):
        self.stamp(pid, "started")
        try:
            await self.broadcast(client_id, {"type": "execution_start", "data": {"prompt_id": pid}})
            steps = 4
            for i in range(steps):
                await asyncio.sleep(self.delay / steps)
                await self.broadcast(client_id, {"type": "progress", "data": {"value": i + 1, "max": steps, "prompt_id": pid, "node": "3"}})
            texts = [v for n in graph.values() for k, v in n.get("inputs", {}).items() if isinstance(v, str) and k in ("text", "tags", "lyrics")]
            inputs = [self.uploads[n["inputs"][LOADERS[n["class_type"]]]] for n in graph.values() if n.get("class_type") in LOADERS]
            seed = hashlib.sha256(json.dumps(texts).encode() + b"".join(inputs)).digest()
            outputs = {}
            if self.fail:
                raise RuntimeError("the stand-in was told to fail")
            for nid, n in graph.items():
                cls = n["class_type"]
                if cls == "SaveImage":
                    latent = next((m["inputs"] for m in graph.values() if m["class_type"] == "EmptyLatentImage"), {})
                    count = int(latent.get("batch_size", 1))
                    w, h = int(latent.get("width", 64)) // 16, int(latent.get("height", 64)) // 16
                    files = []
                    for k in range(count):
                        name = f"supernet_{pid[:8]}_{k}.png"
                        self.outputs[name] = png(max(w, 1), max(h, 1), hashlib.sha256(seed + bytes([k])).digest())
                        files.append({"filename": name, "subfolder": "", "type": "output"})
                    outputs[nid] = {"images": files}
                elif cls == "VHS_VideoCombine":
                    name = f"supernet_{pid[:8]}.mp4"
                    self.outputs[name] = mp4(seed)
                    outputs[nid] = {"gifs": [{"filename": name, "subfolder": "", "type": "output", "format": "video/h264-mp4", "frame_rate": 16}]}
                elif cls == "SaveAudio":
                    secs = next((m["inputs"].get("seconds", 1) for m in graph.values() if m["class_type"] == "EmptyAceStepLatentAudio"), 1)
                    name = f"supernet_{pid[:8]}.wav"
                    self.outputs[name] = wav(min(float(secs), 5.0), seed)
                    outputs[nid] = {"audio": [{"filename": name, "subfolder": "", "type": "output"}]}
            self.history[pid] = {"prompt": [0, pid, graph, {}, list(outputs)], "outputs": outputs,
                                 "status": {"status_str": "success", "completed": True, "messages": [["execution_success", {"prompt_id": pid}]]}}
            await self.broadcast(client_id, {"type": "execution_success", "data": {"prompt_id": pid}})
        except asyncio.CancelledError:
            self.history[pid] = {"prompt": [0, pid, graph, {}, []], "outputs": {},
                                 "status": {"status_str": "error", "completed": False, "messages": [["execution_interrupted", {"prompt_id": pid}]]}}
        except RuntimeError as e:
            self.history[pid] = {"prompt": [0, pid, graph, {}, []], "outputs": {},
                                 "status": {"status_str": "error", "completed": False, "messages": [["execution_error", {"prompt_id": pid, "exception_message": str(e)}]]}}
        finally:
            self.stamp(pid, "finished")
            self.running.pop(pid, None)
            if pid in self.order:
                self.order.remove(pid)
            await self.broadcast(client_id, {"type": "executing", "data": {"node": None, "prompt_id": pid}})


def app(delay):
    s = Standin(delay)
    routes = web.RouteTableDef()

    @routes.post("/prompt")
    async def prompt(request):
        body = await request.json()
        if "prompt" not in body:
            return web.json_response({"error": {"type": "no_prompt", "message": "No prompt provided", "details": "", "extra_info": {}}, "node_errors": {}}, status=400)
        graph = body["prompt"]
        err, node_errors = s.validate(graph)
        pid = body.get("prompt_id") or str(uuid.uuid4())
        inputs = {n["inputs"][LOADERS[n["class_type"]]]: hashlib.sha256(s.uploads[n["inputs"][LOADERS[n["class_type"]]]]).hexdigest()
                  for n in graph.values() if isinstance(n, dict) and n.get("class_type") in LOADERS and n["inputs"].get(LOADERS[n["class_type"]]) in s.uploads}
        s.prompts.append({"prompt_id": pid, "client_id": body.get("client_id"), "graph": graph, "inputs": inputs, "error": err})
        if err:
            return web.json_response({"error": {"type": err, "message": err, "details": "", "extra_info": {}}, "node_errors": node_errors}, status=400)
        s.counter += 1
        s.order.append(pid)
        s.running[pid] = asyncio.create_task(s.execute(pid, graph, body.get("client_id")))
        return web.json_response({"prompt_id": pid, "number": s.counter, "node_errors": {}})

    @routes.get("/history/{pid}")
    async def history(request):
        pid = request.match_info["pid"]
        return web.json_response({pid: s.history[pid]} if pid in s.history else {})

    @routes.get("/queue")
    async def queue(request):
        items = [[i, pid, {}, {}, []] for i, pid in enumerate(s.order)]
        return web.json_response({"queue_running": items[:1], "queue_pending": items[1:]})

    @routes.post("/queue")
    async def queue_edit(request):
        body = await request.json()
        for pid in body.get("delete", []):
            t = s.running.get(pid)
            if t is not None and s.order and s.order[0] != pid:
                t.cancel()
        return web.Response()

    @routes.post("/interrupt")
    async def interrupt(request):
        body = await request.json() if request.can_read_body else {}
        pid = body.get("prompt_id")
        for p, t in list(s.running.items()):
            if pid is None or p == pid:
                s.interrupted.append(p)
                t.cancel()
        return web.Response()

    @routes.get("/view")
    async def view(request):
        name = request.query.get("filename", "")
        if name.startswith("/") or ".." in name:
            return web.Response(status=400)
        store = s.uploads if request.query.get("type") == "input" else s.outputs
        if name not in store:
            return web.Response(status=404)
        return web.Response(body=store[name], headers={"Content-Disposition": f'filename="{name}"'})

    @routes.post("/upload/image")
    async def upload(request):
        form = await request.post()
        f = form.get("image")
        if f is None or not hasattr(f, "file"):
            return web.Response(status=400, text="no image")
        s.uploads[f.filename] = f.file.read()
        return web.json_response({"name": f.filename, "subfolder": "", "type": "input"})

    @routes.get("/ws")
    async def ws(request):
        sock = web.WebSocketResponse()
        await sock.prepare(request)
        cid = request.query.get("clientId") or uuid.uuid4().hex
        s.sockets[cid] = sock
        await sock.send_str(json.dumps({"type": "status", "data": {"status": {"exec_info": {"queue_remaining": len(s.order)}}, "sid": cid}}))
        async for msg in sock:
            if msg.type == WSMsgType.ERROR:
                break
        s.sockets.pop(cid, None)
        return sock

    @routes.get("/system_stats")
    async def stats(request):
        return web.json_response({"system": {"comfyui_version": "standin"}, "devices": []})

    # ---- test hooks -----------------------------------------------------------------
    @routes.get("/standin/prompts")
    async def prompts(request):
        return web.json_response({"prompts": s.prompts, "interrupted": s.interrupted})

    @routes.post("/standin/restart")
    async def restart(request):
        for t in list(s.running.values()):
            t.cancel()
        await asyncio.sleep(0)
        s.history.clear()
        s.order.clear()
        return web.json_response({"restarted": True})

    @routes.post("/standin/config")
    async def config(request):
        body = await request.json()
        s.delay = float(body.get("delay", s.delay))
        s.fail = bool(body.get("fail", s.fail))
        return web.json_response({"delay": s.delay, "fail": s.fail})

    # ---- the OpenAI images API ---------------------------------------------------------
    @routes.post("/v1/images/generations")
    async def generations(request):
        body = await request.json()
        s.prompts.append({"openai": "generations", "body": body})
        n = int(body.get("n", 1))
        seed = hashlib.sha256(body.get("prompt", "").encode()).digest()
        return web.json_response({"created": 0, "data": [{"b64_json": base64.b64encode(png(8, 8, hashlib.sha256(seed + bytes([k])).digest())).decode()} for k in range(n)]})

    @routes.post("/v1/images/edits")
    async def edits(request):
        form = await request.post()
        image = form["image"].file.read()
        s.prompts.append({"openai": "edits", "prompt": form.get("prompt"), "image_sha256": hashlib.sha256(image).hexdigest()})
        seed = hashlib.sha256(image + form.get("prompt", "").encode()).digest()
        return web.json_response({"created": 0, "data": [{"b64_json": base64.b64encode(png(8, 8, seed)).decode()}]})

    a = web.Application(client_max_size=64 << 20)
    a.add_routes(routes)
    return a


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--delay", type=float, default=0.2)
    args = p.parse_args()
    web.run_app(app(args.delay), host="127.0.0.1", port=args.port, print=lambda *_: print(f"standin listening on {args.port}", flush=True))
