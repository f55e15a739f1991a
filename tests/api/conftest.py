"""Fixtures for the API tests: real `supernet serve` processes on free ports, each with its
own data dir, driven with the official `openai` package and raw HTTP (httpx)."""
import json
import os
import re
import signal
import subprocess
import time
from decimal import ROUND_CEILING, Decimal
from pathlib import Path

import httpx
import openai
import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("SUPERNET_BIN", REPO / "target/release/supernet"))
MODEL = REPO / "models/SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_ID = "SmolLM2-135M-Instruct"
SCHEMAS = Path(os.environ.get("SUPERNET_SHARED", REPO.parent / "shared")) / "reference/openai-chat-schemas.json"


def run_cli(*args):
    """Runs `supernet ARGS`; returns its one JSON line."""
    out = subprocess.run([str(BIN), *args], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, f"supernet {' '.join(args)} failed: {out.stderr}"
    return json.loads(out.stdout)


def price(prompt_tokens, completion_tokens, input_usd="0.30", output_usd="0.90", token_usd="0.005"):
    """What the usage costs in tokens: exact, rounded up at the 18th decimal once."""
    usd = Decimal(input_usd) * prompt_tokens + Decimal(output_usd) * completion_tokens
    return (usd / (Decimal(token_usd) * 1_000_000)).quantize(Decimal("1e-18"), rounding=ROUND_CEILING).normalize()


class Server:
    """One `supernet serve` on a free port."""

    def __init__(self, data_dir: Path, config: str = "", threads: int = 2, args=(), models=(MODEL,)):
        self.data_dir = data_dir
        self.models = [str(m) for m in models]
        self.args = list(args)
        self.config = data_dir / "supernet.toml"
        data_dir.mkdir(parents=True, exist_ok=True)
        self.config.write_text(config)
        self.threads = threads
        self.proc = None
        self.start()

    def start(self):
        self.log = open(self.data_dir / "serve.log", "a+")
        self.proc = subprocess.Popen(
            [str(BIN), "serve", *(a for m in self.models for a in ("--model", m)), "--port", "0", "--data-dir", str(self.data_dir),
             "--threads", str(self.threads), "--config", str(self.config), *self.args],
            stdout=self.log, stderr=subprocess.STDOUT,
        )
        deadline = time.time() + 180
        while time.time() < deadline:
            assert self.proc.poll() is None, f"serve exited: {self.logs()}"
            m = re.search(r"listening on (http://[\d.]+:\d+)", self.logs())
            if m:
                self.url = m.group(1)
                return
            time.sleep(0.05)
        raise AssertionError(f"serve did not get ready: {self.logs()}")

    def logs(self):
        self.log.flush()
        return (self.data_dir / "serve.log").read_text()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def restart(self):
        self.stop()
        # The port changes (0 picks a free one); the URL is read again from the new log lines.
        (self.data_dir / "serve.log").write_text("")
        self.start()

    def admin(self, *args):
        return run_cli("admin", "--data-dir", str(self.data_dir), *args)

    def account(self, spark="100", sogni="0"):
        """A new account with a key: (account_id, api_key, key_id)."""
        acct = self.admin("accounts", "create", "--name", "test", "--spark", spark, "--sogni", sogni)["account_id"]
        key = self.admin("keys", "create", "--account", acct)
        return acct, key["api_key"], key["key_id"]

    def balances(self, account_id):
        b = self.admin("accounts", "show", "--account", account_id)["balances"]
        return Decimal(b["spark"]), Decimal(b["sogni"])

    def client(self, api_key):
        return openai.OpenAI(base_url=self.url + "/v1", api_key=api_key, max_retries=0, timeout=120)

    def http(self, api_key=None):
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=120)

    def metric(self, name, **labels):
        """The value of one Prometheus sample of /metrics."""
        text = httpx.get(self.url + "/metrics", timeout=30).text
        for line in text.splitlines():
            if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
                return int(line.rsplit(" ", 1)[1])
        raise AssertionError(f"no {name} {labels} in {text}")


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("serve"))
    yield s
    s.stop()


@pytest.fixture(scope="session")
def account(server):
    return server.account()


@pytest.fixture
def make_server(tmp_path):
    started = []

    def make(config="", threads=2, args=(), models=(MODEL,)):
        s = Server(tmp_path / f"serve{len(started)}", config, threads, args, models)
        started.append(s)
        return s

    yield make
    for s in started:
        s.stop()


def poll(f, what, timeout=60):
    """Waits for `f()` to be truthy; nothing in these tests sleeps a fixed time instead."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = f()
        if v:
            return v
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """A cluster of separate processes: a private `redis-server` (AOF on, fsync always) on a
    free port, and any number of coordinators, workers and fronts joined by it."""

    def __init__(self, root: Path):
        self.root = root
        self.port = free_port()
        self.redis_url = f"redis://127.0.0.1:{self.port}/0"
        self.procs = {}
        # Environment for every process started from now on (e.g. OTLP export).
        self.env = {}
        self.start_redis()

    def start_redis(self):
        (self.root / "redis").mkdir(parents=True, exist_ok=True)
        self.redis = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.root / "redis"),
             "--save", "", "--appendonly", "yes", "--appendfsync", "always"],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        )
        poll(lambda: self.redis_cli("PING") == "PONG", "redis-server to start", timeout=20)

    def redis_cli(self, *args):
        out = subprocess.run(["redis-cli", "-p", str(self.port), *args], capture_output=True, text=True)
        return out.stdout.strip()

    def restart_redis(self):
        """Kills Redis hard and starts it again on the same port and AOF file."""
        self.redis.kill()
        self.redis.wait()
        self.start_redis()

    def spawn(self, name, *args):
        log = open(self.root / f"{name}.log", "a+")
        proc = subprocess.Popen([str(BIN), *args], stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **self.env}, cwd=REPO)
        self.procs[name] = (proc, log)
        return proc

    def logs(self, name):
        return (self.root / f"{name}.log").read_text()

    def coordinator(self, name, *args):
        self.spawn(name, "coordinator", "--redis", self.redis_url, *args)

    def worker(self, name, threads=1, *args, model=MODEL):
        self.spawn(name, "worker", "--redis", self.redis_url, "--model", str(model), "--threads", str(threads), "--worker-id", name,
                   *args)

    def metrics_url(self, name):
        """Where the coordinator or worker `name` serves /metrics (read from its log)."""
        m = poll(lambda: re.search(r"metrics on (http://[\d.]+:\d+)/metrics", self.logs(name)), f"{name}'s metrics server", timeout=90)
        return m.group(1)

    def front(self, name):
        self.spawn(name, "front", "--redis", self.redis_url, "--port", "0")
        m = poll(lambda: re.search(r"listening on (http://[\d.]+:\d+)", self.logs(name)), f"{name} to listen", timeout=60)
        return m.group(1)

    def wait_workers(self, url, n):
        """Until the front sees `n` live workers."""
        def ready():
            r = httpx.get(url + "/readyz", timeout=10)
            return r.status_code == 200 and r.json()["workers"] == n
        poll(ready, f"{n} workers behind {url}", timeout=90)

    def bus_key(self, name):
        """`name` under the bus's prefix (`sn:v{protocol version}:`), read off the heartbeat
        stream (so a worker must have started)."""
        beats = poll(lambda: self.redis_cli("--scan", "--pattern", "sn:v*:heartbeats"), "the heartbeat stream")
        return beats.splitlines()[0].removesuffix("heartbeats") + name

    def leader(self):
        """The name of the coordinator process that holds the lease."""
        lease = self.bus_key("coordinator:leader")
        node = poll(lambda: self.redis_cli("GET", lease), "a leader")
        for name in self.procs:
            if name.startswith("coord") and f"node={node}" in self.logs(name):
                return name
        raise AssertionError(f"no coordinator process is {node}")

    def signal(self, name, sig):
        self.procs[name][0].send_signal(sig)

    def kill(self, name):
        proc, _ = self.procs[name]
        proc.kill()
        proc.wait()

    def admin(self, *args):
        return run_cli("admin", "--redis", self.redis_url, *args)

    def account(self, spark="100"):
        acct = self.admin("accounts", "create", "--name", "test", "--spark", spark)["account_id"]
        return acct, self.admin("keys", "create", "--account", acct)["api_key"]

    def ledger(self, account_id):
        return self.admin("accounts", "show", "--account", account_id, "--entries", "100000")["ledger"]

    def metric(self, url, name, **labels):
        """One sample of the /metrics of the process at `url` (a front's, or `metrics_url`'s)."""
        text = httpx.get(url + "/metrics", timeout=30).text
        for line in text.splitlines():
            if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
                return int(line.rsplit(" ", 1)[1])
        return 0

    def stop(self):
        for proc, log in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.kill()
                proc.wait()
            log.close()
        self.redis.kill()
        self.redis.wait()


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(tmp_path)
    yield c
    c.stop()


def assert_billed_exactly_once(cluster, account_id, usages):
    """Every request the clients saw finish is settled once at its reported usage, nothing
    else is charged, and every hold is closed."""
    ledger = cluster.ledger(account_id)
    settles = [e for e in ledger if e["kind"] == "settle"]
    holds = [e for e in ledger if e["kind"] == "hold"]
    assert len({e["reference"] for e in holds}) == len(holds), "one hold per job"
    assert len({e["reference"] for e in settles}) == len(settles), "one settlement per job"
    assert len(settles) == len(holds), "every hold is settled"
    charged = sum(Decimal(e["amount"]) for e in settles)
    expected = sum(price(u.prompt_tokens, u.completion_tokens) for u in usages)
    assert charged == expected, f"charged {charged}, clients were told usage worth {expected}"
