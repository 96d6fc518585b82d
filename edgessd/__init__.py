"""edgessd: self-speculative decoding for local LLM inference that measures the device and decides.

Heavy modules (llama.cpp bindings, NumPy) load only when used, so ``import edgessd``
and ``edgessd --help`` stay fast.
"""
from __future__ import annotations

__version__ = "0.1.0"
