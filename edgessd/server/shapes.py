"""OpenAI's response objects, built from a generation's text and its :class:`GenerationResult`.

Besides OpenAI's fields, a final object carries llama-server's ``timings`` and an
``edgessd`` object (the mode that ran, mean accepted drafts per cycle).
"""
from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from ..engine import GenerationResult
from ..logprobs import TokenLogprob
from .structured import chat_logprobs, completion_logprobs


@dataclass
class Outcome:
    """How one generation ended, as the server reports it."""

    text: str                 # the reply, cut at the stop string if one was found
    finish_reason: str        # "stop" (end of generation or a stop string) | "length" (token, context or time limit)
    result: GenerationResult
    timed_out: bool = False   # stopped by the server's per-generation time limit
    logprobs: list[TokenLogprob] | None = None  # of the tokens whose text was sent, when asked for
    tool_calls: list[dict] | None = None        # parsed from the reply (finish_reason "tool_calls")


def finish_reason(stop_reason: str, *, stopped: bool) -> str:
    """OpenAI's finish_reason: "stop" for the end of generation or a stop string, else "length"
    (the engine's stop_reason length or context, or cancelled by the time limit)."""
    return "stop" if stopped or stop_reason == "eos" else "length"


def usage(result: GenerationResult) -> dict:
    """Tokens in the prompt (reused from the KV cache or not) and tokens generated.

    completion_tokens counts every token generated, also those after a stop string."""
    s = result.stats
    return {"prompt_tokens": s.n_prompt, "completion_tokens": s.n_generated,
            "total_tokens": s.n_prompt + s.n_generated}


def timings(result: GenerationResult) -> dict:
    """llama-server's ``timings`` object from :class:`GenerationStats`."""
    s = result.stats
    # the prompt's last token is decoded by the first generation step, so it is neither cached nor prompt_n
    return {"cache_n": max(s.n_prompt - 1 - s.n_prompt_eval, 0),
            "prompt_n": s.n_prompt_eval, "prompt_ms": s.t_prompt_ms, "prompt_per_second": s.prompt_tok_s,
            "predicted_n": s.n_generated, "predicted_ms": s.t_gen_ms, "predicted_per_second": s.gen_tok_s,
            "draft_n": s.n_drafted, "draft_n_accepted": s.n_accepted}


def extension(outcome: Outcome) -> dict:
    """The ``edgessd`` object: what ran (mode, the routed domain if any) and how drafting went."""
    r = outcome.result
    return {"mode": r.mode, "domain": r.domain, "mean_accepted": r.stats.mean_accepted,
            "acceptance_rate": r.stats.acceptance_rate, "stop_reason": r.stop_reason, "timed_out": outcome.timed_out}


def models_list(model: str, created: int) -> dict:
    """``GET /v1/models``: the one loaded model."""
    return {"object": "list", "data": [{"id": model, "object": "model", "created": created, "owned_by": "edgessd"}]}


class Shapes:
    """The objects of one response: one id, one creation time, one model name."""

    def __init__(self, kind: str, model: str, token_bytes: Callable[[int], bytes] | None = None) -> None:
        self.kind = kind
        self.model = model
        self.token_bytes = token_bytes or (lambda t: b"")
        self._offset = 0  # text sent so far (a streamed completion's text_offset)
        self.id = ("chatcmpl-" if kind == "chat" else "cmpl-") + uuid.uuid4().hex[:24]
        self.created = int(time.time())

    def _head(self, obj: str) -> dict:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model}

    def _logprobs(self, lps: list[TokenLogprob] | None, offset: int = 0) -> dict | None:
        if self.kind == "completion":
            return completion_logprobs(lps, self.token_bytes, offset)
        return chat_logprobs(lps, self.token_bytes)

    def _choice(self, text: str | None, finish: str | None, *, role: bool = False) -> dict:
        lp = self._logprobs(getattr(text, "logprobs", None), self._offset)
        if self.kind == "completion":
            return {"index": 0, "text": text or "", "logprobs": lp, "finish_reason": finish}
        delta = {"role": "assistant", "content": text or ""} if role else ({} if text is None else {"content": text})
        return {"index": 0, "delta": delta, "logprobs": lp, "finish_reason": finish}

    @property
    def chunk_object(self) -> str:
        return "chat.completion.chunk" if self.kind == "chat" else "text_completion"

    def response(self, outcome: Outcome) -> dict:
        """The whole non-streamed response."""
        if self.kind == "chat":
            obj = self._head("chat.completion")
            message: dict = {"role": "assistant", "content": outcome.text}
            if outcome.tool_calls:
                message = {"role": "assistant", "content": outcome.text or None, "tool_calls": outcome.tool_calls}
            choice = {"index": 0, "message": message,
                      "logprobs": self._logprobs(outcome.logprobs), "finish_reason": outcome.finish_reason}
        else:
            obj = self._head("text_completion")
            choice = {"index": 0, "text": outcome.text, "logprobs": self._logprobs(outcome.logprobs),
                      "finish_reason": outcome.finish_reason}
        obj.update(choices=[choice], usage=usage(outcome.result), timings=timings(outcome.result),
                   edgessd=extension(outcome))
        return obj

    def first_chunk(self) -> dict | None:
        """A chat stream opens with the assistant's role; a completion stream has no such chunk."""
        if self.kind != "chat":
            return None
        return dict(self._head(self.chunk_object), choices=[self._choice("", None, role=True)])

    def tool_calls_chunk(self, calls: list[dict]) -> dict:
        delta = {"tool_calls": [dict(c, index=i) for i, c in enumerate(calls)]}
        return dict(self._head(self.chunk_object), choices=[{"index": 0, "delta": delta, "logprobs": None,
                                                             "finish_reason": None}])

    def text_chunk(self, text: str) -> dict:
        chunk = dict(self._head(self.chunk_object), choices=[self._choice(text, None)])
        self._offset += len(text)
        return chunk

    def final_chunks(self, outcome: Outcome, *, include_usage: bool) -> list[dict]:
        """The chunk with finish_reason, carrying usage, timings and the edgessd object as
        llama-server's does. With ``stream_options.include_usage``, OpenAI's way: the
        finish_reason chunk alone, then a last chunk with no choices that carries them."""
        extra = {"usage": usage(outcome.result), "timings": timings(outcome.result), "edgessd": extension(outcome)}
        finish = dict(self._head(self.chunk_object), choices=[self._choice(None, outcome.finish_reason)])
        if not include_usage:
            return [dict(finish, **extra)]
        return [finish, dict(self._head(self.chunk_object), choices=[], **extra)]
