"""``--mode auto``: ask the planner, every cycle, which drafter pays on this device right now.

Each cycle it scores the options with the device's cost model at the current context
length (attention cost grows with context, so the answer can change as it grows):

- lookup, when the history has an n-gram match: drafts cost nothing, verification V(d+1);
- layer skip, with the planned skip set: d draft steps plus V(d+1);
- plain decoding: t(1).

Acceptance rates come from online estimates (geometric maximum likelihood: accepted /
(accepted + rejections), with a prior and a slow decay): one for layer skip, and one per
matched n-gram length for lookup, since a continuation found after a 4-token match is far
more reliable than one after a 2-token match. The priors rise with n (LOOKUP_PRIORS).

Lookup is scored even in cycles that do not use it. Its proposal costs microseconds, so
every cycle computes it; when the cycle runs something else, the proposal is kept as a
*shadow* and checked against the tokens the full model goes on to emit (an exact
counterfactual: a greedy verification would have accepted precisely that matching
prefix). So lookup's estimates keep learning without paying for a single losing draft,
and auto starts to use it as soon as the text turns into a copy or an edit of earlier
text. A cycle that does draft d lookup tokens keeps the *whole* proposal (up to n_max
tokens) as its shadow too, and learns from it instead of from the d it drafted: otherwise
positions past d would never be observed, their prior would stand forever, and a copy
would go on drafting one token per cycle while twelve were there to take.

A drafter is used only when its predicted speedup beats plain decoding by a margin;
when nothing does, the cycle is a plain step. So on a device where verifying k tokens
costs almost k steps, layer skip is never used, and lookup only where it is accepted.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..planner import CostModel
from .base import Draft, DraftRequest
from .layerskip import LayerSkipDrafter
from .lookup import longest_match

# prior acceptance by matched n-gram length (longer matches: text being copied)
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


def best_draft_len(cost: CostModel, tracker: AcceptanceTracker, draft_step_ms: float,
                   d_max: int) -> tuple[int, float]:
    """The d in 1..d_max that maximises predicted tokens/ms; returns (d, speedup over plain)."""
    ds = np.arange(1, max(1, min(d_max, len(cost.verify) - 1, len(tracker.reached))) + 1)
    rate = tracker.expected_tokens(ds) / (ds * draft_step_ms + cost.verify[ds] + cost.cycle_overhead)
    k = int(np.argmax(rate))
    return int(ds[k]), float(rate[k] * cost.t1)


def shadow_accepted(proposal: np.ndarray, emitted: np.ndarray) -> int | None:
    """How many of ``proposal``'s tokens a greedy verification would have accepted, given the
    tokens really ``emitted`` after it; None while the emitted tokens do not decide it yet.

    >>> shadow_accepted(np.array([5, 6, 7]), np.array([5, 9]))
    1
    >>> shadow_accepted(np.array([5, 6, 7]), np.array([5, 6])) is None
    True
    """
    m = min(len(proposal), len(emitted))
    miss = np.flatnonzero(proposal[:m] != emitted[:m])
    if miss.size:
        return int(miss[0])
    return m if m == len(proposal) else None


class AutoDrafter:
    """Chooses per cycle between lookup, layer skip (if planned) and plain decoding."""

    name = "auto"

    def __init__(self, cost_at: Callable[[int], CostModel], *, layerskip: LayerSkipDrafter | None = None,
                 layerskip_alpha: float = 0.5, margin: float = 1.03,
                 n_min: int = 2, n_max: int = 12, d_max: int = 8) -> None:
        self.cost_at = cost_at
        self.layerskip = layerskip
        self.margin = margin
        self.n_min, self.n_max, self.d_max = n_min, n_max, d_max
        self.trackers = {f"lookup{n}": AcceptanceTracker(LOOKUP_PRIORS.get(n, 0.85)) for n in range(n_min, n_max + 1)}
        self.trackers["layerskip"] = AcceptanceTracker(layerskip_alpha)
        self.cycles = {"lookup": 0, "layerskip": 0, "plain": 0}  # which choice each cycle made
        self._last: str | None = None  # the tracker of the last proposal
        self._shadows: list[tuple[int, np.ndarray, str]] = []  # unused lookups: (history length, tokens, tracker)
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
        self._score_shadows(req.history)
        cont, n = longest_match(req.history, self.n_min, self.n_max, min(self.d_max, req.max_tokens))
        if cont.size:
            d, speedup = best_draft_len(cost, self.trackers[f"lookup{n}"], 0.0, int(cont.size))
            if speedup > best[0]:
                best = (speedup, "lookup", d)
        if self.layerskip is not None:
            step = cost.draft_step_ms(self.layerskip.skip)
            d, speedup = best_draft_len(cost, self.trackers["layerskip"], step,
                                        min(self.d_max, req.max_tokens))
            if speedup > best[0]:
                best = (speedup, "layerskip", d)
        _, choice, d = best
        self.cycles[choice] += 1
        # lookup learns from its shadow (the whole proposal), also when it drafts: see above
        self._last = "layerskip" if choice == "layerskip" else None
        if cont.size:
            self._shadows.append((len(req.history), cont, f"lookup{n}"))
        if choice == "lookup":
            return Draft(tokens=[int(t) for t in cont[:d]], probs=None, source="lookup")
        if choice == "layerskip":
            assert self.layerskip is not None
            self.layerskip.max_tokens = d
            return self.layerskip.propose(req)
        return None

    def _score_shadows(self, history: np.ndarray) -> None:
        """Score the pending unused lookup proposals against the tokens emitted since."""
        pending = []
        for start, tokens, key in self._shadows:
            n_accepted = shadow_accepted(tokens, history[start:])
            if n_accepted is None:
                pending.append((start, tokens, key))  # all emitted so far matched: not decided yet
            else:
                self.trackers[key].observe(len(tokens), n_accepted)
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
