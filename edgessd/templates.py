"""Chat templates: the GGUF's own, or one given as llama.cpp's ``--chat-template`` does.

A template given by the user is either the name of one llama.cpp renders itself (``chatml``,
``llama3``, ``gemma``...; :func:`edgessd._capi.builtin_chat_templates`) or Jinja source, as in
a Hugging Face ``tokenizer_config.json``. Jinja runs in jinja2's immutable sandbox with the
variables HF templates expect: ``messages``, ``add_generation_prompt``, ``bos_token``,
``eos_token`` and, where given, ``tools``. ``bos_token`` is empty, because tokenizing the
rendered prompt adds the model's BOS itself.
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import InvalidArgumentError

if TYPE_CHECKING:
    from jinja2 import Template

    from ._capi import Model


@dataclass(frozen=True)
class ChatTemplate:
    """A chat template chosen by the user: a llama.cpp built-in ``name``, or ``jinja`` source."""

    name: str | None = None
    jinja: str | None = None

    @classmethod
    def parse(cls, value: str) -> ChatTemplate:
        """``value`` as given to --chat-template: Jinja if it has ``{{`` or ``{%``, else a built-in name."""
        from ._capi import builtin_chat_templates

        if "{{" in value or "{%" in value:
            compile_jinja(value)  # a syntax error is reported now, not at the first message
            return cls(jinja=value)
        names = builtin_chat_templates()
        if value.strip() not in names:
            raise InvalidArgumentError(f"unknown chat template {value!r}: give a Jinja template (file) or one of "
                                       f"llama.cpp's built-in names: {', '.join(names)}")
        return cls(name=value.strip())

    def render(self, model: Model, messages: list[dict], *, tools: list[dict] | None = None) -> str:
        """The prompt for ``messages``, ending where the assistant's reply starts."""
        if self.jinja is not None:
            return render_jinja(self.jinja, messages, eos_token=model.eos_text(), tools=tools)
        text = model.apply_chat_template(messages, template=self.name)
        if text is None:
            raise InvalidArgumentError(f"llama.cpp could not render the chat template {self.name!r}")
        return text


@functools.lru_cache(maxsize=16)
def compile_jinja(source: str) -> Template:
    """Jinja ``source`` compiled in the sandbox, once per source (a chat turn or a request with
    tools renders it again); InvalidArgumentError on a syntax error."""
    from jinja2 import TemplateSyntaxError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.filters["tojson"] = lambda x, indent=None, **_: json.dumps(x, ensure_ascii=False, indent=indent)

    def fail(message: str) -> None:
        from jinja2 import TemplateError

        raise TemplateError(message)

    env.globals["raise_exception"] = fail
    try:
        return env.from_string(source)
    except TemplateSyntaxError as e:
        raise InvalidArgumentError(f"the chat template is not valid Jinja (line {e.lineno}): {e.message}") from None


def render_jinja(source: str, messages: list[dict], *, eos_token: str = "", tools: list[dict] | None = None) -> str:
    """Render a Jinja chat template; InvalidArgumentError if it fails on these messages."""
    from jinja2 import TemplateError

    variables = dict(messages=messages, add_generation_prompt=True, bos_token="", eos_token=eos_token)
    if tools is not None:
        variables["tools"] = tools
    try:
        return compile_jinja(source).render(**variables)
    except TemplateError as e:
        raise InvalidArgumentError(f"the chat template cannot render these messages: {e}") from None
