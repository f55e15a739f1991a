"""Raw responses validate against OpenAI's published schemas (the extract in
../shared/reference/openai-chat-schemas.json) with `jsonschema`: the model list, a model, a
completion, every stream chunk, and error envelopes."""
import json

from jsonschema import Draft202012Validator

from conftest import MODEL_ID, SCHEMAS

ROOT = {"components": json.loads(SCHEMAS.read_text())["components"]}


def check(name, value):
    errors = [f"/{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in Draft202012Validator({"$ref": f"#/components/schemas/{name}", **ROOT}).iter_errors(value)]
    assert not errors, f"{name}: {errors}"


def test_every_response_matches_openais_schema(server, account):
    with server.http(account[1]) as h:
        check("ListModelsResponse", h.get("/v1/models").json())
        check("Model", h.get(f"/v1/models/{MODEL_ID}").json())
        body = {"model": MODEL_ID, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 6}
        r = h.post("/v1/chat/completions", json=body)
        assert r.status_code == 200
        assert r.json()["choices"][0]["logprobs"] is None and r.json()["choices"][0]["message"]["refusal"] is None
        check("CreateChatCompletionResponse", r.json())

        events = []
        with h.stream("POST", "/v1/chat/completions", json={**body, "stream": True, "stream_options": {"include_usage": True}}) as s:
            assert s.headers["content-type"].startswith("text/event-stream")
            events = [line[len("data: "):] for line in s.iter_lines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        chunks = [json.loads(e) for e in events[:-1]]
        assert len(chunks) >= 4  # role, text, finish, usage
        for c in chunks:
            check("CreateChatCompletionStreamResponse", c)

        errors = [
            h.post("/v1/chat/completions", json={"messages": "nope"}),
            h.post("/v1/chat/completions", json={**body, "model": "missing"}),
            h.get("/v1/nothing"),
            h.post("/v1/chat/completions", headers={"Authorization": "Bearer wrong"}, json=body),
        ]
        for e in errors:
            assert e.status_code >= 400
            check("ErrorResponse", e.json())
            assert set(e.json()["error"]) == {"message", "type", "param", "code"}
