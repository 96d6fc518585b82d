"""``--mode auto``: ask the planner, every cycle, which drafter pays on this device right now.

Each cycle it scores the options with the device's cost model at the current context
length (attention cost grows with context, so the answer can change as it grows):

- lookup, when the history has an n-gram match: drafts cost nothing, verification V(d+1);
- layer skip, with the planned skip set: d draft steps plus V(d+1);
- plain decoding: t(1).

Acceptance rates come from online estimates (counts with a prior and a slow decay). Layer
skip has one per draft position. Lookup has one per *copy length*: the chance that the
copied text goes on for one more token, given that it has followed its source for r tokens
so far. Draft token i (from 0) after an n-token match has r = n + i, so the 3rd token after
a 2-token match and the 1st after a 4-token match share one estimate, and what a copy teaches
at any length is used at every other (LOOKUP_PRIORS: longer copies are likelier to go on).

Lookup is scored even in cycles that do not use it. Its proposal costs microseconds, so
every cycle computes it and keeps the whole proposal (up to d_max tokens) as a *shadow*,
checked token by token against what the full model goes on to emit: an exact
counterfactual, since a greedy verification accepts precisely the matching prefix. So
lookup keeps learning without paying for a single losing draft, also past the d tokens a
cycle drafted (else a copy would go on drafting one token per cycle while twelve were there
to take), and auto starts to use it as soon as the text turns into a copy or an edit of
earlier text. Each emitted token that matches a shadow counts at once, not when the shadow
ends, so a long copy is recognised while it is still under way.

A drafter is used only when its predicted speedup beats plain decoding by a margin (6%:
the estimates are learned online from few tokens, and a losing lookup draft costs most of
a step on a CPU); when nothing does, the cycle is a plain step. So on a device where
verifying k tokens costs almost k steps, layer skip is never used, and lookup only where
it is accepted.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..planner import CostModel
from .base import Draft, DraftRequest
from .layerskip import LayerSkipDrafter
from .lookup import longest_match

# prior chance that a copy goes on for one more token, by how long it has run (r); 0.85 beyond 8
LOOKUP_PRIORS = {2: 0.35, 3: 0.45, 4: 0.55, 5: 0.6, 6: 0.65, 7: 0.7, 8: 0.8}


class AcceptanceTracker:
    """Online acceptance estimate of one drafter, position by position.

    ``rate[i]`` estimates P(draft i+1 accepted | drafts 1..i accepted): the drafts of one
    cycle are not independent (once a copy is under way, it tends to go on), so a single
    rate would under-predict long drafts exactly where they pay. Counts decay so the
    estimate follows the text; a prior stands in where there is no data yet.
    """

    def __init__(self, prior: float, d_max: int = 16, weight: float = 4.0, decay: float = 0.95) -> None:
        self.prior, self.weight, self.decay = prior, weight, decay
        self.reached = np.zeros(d_max)   # decayed count of drafts that reached position i
        self.accepted = np.zeros(d_max)  # ... and were accepted there

    @property
    def rate(self) -> np.ndarray:
        """[d_max] conditional acceptance at each draft position."""
        return (self.accepted + self.prior * self.weight) / (self.reached + self.weight)

    @property
    def alpha(self) -> float:
        """One per-token rate for reports: geometric maximum likelihood over all positions."""
        acc = self.accepted.sum() + self.prior * self.weight
        rej = (self.reached - self.accepted).sum() + (1 - self.prior) * self.weight
        return float(acc / (acc + rej))

    def expected_tokens(self, ds: np.ndarray) -> np.ndarray:
        """E[tokens per cycle] for each draft length in ``ds`` (the bonus token included)."""
        survive = np.concatenate(([1.0], np.cumprod(self.rate)))
        return np.cumsum(survive)[np.asarray(ds)]

    def observe(self, n_drafted: int, n_accepted: int) -> None:
        self.reached *= self.decay
        self.accepted *= self.decay
        n_drafted = min(n_drafted, len(self.reached))
        n_accepted = min(n_accepted, n_drafted)
        self.reached[:min(n_accepted + 1, n_drafted)] += 1
        self.accepted[:n_accepted] += 1


class CopyTracker:
    """Lookup's online acceptance, by how long the copy has run.

    ``rate[r]`` estimates P(the next token follows the source | the last r tokens did).
    Counts decay once per cycle so the estimate follows the text; the prior stands in where
    there is no data yet, with the weight of ``weight`` observations.
    """

    def __init__(self, r_max: int = 24, weight: float = 2.0, decay: float = 0.97) -> None:
        self.r_max, self.weight, self.decay = r_max, weight, decay
        self.prior = np.array([LOOKUP_PRIORS.get(r, 0.85 if r > 8 else 0.3) for r in range(r_max + 1)])
        self.reached = np.zeros(r_max + 1)   # decayed count of tokens proposed at copy length r
        self.accepted = np.zeros(r_max + 1)  # ... that the full model emitted

    @property
    def rate(self) -> np.ndarray:
        """[r_max + 1] P(copy goes on | it has run r tokens)."""
        return (self.accepted + self.prior * self.weight) / (self.reached + self.weight)

    def rates(self, n: int, d: int) -> np.ndarray:
        """[d] conditional acceptance of the drafts 1..d that follow an n-token match."""
        return self.rate[np.minimum(n + np.arange(d), self.r_max)]

    def expected_tokens(self, n: int, ds: np.ndarray) -> np.ndarray:
        """E[tokens per cycle] for each draft length in ``ds`` after an n-token match (bonus included)."""
        ds = np.asarray(ds)
        survive = np.concatenate(([1.0], np.cumprod(self.rates(n, int(ds.max())))))
        return np.cumsum(survive)[ds]

    def tick(self) -> None:
        """One cycle has passed: older evidence weighs less."""
        self.reached *= self.decay
        self.accepted *= self.decay

    def credit(self, n: int, lo: int, hi: int, accepted: bool) -> None:
        """Positions lo..hi-1 of a proposal after an n-token match were reached (and accepted or not)."""
        r = np.minimum(n + np.arange(lo, hi), self.r_max)
        np.add.at(self.reached, r, 1.0)
        if accepted:
            np.add.at(self.accepted, r, 1.0)


def best_draft_len(cost: CostModel, expected_tokens: Callable[[np.ndarray], np.ndarray],
                   draft_step_ms: float, d_max: int) -> tuple[int, float]:
    """The d in 1..d_max that maximises predicted tokens/ms; returns (d, speedup over plain).

    ``expected_tokens(ds)``: E[tokens per cycle] for each draft length in ``ds``.
    """
    ds = np.arange(1, max(1, min(d_max, len(cost.verify) - 1)) + 1)
    rate = expected_tokens(ds) / (ds * draft_step_ms + cost.verify[ds] + cost.cycle_overhead)
    k = int(np.argmax(rate))
    return int(ds[k]), float(rate[k] * cost.t1)


def copied_prefix(proposal: np.ndarray, emitted: np.ndarray) -> tuple[int, bool]:
    """How many of ``proposal``'s tokens the ``emitted`` tokens match so far, and whether that
    is final (a mismatch, or the whole proposal matched): what a greedy verification would
    have accepted.

    >>> copied_prefix(np.array([5, 6, 7]), np.array([5, 9]))
    (1, True)
    >>> copied_prefix(np.array([5, 6, 7]), np.array([5, 6]))
    (2, False)
    """
    m = min(len(proposal), len(emitted))
    miss = np.flatnonzero(proposal[:m] != emitted[:m])
    if miss.size:
        return int(miss[0]), True
    return m, m == len(proposal)


@dataclass
class Shadow:
    """A lookup proposal being checked against the emitted tokens."""

    start: int          # history length when proposed: tokens[0] would have followed history[start - 1]
    tokens: np.ndarray  # the whole proposal
    n: int              # the matched n-gram's length
    credited: int = 0   # leading positions already counted as accepted


class AutoDrafter:
    """Chooses per cycle between lookup, layer skip (if planned) and plain decoding."""

    name = "auto"

    def __init__(self, cost_at: Callable[[int], CostModel], *, layerskip: LayerSkipDrafter | None = None,
                 layerskip_alpha: float = 0.5, margin: float = 1.06,
                 n_min: int = 2, n_max: int = 12, d_max: int = 16) -> None:
        self.cost_at = cost_at
        self.layerskip = layerskip
        self.margin = margin
        self.n_min, self.n_max, self.d_max = n_min, n_max, d_max
        self.copy = CopyTracker()
        self.trackers = {"layerskip": AcceptanceTracker(layerskip_alpha)}
        self.cycles = {"lookup": 0, "layerskip": 0, "plain": 0}  # which choice each cycle made
        self._last: str | None = None  # "layerskip" when the last cycle drafted with it
        self._shadows: list[Shadow] = []  # lookup proposals not yet decided by the emitted tokens
        self._cost_key: int | None = None
        self._cost: CostModel | None = None
        if layerskip is not None:
            layerskip.adaptive = False  # the planner chooses d; the threshold does not cut drafts

    def _cost_for(self, pos: int) -> CostModel:
        key = pos // 128  # re-plan as the context grows, in steps of 128 tokens
        if key != self._cost_key:
            self._cost_key, self._cost = key, self.cost_at(pos)
        assert self._cost is not None
        return self._cost

    def propose(self, req: DraftRequest) -> Draft | None:
        cost = self._cost_for(req.pos)
        best: tuple[float, str, int] = (self.margin, "plain", 0)
        self.copy.tick()
        self._score_shadows(req.history)
        cont, n = longest_match(req.history, self.n_min, self.n_max, min(self.d_max, req.max_tokens))
        if cont.size:
            d, speedup = best_draft_len(cost, lambda ds: self.copy.expected_tokens(n, ds), 0.0, int(cont.size))
            if speedup > best[0]:
                best = (speedup, "lookup", d)
        if self.layerskip is not None:
            step = cost.draft_step_ms(self.layerskip.skip)
            d, speedup = best_draft_len(cost, self.trackers["layerskip"].expected_tokens, step,
                                        min(self.d_max, req.max_tokens, len(self.trackers["layerskip"].reached)))
            if speedup > best[0]:
                best = (speedup, "layerskip", d)
        _, choice, d = best
        self.cycles[choice] += 1
        # lookup learns from its shadow (the whole proposal), also when it drafts: see above
        self._last = "layerskip" if choice == "layerskip" else None
        if cont.size:
            self._shadows.append(Shadow(len(req.history), cont, n))
        if choice == "lookup":
            return Draft(tokens=[int(t) for t in cont[:d]], probs=None, source="lookup")
        if choice == "layerskip":
            assert self.layerskip is not None
            self.layerskip.max_tokens = d
            return self.layerskip.propose(req)
        return None

    def _score_shadows(self, history: np.ndarray) -> None:
        """Count the lookup proposals' tokens that the emitted tokens have decided since last cycle."""
        pending = []
        for sh in self._shadows:
            n_copied, final = copied_prefix(sh.tokens, history[sh.start:])
            self.copy.credit(sh.n, sh.credited, n_copied, accepted=True)
            if not final:
                sh.credited = n_copied
                pending.append(sh)
            elif n_copied < len(sh.tokens):
                self.copy.credit(sh.n, n_copied, n_copied + 1, accepted=False)
        self._shadows = pending

    def observe(self, n_drafted: int, n_accepted: int) -> None:
        if self._last is None:
            return
        self.trackers[self._last].observe(n_drafted, n_accepted)
        if self._last == "layerskip" and self.layerskip is not None:
            self.layerskip.observe(n_drafted, n_accepted)

    def summary(self) -> str:
        """What auto did: 'plain', 'lookup', 'layerskip', or a mix such as 'lookup+plain'."""
        used = [k for k in ("layerskip", "lookup") if self.cycles[k]]
        return "+".join(used) if used else "plain"
