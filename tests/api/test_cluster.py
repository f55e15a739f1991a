"""Cluster mode as separate processes joined by a private redis-server: coordinators
(one leads), workers and stateless fronts, driven with the `openai` client, through the
failures a decentralized pool has: a worker killed or hung mid-stream, the leader killed
under load, Redis restarted. Every test checks the text and that billing is exactly once."""
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai

from conftest import MODEL_ID, assert_billed_exactly_once, poll

STORY = [{"role": "user", "content": "Tell me a long story about a brave knight and a dragon."}]


def client(url, key):
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=120)


def streamed(c, on_text=None, **kw):
    """Streams a completion; returns (text, usage). `on_text(text_so_far)` runs per chunk."""
    text, usage = "", None
    for chunk in c.chat.completions.create(model=MODEL_ID, stream=True, stream_options={"include_usage": True}, **kw):
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
            if on_text:
                on_text(text)
        if chunk.usage:
            usage = chunk.usage
    return text, usage


def busy_worker(cluster, url, names):
    for w in names:
        if cluster.metric(url, "supernet:pool_worker_jobs", worker=w, state="running"):
            return w
    return None


def two_worker_cluster(cluster):
    cluster.coordinator("coord1")
    cluster.worker("w1")
    cluster.worker("w2")
    url = cluster.front("front1")
    cluster.wait_workers(url, 2)
    return url


def disturbed_run(cluster, disturb):
    """A greedy story undisturbed, then again with `disturb(worker)` applied mid-stream to
    the worker running it: the client must see the same text and usage."""
    url = two_worker_cluster(cluster)
    acct, key = cluster.account()
    c = client(url, key)
    ref = c.chat.completions.create(model=MODEL_ID, messages=STORY, max_tokens=250, temperature=0)
    assert ref.usage.completion_tokens >= 100, "the story must be long enough to interrupt"
    hit = []

    def maybe_disturb(text):
        if not hit and len(text) > 40:
            w = busy_worker(cluster, url, ["w1", "w2"])
            if w:
                hit.append(w)
                disturb(w)

    text, usage = streamed(c, maybe_disturb, messages=STORY, max_tokens=250, temperature=0)
    assert hit, "the stream ended before a worker could be disturbed"
    assert text == ref.choices[0].message.content
    assert (usage.prompt_tokens, usage.completion_tokens) == (ref.usage.prompt_tokens, ref.usage.completion_tokens)
    assert_billed_exactly_once(cluster, acct, [ref.usage, usage])
    assert cluster.metric(url, "supernet:failovers_total", model=MODEL_ID) == 1
    return hit[0]


def test_a_worker_killed_mid_stream_is_replaced_without_a_seam(cluster):
    killed = disturbed_run(cluster, cluster.kill)
    assert f"worker={killed}" in cluster.logs("coord1") and "declared dead" in cluster.logs("coord1")


def test_a_hung_worker_is_detected_and_its_job_moves(cluster):
    stopped = disturbed_run(cluster, lambda w: cluster.signal(w, signal.SIGSTOP))
    assert f"worker={stopped}" in cluster.logs("coord1") and "declared dead" in cluster.logs("coord1")
    # Woken up, it comes back as a worker, and its stale work is cancelled.
    cluster.signal(stopped, signal.SIGCONT)


def test_the_leader_dies_under_load_and_a_standby_takes_over(cluster):
    cluster.coordinator("coord1")
    cluster.coordinator("coord2")
    cluster.worker("w1")
    cluster.worker("w2")
    fronts = [cluster.front("front1"), cluster.front("front2")]
    for url in fronts:
        cluster.wait_workers(url, 2)
    acct, key = cluster.account()
    leader = cluster.leader()
    results, errors = [], []

    def one(i):
        try:
            results.append(streamed(client(fronts[i % 2], key), messages=STORY, max_tokens=150, temperature=0))
        except Exception as e:  # noqa: BLE001 - recorded and asserted on below
            errors.append(repr(e))

    in_flight = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    for t in in_flight:
        t.start()
    poll(lambda: busy_worker(cluster, fronts[0], ["w1", "w2"]), "jobs running")
    cluster.kill(leader)
    after = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    for t in after:
        t.start()
    for t in in_flight + after:
        t.join()
    assert errors == []
    assert len(results) == 8 and all(u.completion_tokens > 0 and text for text, u in results)
    assert len({text for text, _ in results}) == 1, "greedy runs of one prompt agree"
    standby = "coord2" if leader == "coord1" else "coord1"
    poll(lambda: " leading node=" in cluster.logs(standby), "the standby to lead")
    assert_billed_exactly_once(cluster, acct, [u for _, u in results])


def test_redis_restarts_and_no_ledger_entry_is_lost_or_doubled(cluster):
    url = two_worker_cluster(cluster)
    acct, key = cluster.account()
    c = client(url, key)
    usages = [c.chat.completions.create(model=MODEL_ID, messages=STORY, max_tokens=20, temperature=0).usage for _ in range(3)]
    cluster.restart_redis()

    def served():
        try:
            usages.append(c.chat.completions.create(model=MODEL_ID, messages=STORY, max_tokens=20, temperature=0).usage)
            return True
        except openai.APIError:
            return False  # errors while the cluster reconnects are allowed

    poll(served, "service to resume after the Redis restart", timeout=90)
    usages += [c.chat.completions.create(model=MODEL_ID, messages=STORY, max_tokens=20, temperature=0).usage for _ in range(2)]
    # Requests that failed during the outage must have given their holds back by now.
    poll(lambda: len([e for e in cluster.ledger(acct) if e["kind"] == "hold"]) == len([e for e in cluster.ledger(acct) if e["kind"] == "settle"]), "open holds to close")
    assert_billed_exactly_once(cluster, acct, usages)


def test_load_spreads_and_a_joining_worker_gets_jobs(cluster):
    cluster.coordinator("coord1")
    for w in ("w1", "w2", "w3"):
        cluster.worker(w)
    url = cluster.front("front1")
    cluster.wait_workers(url, 3)
    acct, key = cluster.account()
    c = client(url, key)

    def burst(n):
        with ThreadPoolExecutor(n) as pool:
            return list(pool.map(lambda _: c.chat.completions.create(model=MODEL_ID, messages=STORY, max_tokens=12, temperature=0).usage, range(n)))

    def completed(workers):
        return {w: cluster.metric(cluster.metrics_url(w), "supernet:worker_jobs_finished_total", worker=w, outcome="completed") for w in workers}

    usages = burst(30)
    poll(lambda: sum(completed(["w1", "w2", "w3"]).values()) == 30, "the workers to report 30 jobs")
    per_worker = completed(["w1", "w2", "w3"])
    assert max(per_worker.values()) <= 15, f"one worker got more than half: {per_worker}"

    cluster.worker("w4")
    cluster.wait_workers(url, 4)
    usages += burst(30)
    poll(lambda: sum(completed(["w1", "w2", "w3", "w4"]).values()) == 60, "the workers to report 60 jobs")
    assert completed(["w4"])["w4"] > 0, "the worker that joined mid-run got jobs"
    assert_billed_exactly_once(cluster, acct, usages)


def test_a_front_serves_the_model_from_its_card_and_sigterm_drains_a_worker(cluster):
    url = two_worker_cluster(cluster)
    models = httpx.get(url + "/v1/models", timeout=10).json()["data"]
    assert [m["id"] for m in models] == [MODEL_ID] and models[0]["workers"] == 2
    cluster.signal("w1", signal.SIGTERM)
    poll(lambda: "drained; leaving" in cluster.logs("w1"), "w1 to drain and leave")
    cluster.wait_workers(url, 1)
    acct, key = cluster.account()
    r = client(url, key).chat.completions.create(model=MODEL_ID, messages=STORY, max_tokens=8, temperature=0)
    assert r.choices[0].message.content
    assert_billed_exactly_once(cluster, acct, [r.usage])


def test_a_front_with_an_admin_key_manages_accounts_as_the_chart_notes_say(cluster):
    """The first requests of helm/supernet's NOTES.txt: an account and a key through the admin
    endpoint, with the admin key, then a chat completion with that key."""
    admin_key = "k" * 40
    cluster.env = {"SUPERNET_ADMIN_KEY": admin_key}
    url = two_worker_cluster(cluster)
    admin = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {admin_key}"}, timeout=30)
    r = admin.post("/admin/v1/commands", content='{"accounts":{"create":{"name":"me","spark":"100","sogni":"0"}}}')
    assert r.status_code == 200, r.text
    account = r.json()["account_id"]
    key = admin.post("/admin/v1/commands", content=f'{{"keys":{{"create":{{"account":"{account}"}}}}}}').json()["api_key"]
    r = client(url, key).chat.completions.create(model=MODEL_ID, messages=STORY, max_tokens=4)
    assert r.choices[0].message.content
    assert_billed_exactly_once(cluster, account, [r.usage])
    # Anyone else is refused, and a short key does not start a front.
    assert httpx.post(url + "/admin/v1/commands", headers={"Authorization": f"Bearer {key}"}, content="{}", timeout=30).status_code == 401
    cluster.env = {"SUPERNET_ADMIN_KEY": "short"}
    proc = cluster.spawn("front2", "front", "--redis", cluster.redis_url, "--port", "0")
    assert proc.wait(timeout=30) != 0 and "at least 32 characters" in cluster.logs("front2")
