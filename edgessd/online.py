"""Out of domain: search the known skip sets on what the model just generated, and learn.

When a prompt is farther from every anchor than the calibrated threshold, edgessd does
not force the nearest domain's set. The planner drafts with lookup or decodes plainly,
and afterwards (where layer skip can pay on this device) every domain's best set is
scored by block matchness over the generated tokens (SWIFT-style: the draft's argmax
under the mask, teacher-forced from the full model). If one beats the nearest domain's
set clearly, the prompt's feature becomes a new anchor with that set, persisted at once:
the next similar prompt routes to it. No published method learns its user's domains.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ._capi import Context
from .acceptance import block_matchness
from .domains import DomainIndex, DomainSet

MARGIN = 0.05  # matchness a found set must gain over the nearest domain's to be learned


@dataclass(frozen=True)
class SearchResult:
    best: DomainSet             # the best-scoring known set (its alpha: the measured matchness)
    nearest_score: float        # matchness of the nearest domain's set
    best_score: float
    scores: dict[str, float]    # per candidate spec


def candidate_sets(index: DomainIndex) -> list[DomainSet]:
    """Each distinct set the index knows (every domain's, learned ones included)."""
    seen, out = set(), []
    for sets in index.domains.values():
        for s in sets:
            if s.skip not in seen:
                seen.add(s.skip)
                out.append(s)
    return out


def search(ctx: Context, tokens: Sequence[int], start: int, index: DomainIndex, nearest: str,
           block: int = 4) -> SearchResult:
    """Score every known set over ``tokens[start:]`` (prompt + generated; ``start``: first
    generated). Clears the context's KV cache."""
    toks = list(tokens[:-1])
    ref = np.asarray(tokens[1:])
    n_layer = ctx.model.n_layer
    scores: dict[str, float] = {}
    best, best_score = None, -1.0
    for cand in candidate_sets(index):
        score = block_matchness(ctx, toks, cand.skip.flags(n_layer), max(start - 1, 0), ref, block)
        scores[cand.skip.spec()] = score
        if score > best_score:
            best, best_score = cand, score
    assert best is not None, "an index has at least one set"
    near = index.best_set(nearest)
    return SearchResult(DomainSet(best.skip, best.mean_accepted, best_score, best.draft_len),
                        scores.get(near.skip.spec(), 0.0), best_score, scores)


def worth_learning(result: SearchResult) -> bool:
    return result.best_score >= result.nearest_score + MARGIN
