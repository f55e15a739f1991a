"""Chat completions and models through the official `openai` client: non-streaming and
streaming, usage, the default model, and greedy output identical to `supernet generate`."""
import openai
import pytest

from conftest import MODEL, MODEL_ID, run_cli

HELLO = [{"role": "user", "content": "What is the capital of France?"}]


def test_models_list_and_retrieve(server, account):
    client = server.client(account[1])
    models = client.models.list()
    assert [m.id for m in models.data] == [MODEL_ID]
    m = client.models.retrieve(MODEL_ID)
    assert (m.id, m.object, m.owned_by) == (MODEL_ID, "model", "supernet")
    extra = m.model_extra
    assert extra["context_length"] == 8192
    assert extra["capabilities"] == {"tools": True, "vision": False, "reasoning": False}
    assert extra["pricing"] == {"input": "0.3", "output": "0.9"}
    assert extra["workers"] == 1
    with pytest.raises(openai.NotFoundError) as e:
        client.models.retrieve("no-such-model")
    assert e.value.body["code"] == "model_not_found"


def test_non_streaming_chat_with_usage(server, account):
    r = server.client(account[1]).chat.completions.create(model=MODEL_ID, messages=HELLO, max_tokens=24, temperature=0)
    assert r.id.startswith("chatcmpl-") and r.object == "chat.completion" and r.model == MODEL_ID
    c = r.choices[0]
    assert c.message.role == "assistant" and c.message.content
    assert c.finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens > 5 and 0 < r.usage.completion_tokens <= 24
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_length_finish_reason(server, account):
    r = server.client(account[1]).chat.completions.create(model=MODEL_ID, messages=HELLO, max_completion_tokens=3, temperature=0)
    assert (r.choices[0].finish_reason, r.usage.completion_tokens) == ("length", 3)


def test_streaming_chat_with_final_usage(server, account):
    client = server.client(account[1])
    stream = client.chat.completions.create(model=MODEL_ID, messages=HELLO, max_tokens=24, temperature=0, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes in (["stop"], ["length"])
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    assert len({c.id for c in chunks}) == 1
    whole = client.chat.completions.create(model=MODEL_ID, messages=HELLO, max_tokens=24, temperature=0)
    assert text == whole.choices[0].message.content
    assert chunks[-1].usage.model_dump() == whole.usage.model_dump()


def test_the_model_field_is_optional(server, account):
    with server.http(account[1]) as h:
        r = h.post("/v1/chat/completions", json={"messages": HELLO, "max_tokens": 4})
    assert r.status_code == 200, r.text
    assert r.json()["model"] == MODEL_ID


def test_roles_and_text_parts(server, account):
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "developer", "content": [{"type": "text", "text": "Answer in one word."}]},
        {"role": "user", "content": [{"type": "text", "text": "Capital of "}, {"type": "text", "text": "Italy?"}]},
        {"role": "assistant", "content": "Rome."},
        {"role": "tool", "content": "{}", "tool_call_id": "call_1"},
        {"role": "user", "content": "And of Spain?"},
    ]
    r = server.client(account[1]).chat.completions.create(
        model=MODEL_ID, messages=messages, max_tokens=8, temperature=0.7, top_p=0.9, seed=7, stop=["\n\n"],
        frequency_penalty=0.1, presence_penalty=0.1,
        extra_body={"top_k": 40, "min_p": 0.05, "repetition_penalty": 1.1, "task_profile": "general", "chat_template_kwargs": {}, "token_type": "auto"},
    )
    assert r.choices[0].message.content is not None


def test_greedy_output_matches_supernet_generate(server, account):
    # Under 64 prompt tokens the server's batch-invariant arithmetic is llama.cpp's, which
    # `generate` reproduces; so the two agree token for token.
    prompt = "Write one sentence about the sea."
    ref = run_cli("generate", "--model", str(MODEL), "--chat", "--prompt", prompt, "--temperature", "0", "--max-tokens", "48", "--json")
    r = server.client(account[1]).chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": prompt}], max_tokens=48, temperature=0)
    assert r.choices[0].message.content == ref["text"]
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (ref["prompt_tokens"], ref["completion_tokens"])
