"""Token log-probabilities from the full model's rows.

Each emitted token's log-probability is the log-softmax of the full model's logits at its
position, before temperature, top-k/top-p and any constraint (llama-server's default). A
speculative cycle verifies its drafts with exactly those rows, so the numbers do not depend
on the mode that ran (bit for bit where the batch kernels are exact).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TokenLogprob:
    """One emitted token, its log-probability, and the ``top`` most likely tokens at its position."""

    token: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()  # (token, logprob), most likely first


def row_logprobs(logits: np.ndarray, tokens: Sequence[int], n_top: int) -> list[TokenLogprob]:
    """logits: ``[k, V]`` rows; tokens: ``[k]``, the token emitted at each row. n_top: 0-20.

    >>> [round(x.logprob, 3) for x in row_logprobs(np.array([[0.0, 0.0], [0.0, np.log(3)]]), [0, 1], 1)]
    [-0.693, -0.288]
    """
    assert len(tokens) == logits.shape[0], f"{len(tokens)} tokens for {logits.shape[0]} rows"
    x = np.asarray(logits, dtype=np.float64)
    top_x = x.max(axis=1, keepdims=True)
    lse = top_x[:, 0] + np.log(np.exp(x - top_x).sum(axis=1))
    out = []
    for i, tok in enumerate(tokens):
        top: tuple[tuple[int, float], ...] = ()
        if n_top > 0:
            cand = np.argpartition(-x[i], n_top - 1)[:n_top]
            cand = cand[np.lexsort((cand, -x[i, cand]))]  # by logit, then by id: deterministic
            top = tuple((int(t), float(x[i, t] - lse[i])) for t in cand)
        out.append(TokenLogprob(int(tok), float(x[i, int(tok)] - lse[i]), top))
    return out
