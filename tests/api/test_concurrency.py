"""Sixteen streaming clients at once all complete correctly, each with its own whole
answer, and each is billed for its own usage."""
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

from conftest import MODEL_ID, price


def test_sixteen_concurrent_streams_complete(server):
    acct, key, _ = server.account(spark="50")
    client = server.client(key)

    def one(i):
        messages = [{"role": "user", "content": f"Count from {i} to {i + 5}."}]
        stream = client.chat.completions.create(model=MODEL_ID, messages=messages, max_tokens=16, temperature=0, stream=True, stream_options={"include_usage": True})
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        return messages, text, finish, chunks[-1].usage

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, range(16)))
    spent = Decimal(0)
    for messages, text, finish, usage in results:
        assert finish in (["stop"], ["length"]) and usage.completion_tokens > 0
        # Each stream carried its own answer: the same as the request alone, greedily.
        alone = client.chat.completions.create(model=MODEL_ID, messages=messages, max_tokens=16, temperature=0)
        assert text == alone.choices[0].message.content
        spent += price(usage.prompt_tokens, usage.completion_tokens) + price(alone.usage.prompt_tokens, alone.usage.completion_tokens)
    assert server.balances(acct)[0] == Decimal("50") - spent
