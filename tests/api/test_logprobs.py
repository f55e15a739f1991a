"""`logprobs` / `top_logprobs`, `n` and `logit_bias` (issue 26, item 9), against the real
server and the engine's own numbers (`supernet generate --json --logprobs`)."""
import json
import math
import re
import subprocess
from decimal import Decimal

import httpx

from conftest import BIN, MODEL, MODEL_ID, price

QUESTION = "What is the capital of France?"


def generate_logprobs(prompt, max_tokens, top):
    out = subprocess.run([str(BIN), "generate", "--model", str(MODEL), "--chat", "--prompt", prompt,
                          "--max-tokens", str(max_tokens), "--temperature", "0", "--json", "--logprobs", str(top)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_greedy_logprobs_are_the_engines_log_softmax(server, account):
    client = server.client(account[1])
    r = client.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": QUESTION}],
                                       max_tokens=12, temperature=0, logprobs=True, top_logprobs=5)
    engine = generate_logprobs(QUESTION, 12, 5)
    assert r.usage.prompt_tokens == engine["prompt_tokens"]
    content = r.choices[0].logprobs.content
    assert len(content) == len(engine["logprobs"]) == r.usage.completion_tokens
    assert "".join(c.token for c in content) == r.choices[0].message.content
    for got, want in zip(content, engine["logprobs"]):
        assert math.isclose(got.logprob, want["logprob"], abs_tol=1e-5)
        assert [t.logprob for t in got.top_logprobs] == sorted((t.logprob for t in got.top_logprobs), reverse=True)
        assert len(got.top_logprobs) == 5
        assert sum(math.exp(t.logprob) for t in got.top_logprobs) <= 1 + 1e-6
        # Greedy: the chosen token is the most likely one.
        assert got.top_logprobs[0].token == got.token and got.top_logprobs[0].logprob == got.logprob
        assert bytes(got.bytes).decode("utf-8", "replace") == got.token
        for t, (tid, lp) in zip(got.top_logprobs, want["top"]):
            assert math.isclose(t.logprob, lp, abs_tol=1e-5)
    # The stream carries the same entries.
    stream = client.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": QUESTION}],
                                            max_tokens=12, temperature=0, logprobs=True, top_logprobs=5, stream=True)
    streamed = [e for c in stream if c.choices and c.choices[0].logprobs for e in c.choices[0].logprobs.content]
    assert [(e.token, e.logprob) for e in streamed] == [(e.token, e.logprob) for e in content]
    # Without `logprobs`, none.
    plain = client.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": QUESTION}], max_tokens=2)
    assert plain.choices[0].logprobs is None


def prefix_hits(server):
    text = httpx.get(server.url + "/metrics", timeout=30).text
    return sum(int(v) for v in re.findall(r"^supernet:prefix_cache_hits_total\{[^}]*\} (\d+)$", text, re.M))


def test_n_choices_match_single_requests_with_derived_seeds_and_bill_the_prompt_once(server):
    acct, key, _ = server.account(spark="10")
    client = server.client(key)
    msgs = [{"role": "user", "content": "Name a color and say why you like it. " * 6}]
    hits = prefix_hits(server)
    r = client.chat.completions.create(model=MODEL_ID, messages=msgs, max_tokens=10, temperature=1.0, seed=41, n=4)
    assert [c.index for c in r.choices] == [0, 1, 2, 3]
    # The other three choices found the prompt's blocks in the prefix cache.
    assert prefix_hits(server) - hits >= 3 * (r.usage.prompt_tokens // 32) * 16
    singles = [client.chat.completions.create(model=MODEL_ID, messages=msgs, max_tokens=10, temperature=1.0, seed=41 + i)
               for i in range(4)]
    assert [c.message.content for c in r.choices] == [s.choices[0].message.content for s in singles]
    assert len({c.message.content for c in r.choices}) > 1, "different seeds, different samples"
    assert r.usage.prompt_tokens == singles[0].usage.prompt_tokens
    assert r.usage.completion_tokens == sum(s.usage.completion_tokens for s in singles)
    # Billed as OpenAI bills `n`: the prompt once (with the first choice), every completion.
    settles = [e for e in server.admin("accounts", "show", "--account", acct)["ledger"] if e["kind"] == "settle"]
    completions = [s.usage.completion_tokens for s in singles]
    want = [price(r.usage.prompt_tokens, completions[0])] + [price(0, c) for c in completions[1:]]
    assert sorted(Decimal(e["amount"]) for e in settles[:4]) == sorted(want)


def test_n_choices_stream_with_their_indices(server, account):
    client = server.client(account[1])
    stream = client.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": "Hi"}], max_tokens=6,
                                            temperature=1.0, seed=3, n=2, stream=True, stream_options={"include_usage": True})
    text, finished, usage = {0: "", 1: ""}, set(), None
    for c in stream:
        if c.usage:
            usage = c.usage
        for ch in c.choices:
            text[ch.index] += ch.delta.content or ""
            if ch.finish_reason:
                finished.add(ch.index)
    assert finished == {0, 1}
    whole = client.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": "Hi"}], max_tokens=6,
                                           temperature=1.0, seed=3, n=2)
    assert [text[0], text[1]] == [c.message.content for c in whole.choices]
    assert (usage.prompt_tokens, usage.completion_tokens) == (whole.usage.prompt_tokens, whole.usage.completion_tokens)


def test_logit_bias_moves_the_choice(server, account):
    client = server.client(account[1])
    kw = dict(model=MODEL_ID, messages=[{"role": "user", "content": QUESTION}], max_tokens=1, temperature=0, logprobs=True)
    first = client.chat.completions.create(**kw).choices[0].logprobs.content[0]
    engine = generate_logprobs(QUESTION, 1, 5)["logprobs"][0]
    banned = client.chat.completions.create(logit_bias={str(engine["token"]): -100}, **kw).choices[0].logprobs.content[0]
    assert banned.token != first.token
    unlikely = engine["top"][4][0]
    forced = client.chat.completions.create(logit_bias={str(unlikely): 100}, **kw).choices[0].logprobs.content[0]
    assert forced.token != first.token and forced.logprob > -1e-3
