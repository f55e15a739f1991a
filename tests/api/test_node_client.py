"""A second real client: the official `openai` Node package (npm, installed here on first
use into tests/node/node_modules) streams a tool call from the server."""
import json
import subprocess

from conftest import MODEL_ID, REPO

NODE_DIR = REPO / "tests/node"


def install_openai_package():
    if not (NODE_DIR / "node_modules/openai").is_dir():
        out = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--silent"], cwd=NODE_DIR, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, f"npm install failed: {out.stderr}"


def test_the_node_client_streams_a_tool_call(server, account):
    install_openai_package()
    out = subprocess.run(["node", str(NODE_DIR / "stream_tool_call.mjs"), server.url + "/v1", account[1], MODEL_ID], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    call = json.loads(out.stdout)
    assert call["name"] == "get_weather" and isinstance(json.loads(call["arguments"]), dict)
