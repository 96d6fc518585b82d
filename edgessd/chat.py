"""An interactive chat session over an Engine: history, slash commands, status line.

The terminal front end is ``cli/chat_cmd.py``; this module holds what can be tested
without a terminal. The KV cache is kept across turns by the engine's prefix reuse: each
turn renders the whole conversation with the chat template, and only the new tail is
decoded.
"""
from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

from .engine import MODES, Engine, GenerationResult
from .errors import InvalidArgumentError

HELP = """\
/help                 this help
/exit                 leave (Ctrl-D also works)
/clear                forget the conversation (keeps the system prompt)
/regen                generate the last reply again
/system TEXT          set the system prompt (clears the conversation)
/set KEY VALUE        KEY: temp, top-k, top-p, min-p, repeat-penalty, repeat-last-n,
                      n, mode, seed, draft-max
/stats                statistics of the last reply
/stats on|off         show the status line after each reply
\"\"\"                   start or end a multi-line message
Ctrl-C stops the current reply."""


@dataclass
class ChatSettings:
    n_predict: int = 512
    temperature: float = 0.7
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.0
    repeat_penalty: float = 1.0
    repeat_last_n: int = 64
    seed: int | None = None
    mode: str = "auto"
    skip: str | None = None
    draft_max: int | None = None
    show_stats: bool = True

    def set(self, key: str, value: str) -> str:
        """Apply ``/set KEY VALUE``; returns a confirmation line. InvalidArgumentError if it makes no sense."""
        key = key.replace("_", "-")  # spelled like the flags; top_k still works
        if key not in _SETTERS:
            raise InvalidArgumentError(f"unknown setting {key!r} ({', '.join(_SETTERS)})")
        attr, parse, ok = _SETTERS[key]
        try:
            v = parse(value)
        except ValueError:
            raise InvalidArgumentError(f"bad value {value!r} for {key}") from None
        if not ok(v):
            raise InvalidArgumentError(f"bad value {value!r} for {key}")
        setattr(self, attr, v)
        return f"{key} = {value}"


def _seed(value: str) -> int | None:
    return None if value in ("none", "-1") else int(value)


# /set KEY -> (attribute, parser, check)
_SETTERS = {
    "temp": ("temperature", float, lambda v: v >= 0),
    "top-k": ("top_k", int, lambda v: v >= 0),
    "top-p": ("top_p", float, lambda v: 0 < v <= 1),
    "min-p": ("min_p", float, lambda v: 0 <= v <= 1),
    "repeat-penalty": ("repeat_penalty", float, lambda v: 0 < v < float("inf")),
    "repeat-last-n": ("repeat_last_n", int, lambda v: v >= -1),
    "n": ("n_predict", int, lambda v: v >= 1),
    "mode": ("mode", str, lambda v: v in MODES),
    "seed": ("seed", _seed, lambda v: True),
    "draft-max": ("draft_max", int, lambda v: v >= 1),
}


@dataclass
class ChatSession:
    engine: Engine
    settings: ChatSettings = field(default_factory=ChatSettings)
    system: str | None = None
    messages: list[dict] = field(default_factory=list)
    last: GenerationResult | None = None

    def conversation(self) -> list[dict]:
        sys_msg = [{"role": "system", "content": self.system}] if self.system else []
        return sys_msg + self.messages

    def fit_context_for(self, text: str) -> int:
        """Drop the oldest messages until the conversation, ``text`` and room for a reply fit the context.

        Returns how many messages were dropped (the system prompt is kept).
        """
        n_ctx = self.engine.ctx.n_ctx
        budget = n_ctx - min(self.settings.n_predict, n_ctx // 2)
        pending = [{"role": "user", "content": text}]
        dropped = 0
        while self.messages and len(self.engine.tokenize(self.conversation() + pending)) > budget:
            self.messages.pop(0)
            dropped += 1
        return dropped

    def reply(self, cancel: threading.Event | None = None) -> Iterator[str | GenerationResult]:
        """Stream the assistant's reply to the conversation so far, and record it."""
        s = self.settings
        result = None
        for item in self.engine.stream(self.conversation(), n_predict=s.n_predict, temperature=s.temperature,
                                       top_k=s.top_k, top_p=s.top_p, min_p=s.min_p,
                                       repeat_penalty=s.repeat_penalty, repeat_last_n=s.repeat_last_n,
                                       seed=s.seed, mode=s.mode, skip=s.skip, draft_max=s.draft_max,
                                       cancel=cancel):
            if isinstance(item, GenerationResult):
                result = item
            yield item
        assert result is not None
        self.last = result
        self.messages.append({"role": "assistant", "content": result.text})

    def ask(self, text: str, cancel: threading.Event | None = None) -> Iterator[str | GenerationResult]:
        self.messages.append({"role": "user", "content": text})
        return self.reply(cancel)

    def regen(self, cancel: threading.Event | None = None) -> Iterator[str | GenerationResult]:
        if not self.messages or self.messages[-1]["role"] != "assistant":
            raise InvalidArgumentError("nothing to regenerate yet")
        self.messages.pop()
        return self.reply(cancel)

    def clear(self) -> None:
        self.messages.clear()
        self.last = None

    def status_line(self) -> str:
        if self.last is None:
            return "[no reply yet]"
        r, st = self.last, self.last.stats
        mode = r.mode
        prompt = f"prompt {st.prompt_tok_s:.0f} t/s" if st.n_prompt_eval else "prompt cached"
        parts = [prompt, f"gen {st.gen_tok_s:.1f} t/s", mode]
        if st.n_drafted:
            parts.append(f"accept {100 * st.acceptance_rate:.0f}%")
        if r.domain:
            parts.append(f"domain {r.domain}")
        if r.stop_reason == "cancelled":
            parts.append("stopped")
        return "[" + " | ".join(parts) + "]"

    def stats_report(self) -> str:
        if self.last is None:
            return "no reply yet"
        st = self.last.stats
        return (f"tokens: prompt {st.n_prompt} (decoded {st.n_prompt_eval}), generated {st.n_generated}\n"
                f"cycles {st.n_cycles}, drafted {st.n_drafted}, accepted {st.n_accepted}, "
                f"mean_accepted {st.mean_accepted:.2f}\n"
                f"time: prompt {st.t_prompt_ms:.0f} ms, draft {st.t_draft_ms:.0f} ms, verify {st.t_verify_ms:.0f} ms, "
                f"gen {st.t_gen_ms:.0f} ms\n"
                f"speed: prompt {st.prompt_tok_s:.1f} t/s, gen {st.gen_tok_s:.1f} t/s; stop: {self.last.stop_reason}")
