"""The client libraries people already use, unchanged, against the real server (issue 26):
LiteLLM's `completion` with an `openai/` model, LangChain's `ChatOpenAI` (`invoke`,
`stream`, `bind_tools` with a nested Pydantic model, `with_structured_output`), and the
`openai` package's `pydantic_function_tool` with a nested model. Versions are pinned in
`.ci/run`."""
import json
import os

import openai
import pytest
from pydantic import BaseModel, Field

# LiteLLM fetches a price list from GitHub on import unless told to use its bundled copy.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
import litellm  # noqa: E402
from langchain_openai import ChatOpenAI  # noqa: E402

from conftest import MODEL_ID  # noqa: E402

# LiteLLM's own pydantic models warn on import; they are not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

ASK = [{"role": "user", "content": "Save the person Ann who lives in Paris, zip 75001."}]


class Address(BaseModel):
    city: str = Field(max_length=16)
    zip: str = Field(max_length=8)


class Person(BaseModel):
    """A person and where they live."""
    name: str = Field(max_length=16)
    home: Address


@pytest.fixture
def chat(server, account):
    return ChatOpenAI(model=MODEL_ID, base_url=server.url + "/v1", api_key=account[1], max_retries=0,
                      temperature=0, max_tokens=80, timeout=120)


def test_litellm_completion_streaming_and_tools(server, account):
    kw = dict(model=f"openai/{MODEL_ID}", api_base=server.url + "/v1", api_key=account[1], max_tokens=12, temperature=0)
    r = litellm.completion(messages=[{"role": "user", "content": "Say hi"}], **kw)
    assert r.choices[0].message.content and r.usage.prompt_tokens > 0
    chunks = list(litellm.completion(messages=[{"role": "user", "content": "Say hi"}], stream=True, **kw))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == r.choices[0].message.content
    tool = openai.pydantic_function_tool(Person, name="save_person")
    r = litellm.completion(messages=ASK, tools=[tool], tool_choice="required", **{**kw, "max_tokens": 120})
    Person.model_validate(json.loads(r.choices[0].message.tool_calls[0].function.arguments))


def test_langchain_invoke_and_stream(chat):
    whole = chat.invoke("Say hi")
    assert whole.content and whole.usage_metadata["input_tokens"] > 0
    assert "".join(c.content for c in chat.stream("Say hi")) == whole.content


def test_langchain_bind_tools_with_a_nested_model(chat):
    bound = chat.bind_tools([Person], tool_choice="Person")
    msg = bound.invoke(ASK[0]["content"])
    assert not msg.invalid_tool_calls, msg.invalid_tool_calls
    Person.model_validate(msg.tool_calls[0]["args"])
    # Streamed, the chunks add up to the same valid call.
    merged = None
    for chunk in bound.stream(ASK[0]["content"]):
        merged = chunk if merged is None else merged + chunk
    assert not merged.invalid_tool_calls
    Person.model_validate(merged.tool_calls[0]["args"])


def test_langchain_structured_output(chat):
    person = chat.with_structured_output(Person).invoke(ASK[0]["content"])
    assert isinstance(person, Person) and isinstance(person.home, Address)


def test_openai_pydantic_function_tool_with_a_nested_model(server, account):
    client = server.client(account[1])
    r = client.chat.completions.parse(model=MODEL_ID, messages=ASK, max_tokens=120, temperature=0,
                                      tools=[openai.pydantic_function_tool(Person)], tool_choice="required")
    call = r.choices[0].message.tool_calls[0]
    assert isinstance(call.function.parsed_arguments, Person)
