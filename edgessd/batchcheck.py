"""Whether a verification batch computes what one-token decoding computes, bit for bit."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ._capi import Context


def batch_and_single_logits(ctx: Context, pos: int, tokens: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """``tokens`` decoded at ``pos`` as one batch with every row's logits, and one at a time.

    Returns two float32 arrays ``[len(tokens), n_vocab]`` (batch, single). The cache after
    ``pos`` is removed after each pass, so ``ctx`` is left as it was given.
    """
    ctx.decode(tokens, pos, all_logits=True)
    batch = np.array(ctx.logits()[:len(tokens)])
    ctx.kv_remove(pos)
    single = []
    try:
        for i, t in enumerate(tokens):
            ctx.decode([t], pos + i)
            single.append(np.array(ctx.logits()[-1]))
    finally:
        ctx.kv_remove(pos)
    return batch, np.stack(single)


def differing_rows(batch: np.ndarray, single: np.ndarray) -> list[int]:
    """Rows whose bits differ (not a tolerance: 0.0 and -0.0 differ, equal NaNs do not)."""
    return np.flatnonzero((batch.view(np.uint32) != single.view(np.uint32)).any(axis=1)).tolist()
