"""The README's "Cluster mode" block, run as typed: two coordinators, a worker and a front
on one machine with their default flags, then the admin commands, then a chat completion
through the front. The only thing changed is the value of `R` (a private Redis on a free
port) and the account id the first admin command printed; optional `[...]` flags are left
out. It would have caught every role binding the same default metrics port."""
import json
import re
import shlex
import subprocess

import httpx
import openai

from conftest import BIN, MODEL_ID, REPO, poll


def cluster_block():
    section = (REPO / "README.md").read_text().split("## Cluster mode\n", 1)[1]
    return section.split("```sh\n", 1)[1].split("```", 1)[0].splitlines()


def test_the_readme_cluster_block_runs_as_written(cluster):
    lines = [l.split("  #", 1)[0].strip() for l in cluster_block()]
    lines = [l for l in lines if l]
    assert lines[0].startswith("R=redis://"), "the block sets R first"
    account = None
    background = 0
    for line in lines[1:]:
        line = re.sub(r"\s*\[[^\]]*\]", "", line).replace("$R", cluster.redis_url)
        if account:
            line = line.replace("acct_...", account)
        argv = shlex.split(line.rstrip("&").strip())
        assert argv[0] == "supernet", line
        if line.endswith("&"):
            background += 1
            proc = cluster.spawn(f"readme{background}", *argv[1:])
            assert proc.poll() is None, line
            continue
        out = subprocess.run([str(BIN), *argv[1:]], capture_output=True, text=True, timeout=120, cwd=REPO)
        assert out.returncode == 0, f"{line}: {out.stderr}"
        printed = json.loads(out.stdout)
        account = account or printed.get("account_id")
        key = printed.get("api_key")
    assert background == 4 and account and key
    url = "http://127.0.0.1:8080"

    def ready():
        try:
            r = httpx.get(url + "/readyz", timeout=5)
        except httpx.TransportError:
            return False
        return r.status_code == 200 and r.json()["workers"] == 1
    poll(ready, "the front to see the worker", timeout=120)
    for name in ("readme1", "readme2", "readme3", "readme4"):
        assert cluster.procs[name][0].poll() is None, f"{name} exited: {cluster.logs(name)}"
    client = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=120)
    r = client.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": "Hi"}], max_tokens=8)
    assert r.choices[0].message.content and r.usage.completion_tokens > 0
    # Each coordinator and the worker serve metrics on a loopback port of their own.
    addrs = {re.search(r"metrics on (http://[\d.]+:\d+)/metrics", cluster.logs(n)).group(1) for n in ("readme1", "readme2", "readme3")}
    assert len(addrs) == 3 and all(a.startswith("http://127.0.0.1:") for a in addrs)
