"""Billing through the real server: a request costs exactly the price of its usage, a 402
changes nothing, a client that disconnects (mid-stream, or while waiting for a whole
response) is billed only for what was produced and frees the worker within a second, and a restart keeps balances, keys and the ledger."""
import time
from decimal import Decimal

import openai
import pytest

from conftest import MODEL_ID, poll, price

MSG = [{"role": "user", "content": "Tell me a long story about a dragon."}]


def ledger(server, account_id):
    return server.admin("accounts", "show", "--account", account_id)["ledger"]


def test_a_request_costs_exactly_its_usage(server):
    acct, key, _ = server.account(spark="10", sogni="10")
    r = server.client(key).chat.completions.create(model=MODEL_ID, messages=MSG, max_tokens=20)
    spark, sogni = server.balances(acct)
    assert spark == Decimal("10") - price(r.usage.prompt_tokens, r.usage.completion_tokens)
    assert sogni == Decimal("10")
    hold, settle, release = ledger(server, acct)[-3:]
    assert [e["kind"] for e in (hold, settle, release)] == ["hold", "settle", "release"]
    assert {e["reference"] for e in (hold, settle, release)} == {r.id}
    assert Decimal(hold["amount"]) == price(r.usage.prompt_tokens, 20)
    assert Decimal(settle["amount"]) + Decimal(release["amount"]) == Decimal(hold["amount"])

    # X-Token-Type picks the token; the body's token_type wins over the header.
    r = server.client(key).chat.completions.create(model=MODEL_ID, messages=MSG, max_tokens=5, extra_headers={"X-Token-Type": "sogni"})
    assert server.balances(acct) == (spark, Decimal("10") - price(r.usage.prompt_tokens, r.usage.completion_tokens))
    spark, sogni = server.balances(acct)
    r = server.client(key).chat.completions.create(model=MODEL_ID, messages=MSG, max_tokens=5, extra_headers={"X-Token-Type": "sogni"}, extra_body={"token_type": "spark"})
    assert server.balances(acct) == (spark - price(r.usage.prompt_tokens, r.usage.completion_tokens), sogni)


def test_a_402_leaves_the_balance_untouched(server):
    acct, key, _ = server.account(spark="0.001")
    before, entries = server.balances(acct), ledger(server, acct)
    with pytest.raises(openai.APIStatusError) as e:
        server.client(key).chat.completions.create(model=MODEL_ID, messages=MSG, max_tokens=4000)
    assert e.value.status_code == 402
    assert server.balances(acct) == before and ledger(server, acct) == entries


def test_a_disconnect_bills_only_what_was_produced(server):
    acct, key, _ = server.account(spark="10")
    cancelled = server.metric("supernet:worker_jobs_finished_total", outcome="cancelled")
    received = 0
    with server.client(key).chat.completions.create(model=MODEL_ID, messages=MSG, max_tokens=2000, stream=True) as stream:
        for chunk in stream:
            received += 1
            if received == 6:
                break
    # The worker stops the job at once and is free again.
    poll(lambda: server.metric("supernet:worker_jobs_finished_total", outcome="cancelled") == cancelled + 1, "the job to be cancelled")
    assert server.metric("supernet:num_requests_running") == 0
    produced = billed_after_cancel(server, acct, 2000)
    assert 5 <= produced < 200, f"billed {produced} tokens after a disconnect at 5"


def billed_after_cancel(server, acct, max_tokens):
    """The completion tokens a cancelled request was charged (a whole number, checked)."""
    poll(lambda: ledger(server, acct)[-1]["kind"] == "release", "the settlement")
    hold, settle, release = ledger(server, acct)[-3:]
    prompt_tokens = 1
    while price(prompt_tokens, 0) < Decimal(hold["amount"]) - price(0, max_tokens):
        prompt_tokens += 1
    assert price(prompt_tokens, max_tokens) == Decimal(hold["amount"])
    charged = Decimal(settle["amount"])
    produced = next(n for n in range(max_tokens + 1) if price(prompt_tokens, n) >= charged)
    assert price(prompt_tokens, produced) == charged, "the charge is the price of a whole number of tokens"
    assert server.balances(acct)[0] == Decimal("10") - charged
    return produced


def test_a_non_streaming_disconnect_stops_within_a_second(server):
    acct, key, _ = server.account(spark="10")
    cancelled = server.metric("supernet:worker_jobs_finished_total", outcome="cancelled")
    client = server.client(key).with_options(timeout=1.5)
    with pytest.raises(openai.APITimeoutError):
        client.chat.completions.create(model=MODEL_ID, messages=MSG, max_tokens=2000, temperature=0)
    gone = time.time()
    poll(lambda: server.metric("supernet:worker_jobs_finished_total", outcome="cancelled") == cancelled + 1, "the job to be cancelled")
    assert time.time() - gone < 1.0
    produced = billed_after_cancel(server, acct, 2000)
    assert 1 <= produced < 1000, f"billed {produced} tokens after a disconnect at 1.5 s"


def test_a_restart_keeps_balances_keys_and_ledger(make_server):
    s = make_server()
    acct, key, _ = s.account(spark="3")
    s.client(key).chat.completions.create(model=MODEL_ID, messages=MSG, max_tokens=4)
    before = (s.balances(acct), ledger(s, acct))
    s.restart()
    assert (s.balances(acct), ledger(s, acct)) == before
    r = s.client(key).chat.completions.create(model=MODEL_ID, messages=MSG, max_tokens=4)
    assert s.balances(acct)[0] == before[0][0] - price(r.usage.prompt_tokens, r.usage.completion_tokens)


def test_admin_works_while_the_server_runs(server):
    acct, _, _ = server.account(spark="1")
    entries = server.admin("accounts", "credit", "--account", acct, "--spark", "2.5", "--reference", "top-up")["entries"]
    assert entries[0]["balance_after"] == "3.5"
    assert server.balances(acct) == (Decimal("3.5"), Decimal("0"))
