"""Sampler settings, the target distribution, and the pure accept/reject rules.

Everything here is a pure function of arrays (and an explicit ``numpy.random.Generator``),
tested with literal arrays.

Variable names in :func:`speculative_accept` follow Leviathan et al. (2023), "Fast
Inference from Transformers via Speculative Decoding", Algorithm 1: ``p`` is the target
model's distribution, ``q`` the draft's, ``x`` a drafted token, ``r ~ U(0,1)``; a draft is
kept when ``r < p(x)/q(x)``, and on rejection the next token is drawn from
``norm(max(0, p - q))``. Chen et al. (2023) give the same rule. The output distribution is
exactly ``p``, the distribution plain sampling draws from with the same settings.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .errors import InvalidArgumentError


@dataclass(frozen=True)
class SamplerParams:
    """How the next token is chosen. ``temperature == 0`` means greedy (argmax)."""

    temperature: float = 0.0  # 0: greedy; otherwise logits are divided by it
    top_k: int = 40           # keep the k most likely tokens (0: all)
    top_p: float = 0.95       # then the smallest set whose mass reaches top_p (1.0: all)
    min_p: float = 0.0        # then drop tokens below min_p times the most likely one's probability (0: off)
    seed: int | None = None   # seeds the generator of a sampled generation; None: fresh entropy
    repeat_penalty: float = 1.0  # penalise tokens of the last repeat_last_n (1.0: off), as llama.cpp
    repeat_last_n: int = 64   # how many of the latest tokens (prompt included) are penalised; -1: all, 0: off

    def __post_init__(self) -> None:
        if not (isinstance(self.temperature, (int, float)) and math.isfinite(self.temperature)
                and self.temperature >= 0):
            raise InvalidArgumentError(f"temperature must be a number >= 0, got {self.temperature!r}")
        if not isinstance(self.top_k, int) or self.top_k < 0:
            raise InvalidArgumentError(f"top_k must be an integer >= 0, got {self.top_k!r}")
        if not (isinstance(self.top_p, (int, float)) and 0 < self.top_p <= 1):
            raise InvalidArgumentError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if not (isinstance(self.min_p, (int, float)) and 0 <= self.min_p <= 1):
            raise InvalidArgumentError(f"min_p must be in [0, 1], got {self.min_p!r}")
        if not (isinstance(self.repeat_penalty, (int, float)) and math.isfinite(self.repeat_penalty)
                and self.repeat_penalty > 0):
            raise InvalidArgumentError(f"repeat_penalty must be a number > 0, got {self.repeat_penalty!r}")
        if (not isinstance(self.repeat_last_n, int) or isinstance(self.repeat_last_n, bool)
                or self.repeat_last_n < -1):
            raise InvalidArgumentError(f"repeat_last_n must be an integer >= -1, got {self.repeat_last_n!r}")
        if self.seed is not None and (not isinstance(self.seed, int) or isinstance(self.seed, bool)):
            raise InvalidArgumentError(f"seed must be an integer (negative: random), got {self.seed!r}")
        if self.seed is not None and self.seed < 0:
            object.__setattr__(self, "seed", None)  # llama.cpp's -1: a random seed

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @property
    def penalizes(self) -> bool:
        """Whether the repetition penalty changes any logits."""
        return self.repeat_penalty != 1.0 and self.repeat_last_n != 0


def penalized(logits: np.ndarray, context: Sequence[int], draft: Sequence[int], params: SamplerParams) -> np.ndarray:
    """llama.cpp's repetition penalty on verification rows: row i follows ``context + draft[:i]``.

    logits: ``[k, V]`` with ``k <= len(draft) + 1``; context: every token before the first row's
    prediction (prompt and emitted tokens, the pending one last). Each token among the last
    ``repeat_last_n`` of a row's prefix (-1: all of it) has its logit divided by
    ``repeat_penalty`` if positive, multiplied if not; each token once, however often it occurs.
    So row i is penalised exactly as plain decoding would penalise that position. Returns a
    float32 copy (the input when the penalty is off).

    >>> penalized(np.array([[2.0, -1.0, 3.0]]), [0, 1], [], SamplerParams(repeat_penalty=2.0)).tolist()
    [[1.0, -2.0, 3.0]]
    """
    if not params.penalizes:
        return logits
    out = np.array(logits, dtype=np.float32)
    n = params.repeat_last_n
    prefix = [int(t) for t in (context if n < 0 else context[max(0, len(context) - n):])]
    for i, row in enumerate(out):
        window = prefix if n < 0 else prefix[max(0, len(prefix) - n):]
        ids = np.unique(np.asarray(window, dtype=np.int64))
        ids = ids[(ids >= 0) & (ids < row.shape[0])]
        vals = row[ids]
        row[ids] = np.where(vals > 0, vals / params.repeat_penalty, vals * params.repeat_penalty)
        if i < len(draft):
            prefix.append(int(draft[i]))
    return out


def target_probs(logits: np.ndarray, params: SamplerParams) -> np.ndarray:
    """The distribution sampling draws from: temperature, then top-k, top-p and min-p, renormalised.

    The repetition penalty is not applied here: it depends on the tokens before each row, so
    callers apply :func:`penalized` first.

    logits: ``[V]`` or ``[k, V]``. Returns float64 of the same shape; each row sums to 1.
    Ties at the top-k boundary are broken by token id (lower id kept), so the set is deterministic.
    """
    x = np.atleast_2d(np.asarray(logits, dtype=np.float64))
    out = np.zeros_like(x)
    for row, dst in zip(x, out):
        dst[:] = _row_probs(row, params)
    return out.reshape(np.shape(logits))


def _row_probs(logits: np.ndarray, params: SamplerParams) -> np.ndarray:
    v = logits.shape[0]
    k = params.top_k if 0 < params.top_k < v else v
    if k < v:
        cand = np.argpartition(-logits, k - 1)[:k]
    else:
        cand = np.arange(v)
    # sort candidates by logit descending, then id ascending (stable, deterministic ties)
    order = np.lexsort((cand, -logits[cand]))
    cand = cand[order]
    z = logits[cand] / params.temperature
    z = np.exp(z - z[0])
    p = z / z.sum()
    if params.top_p < 1.0:
        keep = int(np.searchsorted(np.cumsum(p), params.top_p) + 1)
        cand, p = cand[:keep], p[:keep] / p[:keep].sum()
    if params.min_p > 0.0:
        keep = int(np.count_nonzero(p >= params.min_p * p[0]))  # p is sorted: a prefix, never empty
        cand, p = cand[:keep], p[:keep] / p[:keep].sum()
    out = np.zeros(v)
    out[cand] = p
    return out


def sample(p: np.ndarray, rng: np.random.Generator) -> int:
    """Draw one token from probabilities ``p`` ``[V]`` by inverse CDF."""
    c = np.cumsum(p)
    return int(min(np.searchsorted(c, rng.random() * c[-1], side="right"), len(p) - 1))


def greedy_accept(draft: Sequence[int], target_argmax: np.ndarray) -> int:
    """Number of leading drafts that equal the target's argmax at their position.

    draft: ``[d]`` drafted tokens. target_argmax: ``[d+1]``, the full model's argmax after
    the pending token and after each draft. The cycle then emits ``draft[:n]`` followed by
    ``target_argmax[n]`` (the bonus token).

    >>> greedy_accept([5, 7, 9], np.array([5, 7, 2, 4]))
    2
    """
    n = 0
    for x, t in zip(draft, target_argmax):
        if int(x) != int(t):
            break
        n += 1
    return n


def speculative_accept(draft: Sequence[int], q: np.ndarray | None, p: np.ndarray,
                       rng: np.random.Generator) -> tuple[int, int]:
    """Speculative sampling: how many drafts to keep, and the next token.

    draft: ``[d]`` tokens x_i. q: ``[d, V]`` the draft distributions they were sampled from,
    or None for a deterministic proposal (lookup), which is the point mass q(x_i) = 1.
    p: ``[d+1, V]`` target distributions after the pending token and after each draft.
    Returns ``(n, token)``: keep ``draft[:n]`` then emit ``token`` — drawn from the residual
    ``norm(max(0, p_n - q_n))`` if draft n was rejected, or from ``p_d`` if all were kept.
    """
    d = len(draft)
    assert p.shape[0] == d + 1, f"p has {p.shape[0]} rows for {d} drafts"
    for i, x in enumerate(draft):
        x = int(x)
        qx = 1.0 if q is None else float(q[i, x])
        px = float(p[i, x])
        r = rng.random()
        if qx > 0 and r < min(1.0, px / qx):
            continue
        if q is None:
            residual = p[i].copy()
            residual[x] = 0.0
        else:
            residual = np.maximum(p[i] - q[i], 0.0)
        total = residual.sum()
        if total <= 0:  # p == q on the support: any draw from p is exact
            residual, total = p[i], p[i].sum()
        return i, sample(residual / total, rng)
    return d, sample(p[d], rng)


def masked(logits: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """``logits`` ``[k, V]`` with every token its row of ``masks`` (bool ``[k, V]``) disallows at -inf."""
    assert masks.shape == logits.shape, f"masks {masks.shape} for logits {logits.shape}"
    assert masks.any(axis=1).all(), "a constraint allows no token at some row"
    return np.where(masks, logits, -np.inf)


def constrained_accept(draft: Sequence[int], q: np.ndarray | None, logits: np.ndarray, masks: np.ndarray,
                       params: SamplerParams, rng: np.random.Generator) -> tuple[int, int]:
    """The accept rule under a constraint (a JSON schema or grammar): how many drafts to keep, and the next token.

    logits, masks: ``[m+1, V]``, the full model's rows after the pending token and after each of
    ``draft[:m]``, and the constraint's allowed tokens at each row (row i: the state after the
    accepted prefix ``draft[:i]``). The drafts ``draft[:m]`` are allowed in sequence; a further
    ``draft[m]``, if present, is the first one the constraint disallows (the draft was cut there,
    so it was not verified). q: ``[d, V]`` the draft distributions, or None (point masses).

    Greedy: the longest prefix equal to each masked row's argmax, then that argmax; exactly
    plain constrained decoding. Sampled: speculative sampling against the masked distributions
    ``p``. A cut token has p = 0 at its row, so it is rejected for certain and the next token is
    drawn from the residual ``norm(max(0, p_m - q_m))``, as the unconstrained rule would.

    >>> m = np.array([[True, True, False], [False, True, True]])
    >>> constrained_accept([1, 0], None, np.array([[0., 5., 9.], [9., 0., 1.]]), m, SamplerParams(), None)
    (1, 2)
    """
    m = logits.shape[0] - 1
    assert 0 <= m <= len(draft), f"{m + 1} rows for {len(draft)} drafts"
    z = masked(np.asarray(logits), masks)
    if params.greedy:
        argmax = np.argmax(z, axis=1)
        n = greedy_accept(list(draft[:m]), argmax)
        return n, int(argmax[n])
    p = target_probs(z, params)
    if len(draft) == m:
        return speculative_accept(list(draft), q, p, rng)
    # verify draft[:m+1]: draft[m] meets row m, where p gives it 0; the padded row m+1 is never read
    padded = np.vstack([p, p[-1:]])
    return speculative_accept(list(draft[:m + 1]), None if q is None else q[:m + 1], padded, rng)
