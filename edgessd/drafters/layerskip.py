"""Layer-skip self-drafting: the same model with some attention/MLP sublayers skipped.

Drafts one token at a time under the skip mask, at the positions the verification will
use, then removes those positions from the KV cache (in a ``finally``): the verification
pass rewrites them with the full model (FINDINGS §4).

Early stop, as in Self-SD (Zhang et al., 2024): drafting stops when the draft's top-1
probability falls under a threshold ``p_min``. The threshold adapts to what verification
reports: a rejected draft raises it (stop earlier), a fully accepted draft lowers it.

Greedy drafts run in one C call (``llama_draft_greedy``, patch 0003), which keeps Python
out of the per-token path; sampled drafts run here, since verification needs each q.
"""
from __future__ import annotations

import numpy as np

from .._capi import Context
from ..sampling import penalized, sample, target_probs
from ..skipset import SkipSet
from .base import Draft, DraftRequest


class LayerSkipDrafter:
    """Drafts with ``skip`` applied to ``ctx``; up to ``max_tokens`` per cycle."""

    name = "layerskip"

    def __init__(self, ctx: Context, skip: SkipSet, *, max_tokens: int = 4, p_min: float = 0.5,
                 adaptive: bool = True, p_step: float = 0.05, p_bounds: tuple[float, float] = (0.05, 0.95)) -> None:
        self.ctx = ctx
        self.skip = skip
        self.flags = skip.flags(ctx.model.n_layer)
        self.max_tokens = max_tokens
        self.p_min = p_min
        self.adaptive = adaptive
        self.p_step = p_step
        self.p_bounds = p_bounds
        self.n_drafted = 0
        self.n_accepted = 0

    def propose(self, req: DraftRequest) -> Draft | None:
        limit = min(self.max_tokens, req.max_tokens)
        if limit <= 0:
            return None
        tokens: list[int] = []
        qs: list[np.ndarray] = []
        tok = int(req.history[-1])
        if req.sampler.greedy:  # the whole greedy draft loop in one C call (patch 0003)
            try:
                with self.ctx.skipping(self.flags):
                    tokens = self.ctx.draft_greedy(tok, req.pos, limit, self.p_min)
            finally:
                self.ctx.kv_remove(req.pos)
            return Draft(tokens=tokens, probs=None, source=self.name) if tokens else None
        # sampled drafts: each token is drawn from the draft's own q, which verification needs
        try:
            with self.ctx.skipping(self.flags):
                for i in range(limit):
                    self.ctx.decode([tok], req.pos + i)
                    row = penalized(self.ctx.logits()[:1], np.append(req.history, tokens), [], req.sampler)[0]
                    q = target_probs(row, req.sampler)  # penalised as the verifier will: closer to p
                    tok = sample(q, req.rng)
                    if i > 0 and float(q.max()) < self.p_min:
                        break
                    tokens.append(tok)
                    qs.append(q)
        finally:
            self.ctx.kv_remove(req.pos)
        if not tokens:
            return None
        return Draft(tokens=tokens, probs=np.stack(qs), source=self.name)

    def observe(self, n_drafted: int, n_accepted: int) -> None:
        self.n_drafted += n_drafted
        self.n_accepted += n_accepted
        if not self.adaptive or n_drafted == 0:
            return
        lo, hi = self.p_bounds
        if n_accepted < n_drafted:
            self.p_min = min(hi, self.p_min + self.p_step)
        else:
            self.p_min = max(lo, self.p_min - self.p_step)
