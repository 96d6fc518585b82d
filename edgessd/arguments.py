"""Checks of the arguments of Engine and Engine.stream: each bad one is an InvalidArgumentError
that names it, raised before any work starts (the CLI turns it into one error line)."""
from __future__ import annotations

import os

from .errors import InvalidArgumentError
from .skipset import SkipSet

MODES = ("auto", "plain", "lookup", "layerskip")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_engine_args(*, n_ctx: object, n_batch: object, n_gpu_layers: object, n_threads: object,
                      learn: object) -> None:
    if learn not in ("auto", "on", "off"):
        raise InvalidArgumentError(f"learn must be auto, on or off, got {learn!r}")
    for name, value in (("n_ctx", n_ctx), ("n_batch", n_batch), ("n_gpu_layers", n_gpu_layers),
                        ("n_threads", 1 if n_threads is None else n_threads)):
        if not _is_int(value):
            raise InvalidArgumentError(f"{name} must be an integer, got {value!r}")
    if n_threads is not None and n_threads <= 0:
        raise InvalidArgumentError(f"threads must be positive, got {n_threads}")


def check_stream_args(*, n_predict: object, draft_max: object, cancel: object, skip: object, logprobs: object,
                      mode: object) -> None:
    if not _is_int(n_predict) or n_predict < -1:
        raise InvalidArgumentError(f"n_predict must be an integer >= 0 (or -1: no limit), got {n_predict!r}")
    if draft_max is not None and (not _is_int(draft_max) or draft_max < 1):
        raise InvalidArgumentError(f"draft_max must be an integer >= 1, got {draft_max!r}")
    if cancel is not None and not callable(getattr(cancel, "is_set", None)):
        raise InvalidArgumentError(f"cancel must be a threading.Event, got {cancel!r}")
    if skip is not None and not isinstance(skip, (SkipSet, str)):
        raise InvalidArgumentError(f"skip must be a SkipSet or a spec such as 'attn:3,5;mlp:4-9', got {skip!r}")
    if logprobs is not None and (not _is_int(logprobs) or not 0 <= logprobs <= 20):
        raise InvalidArgumentError(f"logprobs must be an integer from 0 to 20, got {logprobs!r}")
    if mode not in MODES:
        raise InvalidArgumentError(f"unknown mode {mode!r} (choose from {', '.join(MODES)})")


def check_prompt(prompt: object) -> None:
    """InvalidArgumentError unless ``prompt`` is text or a list of {"role": str, "content": str}."""
    if isinstance(prompt, str):
        text = [prompt]
    elif isinstance(prompt, (list, tuple)) and prompt:
        if not all(isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                   for m in prompt):
            raise InvalidArgumentError('chat messages must be {"role": str, "content": str} objects')
        text = [m["content"] for m in prompt] + [m["role"] for m in prompt]
    else:
        raise InvalidArgumentError(f"the prompt must be text or a non-empty list of chat messages, got {prompt!r:.60}")
    for t in text:
        try:
            t.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidArgumentError("the prompt is not valid Unicode (a lone surrogate)") from None


def default_threads() -> int:
    """``$EDGESSD_THREADS``, else the number of physical cores (llama.cpp's own default)."""
    env = os.environ.get("EDGESSD_THREADS")
    if env:
        try:
            n = int(env)
        except ValueError:
            raise InvalidArgumentError(f"EDGESSD_THREADS={env!r} is not an integer") from None
        if n <= 0:
            raise InvalidArgumentError(f"EDGESSD_THREADS must be positive, got {n}")
        return n
    import psutil

    return psutil.cpu_count(logical=False) or os.cpu_count() or 1
