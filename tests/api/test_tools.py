"""Function calling and structured output with the official `openai` client, on SmolLM2-135M
(whose template knows nothing of tools): forced calls always carry schema-valid arguments,
`tool_choice` and `parallel_tool_calls` are honoured, streamed calls reassemble into the
non-streamed call, a tool result round-trips, `response_format` output validates, and no
markup ever reaches `content`."""
import json
from concurrent.futures import ThreadPoolExecutor

import jsonschema
import pytest

from conftest import MODEL_ID, REPO

# Twenty tools and twenty response schemas, each with a question that fits it.
STRUCTURED = json.loads((REPO / "tests/data/structured.json").read_text())
TOOLS = [(t["name"], t["description"], t["parameters"], t["question"]) for t in STRUCTURED["tools"]]
FORMATS = [(f["name"], f["schema"], f["question"]) for f in STRUCTURED["formats"]]

WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city",
                                            "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, "required": ["city"]}}}
TIME = {"type": "function", "function": {"name": "get_time", "description": "Local time in a city",
                                         "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
NEWS = {"type": "function", "function": {"name": "get_news", "description": "Headlines about a topic",
                                         "parameters": {"type": "object", "properties": {"topic": {"type": "string"}, "count": {"type": "integer", "minimum": 1, "maximum": 5}}, "required": ["topic", "count"]}}}
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in (WEATHER, TIME, NEWS)}


def function_tool(name, description, parameters):
    return {"type": "function", "function": {"name": name, "description": description, "parameters": parameters}}


def no_markup(message):
    content = message.content or ""
    assert "<tool_call>" not in content and "<think>" not in content, f"markup leaked into content: {content!r}"


@pytest.fixture(scope="module")
def client(server, account):
    return server.client(account[1])


def create(client, question, **kw):
    kw.setdefault("temperature", 0)
    kw.setdefault("max_tokens", 200)
    return client.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": question}], **kw)


def test_a_forced_named_call_fits_each_of_20_schemas(client):
    def call(spec):
        name, description, parameters, question = spec
        tool = function_tool(name, description, parameters)
        r = create(client, question, tools=[tool], tool_choice={"type": "function", "function": {"name": name}})
        return spec, r.choices[0]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(call, TOOLS))
    assert len({name for name, *_ in TOOLS}) == 20
    for (name, _, parameters, _), choice in results:
        no_markup(choice.message)
        assert choice.finish_reason == "tool_calls", (name, choice)
        [c] = choice.message.tool_calls
        assert c.type == "function" and c.function.name == name and c.id.startswith("call_")
        jsonschema.validate(json.loads(c.function.arguments), parameters)


def test_required_calls_one_of_three_tools(client):
    r = create(client, "What's new in science today?", tools=[WEATHER, TIME, NEWS], tool_choice="required")
    choice = r.choices[0]
    no_markup(choice.message)
    assert choice.finish_reason == "tool_calls" and choice.message.tool_calls
    for c in choice.message.tool_calls:
        jsonschema.validate(json.loads(c.function.arguments), SCHEMAS[c.function.name])


def test_none_never_calls(client):
    for question in ["What's the weather in Rome?", "Call get_time for Tokyo."]:
        r = create(client, question, tools=[WEATHER, TIME], tool_choice="none", max_tokens=60)
        choice = r.choices[0]
        no_markup(choice.message)
        assert choice.message.tool_calls is None and choice.finish_reason in ("stop", "length")


def test_parallel_tool_calls_false_makes_at_most_one_call(client):
    question = "What's the weather in Paris, in Rome and in Oslo?"
    both = create(client, question, tools=[WEATHER, TIME], tool_choice="required")
    assert len(both.choices[0].message.tool_calls) > 1, "the model makes several calls when it may"
    one = create(client, question, tools=[WEATHER, TIME], tool_choice="required", parallel_tool_calls=False)
    no_markup(one.choices[0].message)
    assert len(one.choices[0].message.tool_calls) == 1
    auto = create(client, question, tools=[WEATHER, TIME], parallel_tool_calls=False)
    assert len(auto.choices[0].message.tool_calls or []) <= 1


def test_streamed_calls_reassemble_into_the_non_streamed_call(client):
    kw = dict(tools=[WEATHER, TIME], tool_choice="required")
    question = "What's the weather and the time in Paris?"
    whole = create(client, question, **kw).choices[0]
    calls, finish, saw_content = {}, None, ""
    for chunk in create(client, question, stream=True, **kw):
        choice = chunk.choices[0]
        saw_content += choice.delta.content or ""
        for d in choice.delta.tool_calls or []:
            if d.id:
                assert d.index not in calls and d.function.name, "id and name come first, once"
                calls[d.index] = {"id": d.id, "name": d.function.name, "arguments": d.function.arguments or ""}
            else:
                calls[d.index]["arguments"] += d.function.arguments
        finish = choice.finish_reason or finish
    assert "<tool_call>" not in saw_content and finish == whole.finish_reason == "tool_calls"
    streamed = [(c["name"], c["arguments"]) for _, c in sorted(calls.items())]
    assert streamed == [(c.function.name, c.function.arguments) for c in whole.message.tool_calls]


def test_a_tool_round_trip(client):
    messages = [{"role": "user", "content": "What's the weather like in Paris?"}]
    first = client.chat.completions.create(model=MODEL_ID, messages=messages, tools=[WEATHER], tool_choice="required", temperature=0, max_tokens=100)
    call = first.choices[0].message
    assert call.content is None and call.tool_calls[0].function.name == "get_weather"
    messages.append(call.model_dump(exclude_none=True))
    messages += [{"role": "tool", "tool_call_id": c.id, "content": json.dumps({"temperature": 21, "sky": "sunny"})} for c in call.tool_calls]
    # SmolLM2-135M calls the tool again under `auto`; `none` asks for the answer itself.
    answer = client.chat.completions.create(model=MODEL_ID, messages=messages, tools=[WEATHER], tool_choice="none", temperature=0, max_tokens=100).choices[0]
    no_markup(answer.message)
    assert answer.finish_reason == "stop" and answer.message.tool_calls is None
    assert "21" in answer.message.content or "sunny" in answer.message.content, answer.message.content


def test_response_format_output_validates_for_20_schemas(client):
    def ask(spec):
        name, schema, question = spec
        r = create(client, question, response_format={"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}})
        return spec, r.choices[0]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(ask, FORMATS))
    assert len({name for name, *_ in FORMATS}) == 20
    for (name, schema, _), choice in results:
        no_markup(choice.message)
        assert choice.finish_reason == "stop", (name, choice.message.content)
        jsonschema.validate(json.loads(choice.message.content), schema)


def test_json_object_and_a_schema_combined_with_tools(client):
    r = create(client, "List three primary colors as JSON.", response_format={"type": "json_object"})
    assert isinstance(json.loads(r.choices[0].message.content), dict)
    # With tools on `auto`, the output is a valid answer or valid calls: never anything else.
    name, schema, question = FORMATS[0]
    r = create(client, question, tools=[WEATHER], response_format={"type": "json_schema", "json_schema": {"name": name, "schema": schema}})
    message = r.choices[0].message
    no_markup(message)
    if message.tool_calls:
        jsonschema.validate(json.loads(message.tool_calls[0].function.arguments), SCHEMAS["get_weather"])
    else:
        jsonschema.validate(json.loads(message.content), schema)


def test_bad_tool_requests_are_400s_naming_the_field(server, account):
    http = server.http(account[1])
    base = {"model": MODEL_ID, "messages": [{"role": "user", "content": "hi"}]}
    cases = [
        ({"tools": [{"type": "function", "function": {"name": "bad name"}}]}, "tools[0].function.name"),
        ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice.function.name"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"$ref": "#/$defs/missing"}}}}, "response_format.json_schema.schema"),
        ({"response_format": {"type": "yaml"}}, "response_format.type"),
    ]
    for extra, param in cases:
        r = http.post("/v1/chat/completions", json={**base, **extra})
        assert r.status_code == 400, (extra, r.text)
        assert r.json()["error"]["param"] == param, r.text
