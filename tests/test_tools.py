"""Tool calls: parsing replies (literal strings), and on qwen2.5-coder-0.5b (slow) the GGUF's
Jinja template rendering the tools and a required call constrained to the tool's schema."""
from __future__ import annotations

import json

import pytest

from edgessd.server.tools import ToolRequest, call_grammar, parse_calls, render, with_history

TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]}},
    "required": ["city", "unit"]}}}]
NAMES = {"get_weather"}


def test_tagged_calls_are_parsed_and_the_rest_kept():
    text = 'Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'
    rest, calls = parse_calls(text, NAMES)
    assert rest == "Let me check."
    assert len(calls) == 1 and calls[0]["function"] == {"name": "get_weather", "arguments": '{"city": "Oslo"}'}
    assert calls[0]["type"] == "function" and calls[0]["id"].startswith("call_")


def test_a_bare_call_object_is_a_call_and_prose_is_not():
    assert parse_calls('{"name": "get_weather", "arguments": {}}', NAMES)[1]
    assert parse_calls('{"name": "other_tool", "arguments": {}}', NAMES) == ('{"name": "other_tool", "arguments": {}}',
                                                                             [])
    assert parse_calls("It is sunny.", NAMES) == ("It is sunny.", [])
    assert parse_calls("<tool_call>{not json}</tool_call>", NAMES)[1] == []


@pytest.fixture(scope="module")
def qwen():
    from edgessd import Engine

    e = Engine("qwen2.5-coder-0.5b", n_ctx=2048, n_threads=2)
    yield e
    e.close()


@pytest.mark.slow
def test_qwen_template_renders_tools_and_a_required_call_follows_the_schema(qwen):
    req = ToolRequest(TOOLS, "required")
    msgs = [{"role": "user", "content": "What is the weather in Paris?"}]
    prompt = render(qwen, msgs, req)
    assert "<tools>" in prompt and json.dumps(TOOLS[0], ensure_ascii=False) in prompt
    assert prompt.endswith("<|im_start|>assistant\n")
    raw = [*msgs, {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": {
        "name": "get_weather", "arguments": '{"city": "Paris", "unit": "celsius"}'}}]},
           {"role": "tool", "tool_call_id": "c1", "content": "18 C, sunny"}]
    turn = render(qwen, with_history(raw, [{"role": m["role"], "content": m["content"] or ""} for m in raw]), req)
    assert '"arguments": {"city": "Paris", "unit": "celsius"}' in turn and "<tool_response>\n18 C, sunny" in turn
    out = {mode: qwen.generate(prompt, n_predict=60, mode=mode, grammar=call_grammar(qwen, req))
           for mode in ("plain", "lookup")}
    assert out["lookup"].tokens == out["plain"].tokens
    rest, calls = parse_calls(out["plain"].text, NAMES)
    assert rest is None and len(calls) == 1
    args = json.loads(calls[0]["function"]["arguments"])
    assert set(args) == {"city", "unit"} and args["unit"] in ("celsius", "fahrenheit")


def test_history_keeps_calls_as_objects_and_tool_ids():
    raw = [{"role": "user", "content": "Weather in Oslo?"},
           {"role": "assistant", "content": None, "tool_calls": [
               {"id": "call_1", "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}]},
           {"role": "tool", "tool_call_id": "call_1", "content": "-3 C"}]
    parsed = [{"role": m["role"], "content": m["content"] or ""} for m in raw]
    out = with_history(raw, parsed)
    assert out[1]["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": {"city": "Oslo"}}
    assert out[2]["tool_call_id"] == "call_1" and out[0] == parsed[0]


@pytest.mark.parametrize("call,param", [
    ({"function": {"arguments": "{}"}}, "messages[0].tool_calls[0]"),
    ({"function": {"name": "f", "arguments": "{bad"}}, "messages[0].tool_calls[0].function.arguments"),
])
def test_a_malformed_history_call_names_the_message(call, param):
    from edgessd.server.schema import ApiError

    with pytest.raises(ApiError) as info:
        with_history([{"role": "assistant", "tool_calls": [call]}], [{"role": "assistant", "content": ""}])
    assert info.value.param == param
