"""OpenAI request bodies, validated into a :class:`GenRequest`; errors as OpenAI's error body.

Fields the server does not use (``frequency_penalty``, ``user``, ``logprobs: false``...) are
ignored, as OpenAI clients send them freely; a field it uses but cannot honour (``n`` other
than 1) is a 400, as is any value of the wrong type or out of range.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from ..engine import MODES, Prompt

MAX_STOPS = 16


class ApiError(Exception):
    """An HTTP error with an OpenAI-style body: ``{"error": {"message", "type", "code", "param"}}``."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 code: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "code": self.code, "param": self.param}}


def invalid(param: str, message: str) -> ApiError:
    return ApiError(400, message, code="invalid_value", param=param)


@dataclass
class Defaults:
    """What a request gets for a field it leaves out (``edgessd serve``'s sampling flags)."""

    n_predict: int = 128
    temperature: float = 0.0
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.0
    repeat_penalty: float = 1.0
    repeat_last_n: int = 64
    seed: int | None = None
    mode: str = "auto"


@dataclass
class GenRequest:
    """One validated generation request."""

    kind: str                 # "chat" | "completion"
    prompt: Prompt            # chat messages [{"role", "content"}], or the completion's text
    n_predict: int
    temperature: float
    top_k: int
    top_p: float
    seed: int | None
    mode: str
    min_p: float = 0.0        # llama-server's min_p, repeat_penalty, repeat_last_n (not in OpenAI's API)
    repeat_penalty: float = 1.0
    repeat_last_n: int = 64
    stop: list[str] = field(default_factory=list)
    stream: bool = False
    include_usage: bool = False  # stream_options.include_usage: a last chunk with only usage

    def engine_kwargs(self) -> dict:
        """The keyword arguments of :meth:`Engine.stream` this request sets."""
        return dict(n_predict=self.n_predict, temperature=self.temperature, top_k=self.top_k, top_p=self.top_p,
                    min_p=self.min_p, repeat_penalty=self.repeat_penalty, repeat_last_n=self.repeat_last_n,
                    seed=self.seed, mode=self.mode)


def parse_json(data: bytes) -> dict:
    """The body as a JSON object, or a 400."""
    try:
        body = json.loads(data)
    except (ValueError, RecursionError) as e:  # RecursionError: absurdly deep nesting
        raise ApiError(400, f"the request body is not valid JSON: {str(e)[:200]}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object", code="invalid_json")
    return body


def parse_request(body: dict, kind: str, defaults: Defaults, *, n_ctx: int) -> GenRequest:
    """Validate ``body`` of a chat (``kind="chat"``) or text completion request.

    ``max_tokens`` (or ``max_completion_tokens``) is capped at ``n_ctx``: the engine stops
    at the end of the context anyway.
    """
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise invalid("model", "model must be a string")
    prompt: Prompt = _messages(body.get("messages")) if kind == "chat" else _prompt(body.get("prompt"))
    limit = _int(body, "max_completion_tokens", None, minimum=0)
    limit = _int(body, "max_tokens", limit, minimum=0)
    n = _int(body, "n", 1, minimum=1)
    if n != 1:
        raise invalid("n", "only n=1 is supported (one engine, one choice)")
    mode = body.get("mode", defaults.mode)
    if mode not in MODES:
        raise invalid("mode", f"mode must be one of {', '.join(MODES)}, got {json.dumps(mode)[:60]}")
    stream = _bool(body, "stream", False)
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise invalid("stream_options", "stream_options must be an object")
    include_usage = _bool(options or {}, "include_usage", False, param="stream_options.include_usage")
    seed = _int(body, "seed", defaults.seed)
    if seed is not None and seed < 0:  # llama.cpp's convention: -1 asks for a random seed
        seed = None
    top_p = _number(body, "top_p", defaults.top_p)
    if not 0 < top_p <= 1:
        raise invalid("top_p", f"top_p must be in (0, 1], got {top_p}")
    min_p = _number(body, "min_p", defaults.min_p, minimum=0.0)
    if min_p > 1:
        raise invalid("min_p", f"min_p must be in [0, 1], got {min_p}")
    repeat_penalty = _number(body, "repeat_penalty", defaults.repeat_penalty, minimum=0.0)
    if repeat_penalty <= 0:
        raise invalid("repeat_penalty", f"repeat_penalty must be > 0, got {repeat_penalty}")
    return GenRequest(kind=kind, prompt=prompt, n_predict=min(defaults.n_predict if limit is None else limit, n_ctx),
                      temperature=_number(body, "temperature", defaults.temperature, minimum=0.0),
                      top_k=_int(body, "top_k", defaults.top_k, minimum=0), top_p=top_p,
                      min_p=min_p, repeat_penalty=repeat_penalty,
                      repeat_last_n=_int(body, "repeat_last_n", defaults.repeat_last_n, minimum=-1),
                      seed=seed, mode=mode, stop=_stops(body.get("stop")),
                      stream=stream, include_usage=include_usage)


def _messages(value: Any) -> list[dict]:
    if value is None:
        raise invalid("messages", "messages is required")
    if not isinstance(value, list) or not value:
        raise invalid("messages", "messages must be a non-empty array")
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise invalid(f"messages[{i}]", f"messages[{i}] must be an object with a string role")
        out.append({"role": _utf8(m["role"], f"messages[{i}].role"), "content": _content(m.get("content"), i)})
    return out


def _content(value: Any, i: int) -> str:
    """A message's content: a string, null (an assistant turn without text), or text parts."""
    if value is None:
        return ""
    if isinstance(value, str):
        return _utf8(value, f"messages[{i}].content")
    if isinstance(value, list):
        parts = []
        for part in value:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise invalid(f"messages[{i}].content", "only text content parts are supported")
            parts.append(part["text"])
        return _utf8("".join(parts), f"messages[{i}].content")
    raise invalid(f"messages[{i}].content", f"messages[{i}].content must be a string or an array of text parts")


def _prompt(value: Any) -> str:
    if value is None:
        raise invalid("prompt", "prompt is required")
    if isinstance(value, list) and len(value) == 1:  # OpenAI's batch form with one prompt
        value = value[0]
    if not isinstance(value, str):
        raise invalid("prompt", "prompt must be a string (token arrays and batches are not supported)")
    return _utf8(value, "prompt")


def _stops(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise invalid("stop", "stop must be a string or an array of strings")
    if len(value) > MAX_STOPS:
        raise invalid("stop", f"at most {MAX_STOPS} stop strings")
    return [_utf8(s, "stop") for s in value if s]


def _utf8(value: str, param: str) -> str:
    """``value``, if it is text UTF-8 can carry (JSON may hold a lone surrogate such as "\\ud800")."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise invalid(param, f"{param} holds a lone surrogate, which is not text") from None
    return value


def _int(body: dict, key: str, default: int | None, *, minimum: int | None = None) -> int | None:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(key, f"{key} must be an integer")
    if minimum is not None and value < minimum:
        raise invalid(key, f"{key} must be >= {minimum}, got {value}")
    return value


def _number(body: dict, key: str, default: float, *, minimum: float | None = None) -> float:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise invalid(key, f"{key} must be a finite number")
    if minimum is not None and value < minimum:
        raise invalid(key, f"{key} must be >= {minimum}, got {value}")
    return float(value)


def _bool(body: dict, key: str, default: bool, *, param: str | None = None) -> bool:
    value = body.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise invalid(param or key, f"{param or key} must be true or false")
    return value
