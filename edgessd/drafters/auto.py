"""``--mode auto``: ask the planner, every cycle, which drafter pays on this device right now.

Each cycle it scores the options with the device's cost model at the current context
length (attention cost grows with context, so the answer can change as it grows):

- lookup, when the history has an n-gram match: drafts cost nothing, verification V(d+1);
- layer skip, with the planned skip set: d draft steps plus V(d+1);
- plain decoding: t(1).

Acceptance rates come from online estimates (geometric maximum likelihood: accepted /
(accepted + rejections), with a prior and a slow decay): one for layer skip, and one per
matched n-gram length for lookup, since a continuation found after a 4-token match is far
more reliable than one after a 2-token match. The priors rise with n (LOOKUP_PRIORS): on a
CPU where V(2) = 1.7 t(1), only long matches (text being copied or edited) look worth a
try; a few rejections stop it, and acceptances let it draft longer. A drafter is used only
when its predicted speedup beats plain decoding by a margin; when nothing does, the cycle
is a plain step. So on a device where verifying k tokens costs almost k steps, layer skip
is never used, and lookup only where it keeps being accepted.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..planner import CostModel, expected_tokens
from .base import Draft, DraftRequest
from .layerskip import LayerSkipDrafter
from .lookup import longest_match

# prior acceptance by matched n-gram length (longer matches: text being copied)
LOOKUP_PRIORS = {2: 0.35, 3: 0.45, 4: 0.55, 5: 0.6, 6: 0.65, 7: 0.7, 8: 0.8}


class AcceptanceTracker:
    """Online per-token acceptance estimate of one drafter."""

    def __init__(self, prior: float, weight: float = 4.0, decay: float = 0.95) -> None:
        self.accepted = prior * weight   # pseudo-counts from the prior
        self.rejected = (1 - prior) * weight
        self.decay = decay

    @property
    def alpha(self) -> float:
        return self.accepted / max(self.accepted + self.rejected, 1e-9)

    def observe(self, n_drafted: int, n_accepted: int) -> None:
        self.accepted = self.accepted * self.decay + n_accepted
        self.rejected = self.rejected * self.decay + (1 if n_accepted < n_drafted else 0)


def best_draft_len(cost: CostModel, alpha: float, draft_step_ms: float, d_max: int) -> tuple[int, float]:
    """The d in 1..d_max that maximises predicted tokens/ms; returns (d, speedup over plain)."""
    ds = np.arange(1, max(1, min(d_max, len(cost.verify) - 1)) + 1)
    rate = expected_tokens(alpha, ds) / (ds * draft_step_ms + cost.verify[ds] + cost.cycle_overhead)
    k = int(np.argmax(rate))
    return int(ds[k]), float(rate[k] * cost.t1)


class AutoDrafter:
    """Chooses per cycle between lookup, layer skip (if planned) and plain decoding."""

    name = "auto"

    def __init__(self, cost_at: Callable[[int], CostModel], *, layerskip: LayerSkipDrafter | None = None,
                 layerskip_alpha: float = 0.5, margin: float = 1.03,
                 n_min: int = 2, n_max: int = 8, d_max: int = 8) -> None:
        self.cost_at = cost_at
        self.layerskip = layerskip
        self.margin = margin
        self.n_min, self.n_max, self.d_max = n_min, n_max, d_max
        self.trackers = {f"lookup{n}": AcceptanceTracker(LOOKUP_PRIORS.get(n, 0.8)) for n in range(n_min, n_max + 1)}
        self.trackers["layerskip"] = AcceptanceTracker(layerskip_alpha)
        self.cycles = {"lookup": 0, "layerskip": 0, "plain": 0}  # which choice each cycle made
        self._last: str | None = None  # the tracker of the last proposal
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
        cont, n = longest_match(req.history, self.n_min, self.n_max, min(self.d_max, req.max_tokens))
        if cont.size:
            d, speedup = best_draft_len(cost, self.trackers[f"lookup{n}"].alpha, 0.0, int(cont.size))
            if speedup > best[0]:
                best = (speedup, "lookup", d)
        if self.layerskip is not None:
            step = cost.draft_step_ms(self.layerskip.skip)
            d, speedup = best_draft_len(cost, self.trackers["layerskip"].alpha, step,
                                        min(self.d_max, req.max_tokens))
            if speedup > best[0]:
                best = (speedup, "layerskip", d)
        _, choice, d = best
        self.cycles[choice] += 1
        self._last = {"plain": None, "lookup": f"lookup{n}", "layerskip": "layerskip"}[choice]
        if choice == "lookup":
            return Draft(tokens=[int(t) for t in cont[:d]], probs=None, source="lookup")
        if choice == "layerskip":
            assert self.layerskip is not None
            self.layerskip.max_tokens = d
            return self.layerskip.propose(req)
        return None

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
