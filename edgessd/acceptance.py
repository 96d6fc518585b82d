"""Cheap acceptance estimates: SWIFT's teacher-forced *matchness*.

One batched pass of the full model and one of the draft (the same model under a skip
mask) over a token sequence, with logits at every position. The share of positions where
the two argmaxes agree estimates the draft's per-token acceptance rate under greedy
verification, at the cost of two batched passes instead of a whole generation.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ._capi import Context
from .skipset import SKIP_ATTN, SKIP_FFN


def argmax_rows(ctx: Context, tokens: Sequence[int], flags: np.ndarray | None) -> np.ndarray:
    """Argmax of the logits at every position of ``tokens`` (decoded from position 0) under ``flags``.

    Returns int ``[len(tokens)]``. Uses the context's KV cache and leaves it empty.
    """
    out = np.empty(len(tokens), dtype=np.int64)
    ctx.kv_clear()
    with ctx.skipping(flags):
        for start in range(0, len(tokens), ctx.n_batch):
            chunk = list(tokens[start:start + ctx.n_batch])
            ctx.decode(chunk, start, all_logits=True)
            out[start:start + len(chunk)] = np.argmax(ctx.logits(), axis=1)
    ctx.kv_clear()
    return out


def matchness(ctx: Context, tokens: Sequence[int], flags: np.ndarray,
              reference: np.ndarray | None = None, skip_first: int = 1) -> float:
    """Share of positions (after the first ``skip_first``) where the draft's argmax equals the full model's."""
    ref = argmax_rows(ctx, tokens, None) if reference is None else reference
    got = argmax_rows(ctx, tokens, flags)
    return float(np.mean(got[skip_first:] == ref[skip_first:]))


def single_skip_matchness(ctx: Context, tokens: Sequence[int], *,
                          progress: Callable[[], None] = lambda: None) -> tuple[np.ndarray, np.ndarray]:
    """Matchness with each one sublayer skipped: float ``[L]`` for attention and ``[L]`` for MLP."""
    n_layer = ctx.model.n_layer
    ref = argmax_rows(ctx, tokens, None)
    m_attn, m_mlp = np.ones(n_layer), np.ones(n_layer)
    for il in range(n_layer):
        for flag, dest in ((SKIP_ATTN, m_attn), (SKIP_FFN, m_mlp)):
            flags = np.zeros(n_layer, np.uint8)
            flags[il] = flag
            dest[il] = matchness(ctx, tokens, flags, ref)
            progress()
    return m_attn, m_mlp
