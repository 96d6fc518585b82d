"""The planner: which skip set, which draft length, and whether to speculate at all.

Pure NumPy over a cost model (from a device profile) and per-sublayer acceptance
estimates. Tokens per second of a speculative plan (KnapSpec's objective, with the cost
of verification that the papers leave out):

    E[tokens per cycle] / (d * c_draft(S, ctx) + V(d + 1, ctx))

with E = (1 - a^(d+1)) / (1 - a) for acceptance rate a (i.i.d. drafts; the bonus token
included). Plain decoding makes 1 / t(1); lookup drafting costs only V(d + 1).

Choosing S is a 0/1 knapsack over the 2L sublayers (attention and MLP are separate
items): each item i saves c_i milliseconds of a draft step and multiplies acceptance by
m_i (its single-skip match rate), so log a(S) = sum of log m_i. The DP finds, for every
amount of saving, the set with the highest predicted acceptance; then every (saving, d)
pair is scored and the best kept.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .skipset import SkipSet


@dataclass(frozen=True)
class CostModel:
    """Costs in milliseconds at one context length."""

    t1: float               # single-token decode (plain step)
    verify: np.ndarray      # [k_max] V(k), k = 1..k_max
    attn: np.ndarray        # [L] cost of each layer's attention
    mlp: np.ndarray         # [L] cost of each layer's MLP
    cycle_overhead: float = 0.0  # per-cycle extra (Python, rebuilds)

    @property
    def n_layer(self) -> int:
        return len(self.attn)

    def V(self, k: int) -> float:
        return float(self.verify[k - 1])

    def draft_step_ms(self, skip: SkipSet) -> float:
        """One draft step under ``skip``: t(1) minus the skipped sublayers' costs (at least 5% of t(1))."""
        saved = float(self.attn[list(skip.attn)].sum() + self.mlp[list(skip.mlp)].sum())
        return max(self.t1 - saved, 0.05 * self.t1)


@dataclass(frozen=True)
class Plan:
    mode: str                   # plain | lookup | layerskip
    skip: SkipSet | None        # the skipped sublayers (layerskip)
    draft_len: int              # d: drafts per cycle (0 for plain)
    alpha: float                # predicted acceptance rate
    tok_per_ms: float           # predicted throughput
    speedup: float              # predicted, against plain decoding

    def describe(self) -> str:
        if self.mode == "plain":
            return "plain"
        what = f"{self.mode} d={self.draft_len} α={self.alpha:.2f}"
        if self.skip is not None:
            what += f" skip {self.skip.spec()}"
        return f"{what} (predicted {self.speedup:.2f}x)"


def expected_tokens(alpha: np.ndarray | float, d: np.ndarray | int) -> np.ndarray:
    """E[tokens per cycle] with d drafts accepted i.i.d. with probability alpha, bonus token included."""
    a = np.clip(np.asarray(alpha, float), 0.0, 1.0 - 1e-12)
    return (1.0 - a ** (np.asarray(d) + 1)) / (1.0 - a)


def predicted_speedup(cost: CostModel, alpha: float, draft_step_ms: float, d_max: int = 8) -> float:
    """The best predicted speedup over plain decoding of drafting d = 1..d_max tokens per cycle
    at ``draft_step_ms`` each with i.i.d. acceptance ``alpha`` (lookup: a step costs 0)."""
    ds = np.arange(1, max(1, min(d_max, len(cost.verify) - 1)) + 1)
    rate = expected_tokens(alpha, ds) / (ds * draft_step_ms + cost.verify[ds] + cost.cycle_overhead)
    return float(rate.max() * cost.t1)


def knapsack(saving: np.ndarray, logm: np.ndarray, n_units: int) -> tuple[np.ndarray, np.ndarray]:
    """Best total log-acceptance for every saving level, and the choice table to recover the sets.

    saving: int ``[n]`` item savings in cost units (>= 0); logm: ``[n]`` item values (<= 0).
    Returns ``best`` ``[n_units + 1]`` (best[j]: the highest sum of logm over sets whose
    savings add up to exactly j units; -inf when none does) and ``take`` bool ``[n, n_units + 1]``.
    One vectorised update per item: O(n * n_units).
    """
    n = len(saving)
    best = np.full(n_units + 1, -np.inf)
    best[0] = 0.0
    take = np.zeros((n, n_units + 1), dtype=bool)
    for i in range(n):
        s = int(saving[i])
        if s > n_units:
            continue
        cand = np.full(n_units + 1, -np.inf)
        cand[s:] = best[:n_units + 1 - s] + logm[i]
        better = cand > best
        take[i] = better
        best = np.where(better, cand, best)
    return best, take


def recover(take: np.ndarray, saving: np.ndarray, j: int) -> list[int]:
    """The items chosen for saving level ``j`` (backtracking the choice table)."""
    chosen = []
    for i in range(take.shape[0] - 1, -1, -1):
        if take[i, j]:
            chosen.append(i)
            j -= int(saving[i])
    assert j == 0, "inconsistent choice table"
    return sorted(chosen)


def plan_layerskip(cost: CostModel, match_attn: np.ndarray, match_mlp: np.ndarray, *, d_max: int = 8,
                   units: int = 400, protect: tuple[int, ...] | None = None) -> Plan | None:
    """The best layer-skip plan, or None if no set helps.

    match_attn / match_mlp: ``[L]`` predicted acceptance with that one sublayer skipped
    (1.0 = harmless). protect: layers never skipped (default: the first and the last).
    """
    L = cost.n_layer
    protect = (0, L - 1) if protect is None else protect
    items_cost = np.concatenate([cost.attn, cost.mlp])
    items_m = np.clip(np.concatenate([match_attn, match_mlp]), 1e-9, 1.0)
    allowed = np.ones(2 * L, bool)
    for il in protect:
        allowed[il] = allowed[L + il] = False
    idx = np.flatnonzero(allowed & (items_cost > 0))
    if idx.size == 0:
        return None
    unit = max(items_cost[idx].sum(), 1e-9) / units
    saving = np.maximum(np.rint(items_cost[idx] / unit).astype(int), 0)
    best, take = knapsack(saving, np.log(items_m[idx]), int(saving.sum()))
    feasible = np.flatnonzero(np.isfinite(best) & (np.arange(len(best)) > 0))
    if feasible.size == 0:
        return None
    alpha = np.exp(best[feasible])                       # [J]
    c_draft = np.maximum(cost.t1 - feasible * unit, 1e-6)  # [J]
    ds = np.arange(1, min(d_max, len(cost.verify) - 1) + 1)
    tok = expected_tokens(alpha[:, None], ds[None, :])
    time_ms = ds[None, :] * c_draft[:, None] + cost.verify[ds][None, :] + cost.cycle_overhead
    rate = tok / time_ms                                   # [J, D]
    j, k = np.unravel_index(int(np.argmax(rate)), rate.shape)
    chosen = idx[recover(take, saving, int(feasible[j]))]
    skip = SkipSet.of([i for i in chosen if i < L], [i - L for i in chosen if i >= L])
    r = float(rate[j, k])
    return Plan("layerskip", skip, int(ds[k]), float(alpha[j]), r, r * cost.t1)


def plan_lookup(cost: CostModel, alpha: float, *, d_max: int = 8) -> Plan:
    """Lookup drafting at acceptance ``alpha``: drafts cost nothing, verification costs V(d+1)."""
    ds = np.arange(1, min(d_max, len(cost.verify) - 1) + 1)
    rate = expected_tokens(alpha, ds) / (cost.verify[ds] + cost.cycle_overhead)
    k = int(np.argmax(rate))
    return Plan("lookup", None, int(ds[k]), alpha, float(rate[k]), float(rate[k]) * cost.t1)


def plain_plan(cost: CostModel) -> Plan:
    return Plan("plain", None, 0, 0.0, 1.0 / cost.t1, 1.0)


def choose(cost: CostModel, *, layerskip: Plan | None, lookup: Plan | None, margin: float = 1.03) -> Plan:
    """The best of plain, lookup and layer skip. Speculation must beat plain by ``margin``
    (prediction error and noise): when unsure, decode plainly."""
    best = plain_plan(cost)
    for p in (layerskip, lookup):
        if p is not None and p.speedup >= margin and p.speedup > best.speedup:
            best = p
    return best


def conservative_cpu_cost(n_layer: int) -> CostModel:
    """A stand-in cost model when the device has not been profiled: a compute-bound CPU.

    Relative units (t(1) = 1). V(k) follows the 2-core CPU measured in FINDINGS §1
    (smollm2-135m Q4_1, with all logits), where layer skip can never pay; lookup then
    pays only when it is accepted often. Assuming this elsewhere costs speed, not correctness.
    """
    verify = np.array([1.0, 1.7, 2.2, 2.6, 3.0, 3.4, 3.8, 4.2, 4.6])
    per = 0.9 / (2 * n_layer)
    return CostModel(t1=1.0, verify=verify, attn=np.full(n_layer, per), mlp=np.full(n_layer, per))
