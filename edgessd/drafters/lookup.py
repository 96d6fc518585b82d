"""Prompt/n-gram lookup drafting: copy what followed the last time the recent tokens appeared.

It costs microseconds, which is what can pay on a CPU where verifying k tokens costs
almost k single steps (FINDINGS §1): it needs no draft forward pass at all.
"""
from __future__ import annotations

import numpy as np

from .base import Draft, DraftRequest


def longest_match(history: np.ndarray, n_min: int, n_max: int, k: int) -> tuple[np.ndarray, int]:
    """Tokens that followed the most recent earlier occurrence of the history's last n-gram, and n.

    Tries n = n_max down to n_min and returns up to ``k`` tokens for the longest n-gram
    that occurs earlier, with that n; ``(empty, 0)`` if none does.

    Example: history ``[1, 2, 3, 9, 1, 2, 3]``, n_max=3, k=2: the suffix ``[1, 2, 3]``
    occurred at index 0, followed by ``[9, 1]`` -> returns ``([9, 1], 3)``.
    """
    h = np.asarray(history)
    n_hist = len(h)
    # earlier occurrences of the last token (each is followed by at least one token) ...
    cand = np.flatnonzero(h[:-1] == h[-1])
    if cand.size == 0:
        return h[:0].copy(), 0
    # ... extended backwards while the tokens keep matching the history's suffix, up to n_max
    run = np.ones(cand.size, dtype=np.int64)
    alive = np.ones(cand.size, dtype=bool)
    for j in range(1, min(n_max, n_hist - 1)):
        idx = cand - j
        alive &= (idx >= 0) & (h[np.maximum(idx, 0)] == h[n_hist - 1 - j])
        if not alive.any():
            break
        run += alive
    best = int(run.max())
    if best < n_min:
        return h[:0].copy(), 0
    start = int(cand[np.flatnonzero(run == best)[-1]]) + 1  # the most recent of the longest
    return h[start:min(start + k, n_hist)].copy(), best


def find_continuation(history: np.ndarray, n_min: int, n_max: int, k: int) -> np.ndarray:
    """:func:`longest_match` without the match length."""
    return longest_match(history, n_min, n_max, k)[0]


class LookupDrafter:
    """Proposes the continuation of the last matching n-gram in prompt + output.

    Its proposals are deterministic, so in sampled generation they are verified as point
    masses (see sampling.speculative_accept).
    """

    name = "lookup"

    def __init__(self, *, n_min: int = 2, n_max: int = 4, max_tokens: int = 4) -> None:
        assert 1 <= n_min <= n_max, "need 1 <= n_min <= n_max"
        self.n_min, self.n_max, self.max_tokens = n_min, n_max, max_tokens
        self.n_drafted = 0
        self.n_accepted = 0

    def propose(self, req: DraftRequest) -> Draft | None:
        cont = find_continuation(req.history, self.n_min, self.n_max, min(self.max_tokens, req.max_tokens))
        if cont.size == 0:
            return None
        return Draft(tokens=[int(t) for t in cont], probs=None, source=self.name)

    def observe(self, n_drafted: int, n_accepted: int) -> None:
        self.n_drafted += n_drafted
        self.n_accepted += n_accepted
