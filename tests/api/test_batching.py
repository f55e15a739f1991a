"""Continuous batching through the API with the `openai` client: concurrent requests share
forward steps yet each gets exactly what it gets alone, with a shared system prompt served
from the prefix cache, and with a KV pool too small for everyone (preemption)."""
from concurrent.futures import ThreadPoolExecutor

from conftest import MODEL_ID

SYSTEM = ("You are the archivist of the Northern Lighthouse Board. The keepers trimmed the wicks every four hours, "
          "logged wind, sea state and every passing ship, and sounded the fog signal twice a minute in poor visibility. ") * 3
QUESTIONS = ["Who keeps the lights?", "What is a foghorn?", "How far can the light be seen?", "What do keepers eat?",
             "Is the work lonely?", "What happens in a storm?", "Who pays for the lights?", "When do supply boats come?"]


def ask(client, question, system=SYSTEM, max_tokens=24):
    messages = [{"role": "system", "content": system}, {"role": "user", "content": question}] if system else [{"role": "user", "content": question}]
    r = client.chat.completions.create(model=MODEL_ID, messages=messages, max_tokens=max_tokens, temperature=0)
    return r.choices[0].message.content, r.usage


def answers_alone(make_server, questions, system, max_tokens):
    alone = make_server(args=["--no-prefix-cache"])
    _, key, _ = alone.account()
    client = alone.client(key)
    return [ask(client, q, system, max_tokens)[0] for q in questions]


def batch_steps(server):
    """(steps run, steps that carried one sequence only)."""
    return (server.metric("supernet:worker_batch_size_count"), server.metric("supernet:worker_batch_size_bucket", le="1"))


def test_concurrent_requests_with_a_shared_system_prompt_match_each_alone(make_server):
    expected = answers_alone(make_server, QUESTIONS, SYSTEM, 24)
    server = make_server()
    _, key, _ = server.account()
    client = server.client(key)
    _, usage = ask(client, "Warm the cache.")
    hits_before = server.metric("supernet:prefix_cache_hits_total")
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda q: ask(client, q), QUESTIONS))
    assert [text for text, _ in got] == expected, "each answer equals the request alone"
    steps, single = batch_steps(server)
    assert steps - single > 10, f"sequences shared steps ({steps} steps, {single} with one sequence)"
    hits = server.metric("supernet:prefix_cache_hits_total") - hits_before
    # Everything before the question (all but its last 16 tokens) is shared, in whole blocks.
    shared_blocks = (usage.prompt_tokens - 16) // 16
    assert shared_blocks >= 5 and hits >= 8 * 16 * shared_blocks, f"the system prompt came from the cache: {hits} tokens"


def test_a_kv_pool_too_small_for_everyone_preempts_and_answers_everyone_exactly(make_server):
    questions = [f"Write a long story about dragon number {i}." for i in range(6)]
    expected = answers_alone(make_server, questions, None, 48)
    # 16 blocks of 16 positions; each request needs about 90 positions (6 blocks).
    server = make_server(args=["--kv-tokens", "256"])
    _, key, _ = server.account()
    client = server.client(key)
    with ThreadPoolExecutor(6) as pool:
        got = list(pool.map(lambda q: ask(client, q, None, 48), questions))
    assert [text for text, _ in got] == expected
    assert server.metric("supernet:num_preemptions_total") > 0, "the pool was too small"
    assert server.metric("supernet:worker_kv_blocks", state="used") == 0, "every block was given back"
