"""Tool calls: OpenAI's ``tools`` and ``tool_choice``, rendered through the GGUF chat template.

- The prompt is the GGUF's Jinja chat template rendered with ``tools`` (as llama-server
  does); a template that does not read ``tools`` gets them in a system message instead,
  with the same ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` convention
  (Hermes / Qwen 2.5), which the reply is parsed for.
- ``tool_choice``: ``"none"`` (no tools offered), ``"auto"`` (the model decides; the reply is
  parsed for calls), ``"required"`` or ``{"type": "function", "function": {"name": ...}}``:
  the reply is constrained to one call of the allowed tools, its arguments valid against
  the tool's ``parameters`` schema (a grammar over edgessd.grammar).
- A reply with calls has ``message.tool_calls`` and ``finish_reason: "tool_calls"``.
"""
from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass

from ..engine import Engine
from ..errors import GrammarError, InvalidArgumentError
from .schema import invalid

CALL_RE = re.compile(r"<tool_call>\s*(\{.*?\})\s*</tool_call>", re.S)
FALLBACK_SYSTEM = (
    "You may call one or more functions to assist with the user query. The functions are, as JSON:\n{tools}\n"
    "To call a function, reply with a JSON object with its name and arguments within <tool_call></tool_call> "
    'tags:\n<tool_call>\n{{"name": <function-name>, "arguments": <args-json-object>}}\n</tool_call>')


@dataclass(frozen=True)
class ToolRequest:
    """The tools a request offers, and how the reply must use them."""

    tools: list[dict]          # OpenAI's [{"type": "function", "function": {...}}]
    choice: str                # "auto" | "required" | "named"
    name: str | None = None    # the named function, for choice "named"

    @property
    def names(self) -> set[str]:
        return {t["function"]["name"] for t in self.tools}

    @property
    def constrained(self) -> bool:
        return self.choice in ("required", "named")


def parse_tools(body: dict) -> ToolRequest | None:
    """Validate ``tools`` and ``tool_choice``; None when no tools are offered (or choice is none)."""
    tools = body.get("tools")
    choice = body.get("tool_choice")
    if tools is None or tools == []:
        if choice not in (None, "none", "auto"):
            raise invalid("tool_choice", "tool_choice needs tools")
        return None
    if not isinstance(tools, list):
        raise invalid("tools", "tools must be an array")
    names = []
    for i, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(fn, dict):
            raise invalid(f"tools[{i}]", f'tools[{i}] must be {{"type": "function", "function": {{...}}}}')
        if not isinstance(fn.get("name"), str) or not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", fn["name"]):
            raise invalid(f"tools[{i}].function.name", f"tools[{i}].function.name must be 1-64 letters, digits, _.-")
        params = fn.get("parameters", {"type": "object"})
        if not isinstance(params, dict):
            raise invalid(f"tools[{i}].function.parameters", f"tools[{i}].function.parameters must be a JSON schema")
        names.append(fn["name"])
    if choice is None or choice == "auto":
        return ToolRequest(tools, "auto")
    if choice == "none":
        return None
    if choice == "required":
        return ToolRequest(tools, "required")
    fn = choice.get("function") if isinstance(choice, dict) else None
    if not isinstance(fn, dict) or choice.get("type") != "function" or not isinstance(fn.get("name"), str):
        raise invalid("tool_choice", 'tool_choice must be none, auto, required or {"type": "function", '
                                     '"function": {"name": ...}}')
    if fn["name"] not in names:
        raise invalid("tool_choice", f"tool_choice names {fn['name']!r}, which is not in tools")
    return ToolRequest(tools, "named", fn["name"])


def call_schema(req: ToolRequest) -> dict:
    """The JSON schema of one call of an allowed tool: ``{"name": const, "arguments": parameters}``."""
    options = []
    for tool in req.tools:
        fn = tool["function"]
        if req.choice == "named" and fn["name"] != req.name:
            continue
        options.append({"type": "object", "properties": {"name": {"const": fn["name"]},
                                                         "arguments": fn.get("parameters", {"type": "object"})},
                        "required": ["name", "arguments"], "additionalProperties": False})
    return options[0] if len(options) == 1 else {"anyOf": options}


def call_grammar(engine: Engine, req: ToolRequest) -> str:
    """A grammar (llguidance Lark) for one tool call in the model's tags; a 400 if a schema is bad."""
    tag = engine.model.tokenize("<tool_call>", add_special=False, parse_special=True)
    special = len(tag) == 1 and engine.model.is_special(tag[0])
    open_, close = ("<tool_call>", "</tool_call>") if special else ('"<tool_call>"', '"</tool_call>"')
    grammar = f'start: {open_} "\\n" call "\\n" {close}\ncall: %json {json.dumps(call_schema(req))}\n'
    try:
        engine.constraint(grammar=grammar)
    except GrammarError as e:
        raise invalid("tools", f"a tool's parameters are not a usable JSON schema: {e}") from None
    return grammar


def with_history(raw: list, messages: list[dict]) -> list[dict]:
    """``messages`` (validated role and content) with the tool history of the raw request:
    an assistant turn's ``tool_calls`` (arguments as objects, as templates expect) and a tool
    turn's ``tool_call_id``; a malformed call is a 400 naming the message."""
    out = []
    for i, (m, r) in enumerate(zip(messages, raw)):
        m = dict(m)
        calls = r.get("tool_calls") if isinstance(r, dict) else None
        if calls:
            if not isinstance(calls, list):
                raise invalid(f"messages[{i}].tool_calls", f"messages[{i}].tool_calls must be an array")
            m["tool_calls"] = [_history_call(c, f"messages[{i}].tool_calls[{j}]") for j, c in enumerate(calls)]
        if isinstance(r, dict) and isinstance(r.get("tool_call_id"), str):
            m["tool_call_id"] = r["tool_call_id"]
        out.append(m)
    return out


def _history_call(call: object, param: str) -> dict:
    fn = call.get("function") if isinstance(call, dict) else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        raise invalid(param, f'{param} must be {{"type": "function", "function": {{"name", "arguments"}}}}')
    args = fn.get("arguments", "{}")
    if isinstance(args, str):
        try:
            args = json.loads(args or "{}")
        except ValueError:
            raise invalid(f"{param}.function.arguments", f"{param}.function.arguments is not JSON") from None
    return {"id": call.get("id"), "type": "function", "function": {"name": fn["name"], "arguments": args}}


def _as_text(messages: list[dict]) -> list[dict]:
    """For a template without tools: earlier calls written into the assistant's text, as the model wrote them."""
    out = []
    for m in messages:
        text = m["content"] + "".join(
            "<tool_call>\n" + json.dumps({"name": c["function"]["name"], "arguments": c["function"]["arguments"]},
                                         ensure_ascii=False) + "\n</tool_call>" for c in m.get("tool_calls", []))
        out.append({"role": m["role"], "content": text})
    return out


def render(engine: Engine, messages: list[dict], req: ToolRequest) -> str:
    """The prompt: the chat's Jinja template rendered with the tools (or a system message listing them).

    The template is the one given to the engine (``chat_template``) if that is Jinja, else the GGUF's.
    """
    from ..templates import render_jinja

    chosen = engine.template
    template = chosen.jinja if chosen is not None else engine.model.chat_template
    if not template or "tools" not in template:
        listing = "\n".join(json.dumps(t, ensure_ascii=False) for t in req.tools)
        return engine.render([{"role": "system", "content": FALLBACK_SYSTEM.format(tools=listing)},
                              *_as_text(messages)])
    try:
        return render_jinja(template, messages, tools=req.tools)
    except InvalidArgumentError as e:
        raise invalid("messages", f"{e} (with tools)") from None


def parse_calls(text: str, names: set[str]) -> tuple[str | None, list[dict]]:
    """The reply's text outside any calls (None if empty) and its calls of the tools ``names``,
    in OpenAI's shape. Calls are ``<tool_call>{...}</tool_call>`` blocks, or a reply that is
    nothing but one call's JSON object (small models often leave out the tags)."""
    found = [(m.group(1), True) for m in CALL_RE.finditer(text)] or [(text.strip(), False)]
    calls = []
    for raw, _tagged in found:
        try:
            call = json.loads(raw)
        except ValueError:
            continue
        if not isinstance(call, dict) or call.get("name") not in names or not isinstance(call.get("arguments", {}),
                                                                                          dict):
            continue
        args = json.dumps(call.get("arguments", {}), ensure_ascii=False)
        calls.append({"id": "call_" + uuid.uuid4().hex[:24], "type": "function",
                      "function": {"name": call["name"], "arguments": args}})
    if not calls:
        return (text or None), []
    rest = CALL_RE.sub("", text).strip() if found[0][1] else ""
    return (rest or None), calls
