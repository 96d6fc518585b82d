"""Drafting what a constraint forces: free drafts that the verifier cannot reject.

Where a JSON schema or grammar leaves one way to go on (the next key, ``", "``, a closing
bracket), those tokens are proposed as the draft, at no cost. At each of them the masked
row allows that token alone, so greedy and sampled verification both accept it: the
output is unchanged, and a cycle emits them all for one full-model pass. Elsewhere the
wrapped drafter (lookup, layer skip, auto) proposes as it would.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Draft, Drafter, DraftRequest

if TYPE_CHECKING:
    from ..grammar import Matcher


class ForcedDrafter:
    """Proposes the constraint's forced tokens, else asks ``inner``; ``inner`` observes only its own drafts."""

    def __init__(self, inner: Drafter, matcher: Matcher) -> None:
        self.inner = inner
        self.matcher = matcher  # the decode loop's: it has consumed every emitted token
        self.name = inner.name
        self._forced = False
        self.n_forced = 0  # forced tokens proposed

    def propose(self, req: DraftRequest) -> Draft | None:
        forced = self.matcher.forced_tokens(req.max_tokens)
        self._forced = bool(forced)
        if forced:
            self.n_forced += len(forced)
            return Draft(tokens=forced, probs=None, source="forced")
        return self.inner.propose(req)

    def observe(self, n_drafted: int, n_accepted: int) -> None:
        if not self._forced:
            self.inner.observe(n_drafted, n_accepted)
