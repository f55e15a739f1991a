"""deploy/compose.yaml without Docker (no engine runs on our machines): every supernet
service's command and environment from the file, run as local processes against a private
redis-server, must form a working cluster: two workers behind each of two fronts, and a
chat completion through each front. The image itself is built by deploy/build.sh, which
.ci/run runs as the Dockerfile's build stage does."""
import re
import sys
from pathlib import Path

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "api"))
from conftest import MODEL, MODEL_ID, Cluster, poll  # noqa: E402

COMPOSE = yaml.safe_load((Path(__file__).resolve().parents[2] / "deploy/compose.yaml").read_text())


def local(arg):
    """A container path or port, as this machine has it."""
    return arg.replace("/models/SmolLM2-135M-Instruct.Q4_1.gguf", str(MODEL))


def test_the_compose_cluster_runs_as_written(tmp_path):
    cluster = Cluster(tmp_path)
    try:
        services = {name: s for name, s in COMPOSE["services"].items() if s.get("image") == "supernet:local"}
        assert sorted(services) == ["coordinator", "front1", "front2", "worker1", "worker2"]
        assert COMPOSE["services"]["redis"]["command"][1:] == ["--appendonly", "yes", "--appendfsync", "always"]
        fronts = []
        for name, s in services.items():
            env = {k: str(v) for k, v in s["environment"].items() if v != "${OTEL_EXPORTER_OTLP_ENDPOINT:-}"}
            assert env["SUPERNET_REDIS"] == "redis://redis:6379/0"
            # One machine instead of one network namespace per container: our Redis, free ports.
            env |= {"SUPERNET_REDIS": cluster.redis_url, "SUPERNET_METRICS_ADDR": "127.0.0.1:0", "SUPERNET_HOST": "127.0.0.1"}
            args = [local(a) for a in s["command"]]
            if args[0] == "front":
                args[args.index("--port") + 1] = "0"
            cluster.env = env
            cluster.spawn(name, *args)
            if args[0] == "front":
                fronts.append(name)
        _, key = cluster.account()
        for name in fronts:
            url = poll(lambda: re.search(r"listening on (http://[\d.]+:\d+)", cluster.logs(name)), f"{name} to listen", timeout=60).group(1)
            cluster.wait_workers(url, 2)
            r = httpx.post(url + "/v1/chat/completions", json={"model": MODEL_ID, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4},
                           headers={"Authorization": f"Bearer {key}"}, timeout=120)
            assert r.status_code == 200, r.text
            # The workers joined under the ids compose gives them.
            pool = httpx.get(url + "/metrics", timeout=30).text
            assert 'worker="worker1"' in pool and 'worker="worker2"' in pool
    finally:
        cluster.stop()
