"""Structured output and logprobs in OpenAI requests and responses.

Request fields read here:
- ``response_format``: ``{"type": "text"}``, ``{"type": "json_object"}`` (any JSON object) or
  ``{"type": "json_schema", "json_schema": {"name", "schema", "strict"}}``. With ``strict``
  true, an object schema that does not say otherwise allows no properties beyond its own,
  as OpenAI's strict mode does. The schema is compiled before the request is queued, so an
  invalid schema or an unsupported feature is a 400 naming ``response_format``.
- chat: ``logprobs`` (bool) and ``top_logprobs`` (0-20); completions: ``logprobs`` (0-20).
- ``tools`` / ``tool_choice``: see edgessd.server.tools; ``required`` or a named function
  constrains the reply to a call (a grammar), so it cannot be combined with ``response_format``.
  The old ``functions`` field is a 400.

Log-probabilities are the full model's (edgessd.logprobs), so they are the same under every mode.
"""
from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..engine import Engine
from ..errors import GrammarError
from ..logprobs import TokenLogprob
from .schema import invalid
from .tools import ToolRequest, call_grammar, parse_tools

MAX_TOP = 20


@dataclass(frozen=True)
class Structured:
    """What a request asks beyond text: a JSON schema to follow, and logprobs to report."""

    json_schema: dict | None = None
    logprobs: int | None = None     # None: no logprobs; else how many alternatives per token
    tools: ToolRequest | None = None
    grammar: str | None = None      # a tool call's grammar, for tool_choice required or named

    def engine_kwargs(self) -> dict:
        out: dict = {}
        if self.json_schema is not None:
            out["json_schema"] = self.json_schema
        if self.grammar is not None:
            out["grammar"] = self.grammar
        if self.logprobs is not None:
            out["logprobs"] = self.logprobs
        return out


def parse_structured(body: dict, kind: str, engine: Engine) -> Structured:
    """Validate ``response_format``, logprobs fields and ``tools`` of a request body."""
    if body.get("functions") or body.get("function_call"):
        raise invalid("functions", "functions and function_call are not supported; use tools and tool_choice")
    tools = parse_tools(body) if kind == "chat" else None
    if kind != "chat" and body.get("tools"):
        raise invalid("tools", "tools need /v1/chat/completions")
    schema = _response_format(body.get("response_format"))
    if schema is not None:
        if tools is not None and tools.constrained:
            raise invalid("response_format", "response_format cannot be combined with a required tool call")
        try:
            engine.constraint(json_schema=schema)
        except GrammarError as e:
            raise invalid("response_format", f"response_format: {e}") from None
    grammar = call_grammar(engine, tools) if tools is not None and tools.constrained else None
    return Structured(json_schema=schema, logprobs=_logprobs(body, kind), tools=tools, grammar=grammar)


def _response_format(value: Any) -> dict | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise invalid("response_format", "response_format must be an object")
    kind = value.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "object"}
    if kind != "json_schema":
        raise invalid("response_format.type", "response_format.type must be text, json_object or json_schema, "
                                              f"got {json.dumps(kind)[:60]}")
    spec = value.get("json_schema")
    if not isinstance(spec, dict):
        raise invalid("response_format.json_schema", "response_format.json_schema must be an object")
    name = spec.get("name")
    if not isinstance(name, str) or not name:
        raise invalid("response_format.json_schema.name", "response_format.json_schema.name is required")
    schema = spec.get("schema", {})
    if not isinstance(schema, dict):
        raise invalid("response_format.json_schema.schema", "response_format.json_schema.schema must be an object")
    strict = spec.get("strict", False)
    if not isinstance(strict, bool) and strict is not None:
        raise invalid("response_format.json_schema.strict", "response_format.json_schema.strict must be a boolean")
    return closed_objects(schema) if strict else schema


def closed_objects(schema: dict) -> dict:
    """A copy of ``schema`` where every object schema without ``additionalProperties`` has it false."""
    out = copy.deepcopy(schema)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if (node.get("type") == "object" or "properties" in node) and "additionalProperties" not in node:
                node["additionalProperties"] = False
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(out)
    return out


def _logprobs(body: dict, kind: str) -> int | None:
    value = body.get("logprobs")
    if kind == "completion":
        if value is None or value is False:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_TOP:
            raise invalid("logprobs", f"logprobs must be an integer from 0 to {MAX_TOP}")
        return value
    top = body.get("top_logprobs")
    if value is not None and not isinstance(value, bool):
        raise invalid("logprobs", "logprobs must be true or false")
    if top is not None and (isinstance(top, bool) or not isinstance(top, int) or not 0 <= top <= MAX_TOP):
        raise invalid("top_logprobs", f"top_logprobs must be an integer from 0 to {MAX_TOP}")
    if top is not None and not value:
        raise invalid("top_logprobs", "top_logprobs needs logprobs: true")
    return (top or 0) if value else None


# -- responses -----------------------------------------------------------------------------------
TokenBytes = Callable[[int], bytes]


def chat_logprobs(lps: list[TokenLogprob] | None, token_bytes: TokenBytes) -> dict | None:
    """A chat choice's ``logprobs``: ``{"content": [{"token", "logprob", "bytes", "top_logprobs"}], "refusal"}``."""
    if lps is None:
        return None

    def entry(tok: int, lp: float) -> dict:
        raw = token_bytes(tok)
        return {"token": raw.decode("utf-8", "replace"), "logprob": lp, "bytes": list(raw)}

    content = [dict(entry(x.token, x.logprob), top_logprobs=[entry(t, v) for t, v in x.top]) for x in lps]
    return {"content": content, "refusal": None}


def completion_logprobs(lps: list[TokenLogprob] | None, token_bytes: TokenBytes, offset: int = 0) -> dict | None:
    """A completion choice's ``logprobs``: ``tokens``, ``token_logprobs``, ``top_logprobs``, ``text_offset``."""
    if lps is None:
        return None
    text = [token_bytes(x.token).decode("utf-8", "replace") for x in lps]
    offsets, at = [], offset
    for t in text:
        offsets.append(at)
        at += len(t)
    tops = [{token_bytes(t).decode("utf-8", "replace"): v for t, v in x.top} for x in lps]
    return {"tokens": text, "token_logprobs": [x.logprob for x in lps], "top_logprobs": tops,
            "text_offset": offsets}
