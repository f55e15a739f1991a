"""Renders the conversations in cases.json through llama.cpp's llama-server with the Qwen3.5
chat template and stores what it rendered in each case's "prompt" (see README.md).

    python3 make.py /path/to/llama-server MODEL.gguf
"""
import json
import pathlib
import socket
import subprocess
import sys
import time
import urllib.request

HERE = pathlib.Path(__file__).parent


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(port, path, body):
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def main():
    server, model = sys.argv[1], sys.argv[2]
    port = free_port()
    proc = subprocess.Popen(
        [server, "-m", model, "--host", "127.0.0.1", "--port", str(port), "-t", "1",
         "-c", "1024", "--jinja", "--chat-template-file", str(HERE / "chat_template.jinja")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except Exception:
                time.sleep(0.1)
        cases = json.loads((HERE / "cases.json").read_text())
        for case in cases:
            case["prompt"] = post(port, "/apply-template", case["request"])["prompt"]
        (HERE / "cases.json").write_text(json.dumps(cases, indent=1, ensure_ascii=False) + "\n")
    finally:
        proc.terminate()
        proc.wait()


if __name__ == "__main__":
    main()
