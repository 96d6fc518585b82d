"""edgessd: self-speculative decoding for local LLM inference that measures the device and decides.

Heavy modules (llama.cpp bindings, NumPy) load only when used, so ``import edgessd``
and ``edgessd --help`` stay fast.
"""
from __future__ import annotations

__version__ = "0.1.0"


def __getattr__(name: str):
    # lazy: `from edgessd import Engine` loads llama.cpp only when asked for
    if name in ("Engine", "GenerationResult"):
        from . import engine

        return getattr(engine, name)
    if name == "SkipSet":
        from .skipset import SkipSet

        return SkipSet
    raise AttributeError(name)
