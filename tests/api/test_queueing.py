"""The coordinator's queue in `supernet serve`: a burst larger than the workers hold waits
for a worker instead of being refused, and is served in arrival order within an account;
beyond the queue's bound the rest get 429 with Retry-After, and their holds are released."""
import threading
import time

import openai

from conftest import MODEL_ID

# One sequence in the batch and one waiting in the worker: room for two jobs on the worker.
WORKER = "[server]\nmax_queue = 1\n"
MESSAGES = [{"role": "user", "content": "Count from one to twenty."}]


def burst(client, n, gap, max_tokens):
    """`n` requests, started `gap` seconds apart; each one's (status, finish time)."""
    results = [None] * n

    def one(i):
        try:
            client.chat.completions.create(model=MODEL_ID, messages=MESSAGES, max_tokens=max_tokens, temperature=0)
            results[i] = (200, time.monotonic(), None)
        except openai.APIStatusError as e:
            results[i] = (e.status_code, time.monotonic(), e)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
        time.sleep(gap)
    for t in threads:
        t.join(timeout=300)
    assert all(r is not None for r in results), "every request was answered"
    return results


def test_a_burst_waits_for_the_worker_and_is_served_in_arrival_order(make_server):
    s = make_server(WORKER, args=["--max-batch", "1"])
    _, key, _ = s.account()
    results = burst(s.client(key), 8, 0.1, 24)
    assert [r[0] for r in results] == [200] * 8, [(r[0], str(r[2])) for r in results]
    finished = [r[1] for r in results]
    assert finished == sorted(finished), "one account's requests finish in the order they came"
    # The worker holds two at a time, so six waited at the coordinator; none was refused.
    assert s.metric("supernet:placements_total", outcome="placed") == 8


def test_beyond_the_queue_bound_requests_get_429_with_retry_after(make_server):
    s = make_server(WORKER + "[coordinator]\nmax_queue = 2\n", args=["--max-batch", "1"])
    acct, key, _ = s.account()
    before = s.balances(acct)
    results = burst(s.client(key), 8, 0, 64)
    statuses = [r[0] for r in results]
    assert set(statuses) == {200, 429} and statuses.count(200) >= 4, statuses
    for status, _, e in results:
        if status == 429:
            assert e.response.headers["retry-after"] == "1"
            assert e.response.json()["error"]["type"] == "rate_limit_error"
    # What was served is billed; the refused holds came back whole.
    spent = before[0] - s.balances(acct)[0]
    assert spent > 0
    served = statuses.count(200)
    assert s.metric("supernet:placements_total", outcome="placed") == served
    assert s.metric("supernet:placements_total", outcome="queue_full") == 8 - served
