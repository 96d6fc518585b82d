"""Structured output, tool calls and logprobs through a real `edgessd serve`, driven by the
official `openai` client: json_object, json_schema (also via `chat.completions.parse` with a
pydantic model), required and named tool calls (smollm2's template has no tools, so they go
in a system message), logprobs streamed and not, identical under every mode, and bad input
as 400s naming the field."""
from __future__ import annotations

import json

import openai
import pytest
from pydantic import BaseModel
from test_server import Server

SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
          "required": ["city", "population"]}
ASK = [{"role": "user", "content": "Give the biggest city of France and its population as JSON."}]


class City(BaseModel):
    city: str
    population: int


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("structured"))
    yield s
    s.close()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


def test_json_object(client):
    ask = [{"role": "user", "content": "What is the capital of France? Reply in JSON."}]
    r = client.chat.completions.create(model="m", messages=ask, max_tokens=60, response_format={"type": "json_object"})
    assert r.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(r.choices[0].message.content), dict)


def test_json_schema_strict_allows_only_its_properties(client):
    fmt = {"type": "json_schema", "json_schema": {"name": "city", "schema": SCHEMA, "strict": True}}
    r = client.chat.completions.create(model="m", messages=ASK, max_tokens=60, response_format=fmt)
    doc = json.loads(r.choices[0].message.content)
    assert set(doc) == {"city", "population"} and isinstance(doc["population"], int)


def test_parse_with_a_pydantic_model(client):
    r = client.chat.completions.parse(model="m", messages=ASK, max_tokens=60, response_format=City)
    parsed = r.choices[0].message.parsed
    assert isinstance(parsed, City) and parsed.city


def test_logprobs_are_the_same_streamed_and_not_and_under_every_mode(client):
    runs = {}
    for mode in ("plain", "lookup", "layerskip"):
        r = client.chat.completions.create(model="m", messages=ASK, max_tokens=24, logprobs=True, top_logprobs=3,
                                           extra_body={"mode": mode})
        content = r.choices[0].logprobs.content
        assert "".join(t.token for t in content) == r.choices[0].message.content
        assert all(len(t.top_logprobs) == 3 and t.top_logprobs[0].logprob >= t.logprob for t in content)
        runs[mode] = [(t.token, t.logprob) for t in content]
    assert runs["lookup"] == runs["plain"] and runs["layerskip"] == runs["plain"]
    streamed = []
    for chunk in client.chat.completions.create(model="m", messages=ASK, max_tokens=24, logprobs=True,
                                                top_logprobs=3, stream=True):
        if chunk.choices and chunk.choices[0].logprobs and chunk.choices[0].logprobs.content:
            streamed += [(t.token, t.logprob) for t in chunk.choices[0].logprobs.content]
    assert streamed == runs["plain"]


def test_completion_logprobs_as_a_number(client):
    r = client.completions.create(model="m", prompt="The capital of France is", max_tokens=8, logprobs=2)
    lp = r.choices[0].logprobs
    assert "".join(lp.tokens) == r.choices[0].text
    assert len(lp.token_logprobs) == len(lp.tokens) and all(len(t) == 2 for t in lp.top_logprobs)
    assert lp.text_offset[0] == 0


@pytest.mark.parametrize("extra,param", [
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "objectx"}}}},
     "response_format"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {
        "type": "string", "format": "not-a-format"}}}}, "response_format"),
    ({"response_format": {"type": "xml"}}, "response_format.type"),
    ({"response_format": {"type": "json_schema", "json_schema": {"schema": SCHEMA}}},
     "response_format.json_schema.name"),
    ({"top_logprobs": 3}, "top_logprobs"),
    ({"logprobs": True, "top_logprobs": 50}, "top_logprobs"),
])
def test_bad_input_is_a_400_naming_the_field(client, extra, param):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="m", messages=ASK, max_tokens=4, extra_body=extra)
    assert info.value.status_code == 400
    assert info.value.body["param"] == param, info.value.body


TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "The current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                                                    "unit": {"enum": ["celsius", "fahrenheit"]}},
                   "required": ["city", "unit"]}}},
    {"type": "function", "function": {"name": "get_time", "parameters": {
        "type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"]}}}]
WEATHER = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "get_time"}}],
                         ids=["required", "named"])
def test_a_required_tool_call_follows_the_tools_schema(client, choice):
    r = client.chat.completions.create(model="m", messages=WEATHER, tools=TOOLS, tool_choice=choice, max_tokens=60)
    c = r.choices[0]
    assert c.finish_reason == "tool_calls" and len(c.message.tool_calls) == 1
    call = c.message.tool_calls[0].function
    args = json.loads(call.arguments)
    if choice == "required":
        assert call.name in ("get_weather", "get_time")
    else:
        assert call.name == "get_time" and set(args) == {"zone"}
    if call.name == "get_weather":
        assert set(args) == {"city", "unit"} and args["unit"] in ("celsius", "fahrenheit")


def test_a_streamed_tool_call(client):
    chunks = list(client.chat.completions.create(model="m", messages=WEATHER, tools=TOOLS, tool_choice="required",
                                                 max_tokens=60, stream=True))
    calls = [t for ch in chunks if ch.choices and ch.choices[0].delta.tool_calls
             for t in ch.choices[0].delta.tool_calls]
    assert len(calls) == 1 and calls[0].index == 0 and calls[0].id
    json.loads(calls[0].function.arguments)
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == "tool_calls"


@pytest.mark.parametrize("extra,param", [
    ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, "tools[0].function.name"),
    ({"tools": [{"type": "nope"}]}, "tools[0]"),
    ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "missing"}}}, "tool_choice"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "objectx"}}}],
      "tool_choice": "required"}, "tools"),
    ({"tools": TOOLS, "tool_choice": "required", "response_format": {"type": "json_object"}}, "response_format"),
    ({"functions": [{"name": "f"}]}, "functions"),
])
def test_bad_tool_input_is_a_400_naming_the_field(client, extra, param):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="m", messages=WEATHER, max_tokens=4, extra_body=extra)
    assert info.value.body["param"] == param, info.value.body


def test_a_conversation_with_a_tool_result_gets_a_reply(client):
    msgs = [*WEATHER, {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris", "unit": "celsius"}'}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "18 C and sunny"}]
    r = client.chat.completions.create(model="m", messages=msgs, tools=TOOLS, max_tokens=24)
    assert r.choices[0].finish_reason in ("stop", "length", "tool_calls")
    assert r.choices[0].message.content or r.choices[0].message.tool_calls
