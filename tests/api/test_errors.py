"""Every error status in OpenAI's envelope, and bad input that never takes the server down:
400 with `param`, 401 for both key headers, 402, 404, 413, 429 with Retry-After."""
import threading

import openai
import pytest

from conftest import MODEL_ID, poll

OK = {"model": MODEL_ID, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}


def error_of(r, status):
    assert r.status_code == status, r.text
    e = r.json()["error"]
    assert set(e) == {"message", "type", "param", "code"} and e["message"]
    return e


@pytest.mark.parametrize("body, param", [
    ({**OK, "temperature": "hot"}, "temperature"),
    ({**OK, "max_tokens": -1}, "max_tokens"),
    ({**OK, "max_tokens": 1.5}, "max_tokens"),
    ({**OK, "top_p": 7}, "top_p"),
    ({**OK, "stop": 3}, "stop"),
    ({**OK, "n": 9}, "n"),
    ({**OK, "top_logprobs": 2}, "top_logprobs"),
    ({**OK, "logprobs": True, "top_logprobs": 21}, "top_logprobs"),
    ({**OK, "logit_bias": {"x": 1}}, "logit_bias.x"),
    ({**OK, "logit_bias": {"5": 101}}, "logit_bias.5"),
    ({**OK, "logit_bias": {"99999999": 1}}, "logit_bias"),
    ({**OK, "stream": "yes"}, "stream"),
    ({**OK, "task_profile": "poetry"}, "task_profile"),
    ({**OK, "token_type": "gold"}, "token_type"),
    ({**OK, "chat_template_kwargs": []}, "chat_template_kwargs"),
    ({**OK, "messages": []}, "messages"),
    ({**OK, "messages": "hi"}, "messages"),
    ({**OK, "messages": [{"role": "robot", "content": "beep"}]}, "messages[0].role"),
    ({**OK, "messages": [{"content": "no role"}]}, "messages[0].role"),
    ({**OK, "messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ({**OK, "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}]}, "messages[0].content[0].image_url.url"),
    ({**OK, "model": 12}, "model"),
])
def test_invalid_fields_name_their_param(server, account, body, param):
    with server.http(account[1]) as h:
        e = error_of(h.post("/v1/chat/completions", json=body), 400)
    assert (e["type"], e["param"]) == ("invalid_request_error", param)


@pytest.mark.parametrize("raw", [b"{not json", b"", b"[1,2]", b"\xff\xfe{\"messages\": 1}", b'{"messages": [{"role": "user", "content": "\xc3\x28"}]}', b"null"])
def test_malformed_bodies_get_400_and_the_server_stays_up(server, account, raw):
    with server.http(account[1]) as h:
        error_of(h.post("/v1/chat/completions", content=raw, headers={"Content-Type": "application/json"}), 400)
        assert h.get("/healthz").status_code == 200


def test_huge_bodies_get_413(server, account):
    huge = b'{"messages": [{"role": "user", "content": "' + b"a" * (25 * 1024 * 1024) + b'"}]}'
    with server.http(account[1]) as h:
        e = error_of(h.post("/v1/chat/completions", content=huge), 413)
        assert "bytes" in e["message"]
        assert h.get("/healthz").status_code == 200


def test_keys(server, account):
    with server.http() as h:
        assert error_of(h.post("/v1/chat/completions", json=OK), 401)["type"] == "authentication_error"
        error_of(h.post("/v1/chat/completions", json=OK, headers={"Authorization": "Basic abc"}), 401)
        error_of(h.post("/v1/chat/completions", json=OK, headers={"api-key": "sn-not-a-key"}), 401)
        assert h.post("/v1/chat/completions", json=OK, headers={"api-key": account[1]}).status_code == 200
    with pytest.raises(openai.AuthenticationError):
        server.client("sn-wrong").chat.completions.create(**OK)
    # A disabled key stops working at once; a regenerated one replaces the old secret. Each
    # was just used (the front trusts a key it looked up for a few seconds), and the refused
    # requests spend nothing.
    acct, key, key_id = server.account()
    server.client(key).chat.completions.create(**OK)
    new = server.admin("keys", "regenerate", "--key-id", key_id)["api_key"]
    spent = server.balances(acct)
    with pytest.raises(openai.AuthenticationError):
        server.client(key).chat.completions.create(**OK)
    assert server.balances(acct) == spent
    server.client(new).chat.completions.create(**OK)
    server.admin("keys", "disable", "--key-id", key_id)
    spent = server.balances(acct)
    with pytest.raises(openai.AuthenticationError):
        server.client(new).chat.completions.create(**OK)
    assert server.balances(acct) == spent


def test_unknown_models_and_routes_get_404(server, account):
    with pytest.raises(openai.NotFoundError) as e:
        server.client(account[1]).chat.completions.create(**{**OK, "model": "gpt-17"})
    assert (e.value.body["param"], e.value.body["code"]) == ("model", "model_not_found")
    with server.http(account[1]) as h:
        error_of(h.get("/v1/embeddings"), 404)
        error_of(h.get("/v1/models/gpt-17"), 404)
        error_of(h.get("/v1/chat/completions"), 405)


def test_insufficient_balance_gets_402(server):
    _, key, _ = server.account(spark="0.0001")
    with pytest.raises(openai.APIStatusError) as e:
        server.client(key).chat.completions.create(**{**OK, "max_tokens": 100})
    assert (e.value.status_code, e.value.body["code"]) == (402, "insufficient_balance")
    assert "neither the Spark nor the SOGNI balance covers" in e.value.body["message"]
    with pytest.raises(openai.APIStatusError) as e:
        server.client(key).chat.completions.create(**{**OK, "max_tokens": 100}, extra_headers={"X-Token-Type": "spark"})
    assert "the spark balance does not cover" in e.value.body["message"]


def test_rate_and_concurrency_limits_get_429_with_retry_after(make_server):
    s = make_server("[limits]\nmax_concurrent = 1\nrequests_per_minute = 2\n")
    _, key, _ = s.account()
    with s.http(key) as h:
        # One long stream holds the only concurrency slot.
        with h.stream("POST", "/v1/chat/completions", json={**OK, "max_tokens": 200, "stream": True}) as held:
            next(held.iter_lines())
            r = h.post("/v1/chat/completions", json=OK)
            assert error_of(r, 429)["type"] == "rate_limit_error"
            assert r.headers["retry-after"] == "1"
        # The slot is free again: the second request of the minute passes (refused ones do not
        # count), the third does not.
        poll(lambda: h.post("/v1/chat/completions", json=OK).status_code == 200, "the slot to free")
        r = h.post("/v1/chat/completions", json=OK)
        assert "requests per minute" in error_of(r, 429)["message"]
        assert 1 <= int(r.headers["retry-after"]) <= 60


def test_no_serving_worker_gets_503_until_one_resumes(make_server):
    s = make_server()
    acct, key, _ = s.account(spark="1")
    (worker,) = s.admin("workers", "list")["workers"]
    assert (worker["model"], worker["draining"]) == (MODEL_ID, False)
    assert s.admin("workers", "drain", "--worker-id", worker["worker_id"]) == {"worker_id": worker["worker_id"], "draining": True}
    before = s.balances(acct)
    with s.http(key) as h:
        r = h.post("/v1/chat/completions", json=OK)
        assert error_of(r, 503)["type"] == "service_unavailable"
        assert r.headers["retry-after"] == "1"
        error_of(h.get("/readyz"), 503)
        assert h.get(f"/v1/models/{MODEL_ID}").json()["workers"] == 0
        assert s.balances(acct) == before, "the hold was released in full"
        s.admin("workers", "resume", "--worker-id", worker["worker_id"])
        assert h.get("/readyz").status_code == 200
        assert h.post("/v1/chat/completions", json=OK).status_code == 200
    s.stop()
    with pytest.raises(AssertionError, match="no running server"):
        s.admin("workers", "list")
