"""The drafter interface: ``propose`` a few tokens, ``observe`` how many were accepted."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ..sampling import SamplerParams


@dataclass(frozen=True)
class DraftRequest:
    """What a drafter may look at. The pending token ``history[-1]`` is not in the KV cache yet."""

    history: np.ndarray          # int32 [n]: prompt + emitted tokens; history[-1] is the pending token
    pos: int                     # KV position the pending token will take (== n - 1)
    max_tokens: int              # propose at most this many (>= 1)
    sampler: SamplerParams       # greedy drafts argmax; sampled drafts draw from the sampler's q
    rng: np.random.Generator     # the generation's generator (seeded runs stay reproducible)


@dataclass(frozen=True)
class Draft:
    """Proposed tokens, and for sampled drafts the distribution each was drawn from."""

    tokens: list[int]
    probs: np.ndarray | None = None  # [d, V] draft distributions q; None: a deterministic proposal
    source: str = ""                 # the drafter's name, for stats


class Drafter(Protocol):
    name: str

    def propose(self, req: DraftRequest) -> Draft | None:
        """Up to ``req.max_tokens`` tokens to follow the pending token, or None to decode plainly.

        A drafter that touches the KV cache must leave it as it found it.
        """
        ...

    def observe(self, n_drafted: int, n_accepted: int) -> None:
        """Learn from the verification of the last draft (``n_accepted`` excludes the bonus token)."""
        ...


class NoDrafter:
    """Plain decoding through the same loop: never drafts."""

    name = "plain"

    def propose(self, req: DraftRequest) -> Draft | None:
        return None

    def observe(self, n_drafted: int, n_accepted: int) -> None:
        pass
