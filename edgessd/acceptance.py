"""Cheap acceptance estimates: teacher-forced *matchness* (after SWIFT).

The share of positions where the draft's argmax (the same model under a skip mask) agrees
with the full model's, over a token sequence, estimates the draft's per-token acceptance
under greedy verification without running a generation.

Variants:
- :func:`single_skip_matchness`: for the device profile, each single sublayer skipped in
  turn, one masked pass over a continuation on the full model's prompt cache.
- :func:`matchness`: one masked pass over the whole sequence. Cheapest, but every prefix
  state is the draft's own, so errors compound far beyond what drafting sees; it ranks
  sets poorly (bench/planner_accuracy.py, section 4).
- :func:`block_matchness`: the prefix comes from the full model, as in real drafting; each
  block of ``block`` tokens is decoded under the mask, scored, then decoded again by the
  full model to restore the cache. About twice the cost, and faithful to drafting of
  ``block - 1`` tokens.
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


def masked_argmax(ctx: Context, tokens: Sequence[int], pos0: int, flags: np.ndarray) -> np.ndarray:
    """Argmax of every row of ``tokens`` decoded at ``pos0..`` under ``flags`` on top of the
    cache, which it leaves as it found it (positions from ``pos0`` removed)."""
    with ctx.skipping(flags):
        ctx.decode(list(tokens), pos0, all_logits=True)
        got = np.argmax(ctx.logits(), axis=1)
    ctx.kv_remove(pos0)
    return got


def single_skip_matchness(ctx: Context, tokens: Sequence[int], start: int = 1, *,
                          progress: Callable[[], None] = lambda: None) -> tuple[np.ndarray, np.ndarray]:
    """Matchness with each one sublayer skipped: float ``[L]`` for attention and ``[L]`` for MLP.

    ``tokens[:start]`` (a prompt) is decoded once by the full model; each masked pass then
    decodes only ``tokens[start - 1:]`` on top of that cache and scores its predictions of
    ``tokens[start:]`` and beyond. That is the drafting situation (a full-model prefix), and
    half the work of masking the prompt too.
    """
    n_layer = ctx.model.n_layer
    start = min(max(1, start), len(tokens))
    tail = list(tokens[start - 1:start - 1 + ctx.n_batch])  # one batch: all its logits are needed
    ref = argmax_rows(ctx, tokens, None)[start - 1:start - 1 + len(tail)]
    if start > 1:
        ctx.decode(list(tokens[:start - 1]), 0)
    m_attn, m_mlp = np.ones(n_layer), np.ones(n_layer)
    for il in range(n_layer):
        for flag, dest in ((SKIP_ATTN, m_attn), (SKIP_FFN, m_mlp)):
            flags = np.zeros(n_layer, np.uint8)
            flags[il] = flag
            dest[il] = float(np.mean(masked_argmax(ctx, tail, start - 1, flags) == ref))
            progress()
    ctx.kv_clear()
    return m_attn, m_mlp


def block_matchness(ctx: Context, tokens: Sequence[int], flags: np.ndarray, start: int,
                    reference: np.ndarray | None = None, block: int = 4) -> float:
    """Matchness over ``tokens[start:]`` with the full model's cache for every prefix.

    For each block of ``block`` tokens: decode it under ``flags`` on top of the full model's
    cache (all logits), compare argmaxes with ``reference`` (the full model's, from
    :func:`argmax_rows`), drop it, and decode it with the full model. Leaves the cache empty.
    """
    ref = argmax_rows(ctx, tokens, None) if reference is None else reference
    n = len(tokens)
    hits = total = 0
    ctx.kv_clear()
    if start > 0:
        ctx.decode(list(tokens[:start]), 0)
    for b in range(start, n, block):
        chunk = list(tokens[b:b + block])
        got = masked_argmax(ctx, chunk, b, flags)
        ctx.decode(chunk, b)
        # got[i] predicts the token after chunk[i]; the block's last prediction is still scored
        hits += int(np.sum(got == ref[b:b + len(chunk)]))
        total += len(chunk)
    ctx.kv_clear()
    return hits / max(total, 1)
