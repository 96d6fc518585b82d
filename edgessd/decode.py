"""The decode loop: draft, verify, accept. Read this file first.

One *cycle*:

1. The drafter proposes up to d tokens to follow the pending token (the last token
   emitted, not yet in the KV cache). It may propose nothing: then the cycle is a plain
   decoding step, through the same code.
2. The full model decodes ``[pending, draft_1 .. draft_d]`` in one batch, with logits at
   every position: row i is the full model's prediction after ``draft_i``.
3. A pure rule (``sampling.greedy_accept`` / ``sampling.speculative_accept``) keeps the
   longest acceptable prefix of the draft and chooses one more token from the full model
   (the bonus token). The output is exactly what plain decoding would produce (greedy) or
   has exactly its distribution (sampled).
4. Rejected draft positions are removed from the KV cache, the drafter observes how many
   were accepted, and the emitted tokens are yielded.

Invariant between cycles: the KV cache holds ``history[:-1]``; ``history[-1]`` is pending.
The engine's prefill establishes it by decoding all prompt tokens but the last.

Under a constraint (a JSON schema or grammar, ``grammar.Matcher``), which has consumed
every emitted token: the draft is cut at its first token the constraint disallows; row i
of the verification is masked by the constraint's state after ``draft[:i]``
(``sampling.constrained_accept``); the constraint then rolls back the rejected drafts and
consumes the bonus token. So speculation keeps plain constrained decoding's output.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ._capi import Context
from .drafters.base import Draft, Drafter, DraftRequest
from .logprobs import TokenLogprob, row_logprobs
from .sampling import SamplerParams, constrained_accept, greedy_accept, penalized, speculative_accept, target_probs
from .stats import GenerationStats

if TYPE_CHECKING:
    from .grammar import Matcher


@dataclass(frozen=True)
class Emitted:
    """One cycle's emitted tokens, and their log-probabilities when asked for."""

    tokens: list[int]
    logprobs: list[TokenLogprob] | None = None


def accept(draft: Draft | None, logits: np.ndarray, sampler: SamplerParams,
           rng: np.random.Generator) -> tuple[int, int]:
    """Apply the accept rule to one verification. logits: ``[d+1, V]``. Returns (n_accepted, next_token)."""
    tokens = draft.tokens if draft else []
    if sampler.greedy:
        argmax = np.argmax(logits, axis=1)
        n = greedy_accept(tokens, argmax)
        return n, int(argmax[n])
    p = target_probs(logits, sampler)
    return speculative_accept(tokens, draft.probs if draft else None, p, rng)


def row_masks(matcher: Matcher, drafts: list[int]) -> np.ndarray:
    """bool ``[len(drafts)+1, V]``: the allowed tokens after the emitted text and after each of
    ``drafts`` (which the constraint must allow in sequence); the matcher ends where it began."""
    masks = np.empty((len(drafts) + 1, matcher.n_vocab), dtype=bool)
    for i, tok in enumerate(drafts):
        masks[i] = matcher.mask()
        matcher.consume(tok)
    masks[-1] = matcher.mask()
    matcher.rollback(len(drafts))
    return masks


def verify(ctx: Context, history: list[int], draft: Draft | None, pos: int, sampler: SamplerParams,
           rng: np.random.Generator, matcher: Matcher | None,
           stats: GenerationStats | None = None) -> tuple[int, int, np.ndarray]:
    """Decode the pending token and the (cut) draft, apply the accept rule, and bring the
    constraint to the accepted prefix. Returns (n_accepted, next_token, the raw logits rows).

    The rule sees each row as plain decoding would: penalised for repetition by ``history``
    and the drafts before that row (``sampling.penalized``).
    """
    tokens = draft.tokens if draft else []
    if matcher is None:
        ctx.decode([history[-1]] + tokens, pos, all_logits=True)
        logits = ctx.logits()
        return (*accept(draft, penalized(logits, history, tokens, sampler), sampler, rng), logits)
    t0 = time.perf_counter()
    m = matcher.count_allowed(tokens)
    t1 = time.perf_counter()
    ctx.decode([history[-1]] + tokens[:m], pos, all_logits=True)
    logits = ctx.logits()
    t2 = time.perf_counter()
    masks = row_masks(matcher, tokens[:m])
    rows = penalized(logits, history, tokens, sampler)
    n_acc, nxt = constrained_accept(tokens, draft.probs if draft else None, rows, masks, sampler, rng)
    for tok in tokens[:n_acc]:
        matcher.consume(tok)
    if stats is not None:  # the accept rule's masked argmax included: what the constraint adds
        stats.t_constraint_ms += (t1 - t0 + time.perf_counter() - t2) * 1e3
    return n_acc, nxt, logits


def decode_loop(ctx: Context, drafter: Drafter, history: list[int], *, n_predict: int,
                sampler: SamplerParams, rng: np.random.Generator, stats: GenerationStats,
                is_eog: Callable[[int], bool], cancelled: Callable[[], bool] = lambda: False,
                constraint: Matcher | None = None,
                n_logprobs: int | None = None) -> Generator[Emitted, None, str]:
    """Generate up to ``n_predict`` tokens after ``history``, yielding each cycle's emitted tokens.

    constraint: a JSON schema or grammar the output must follow (it has consumed every token
    emitted so far). n_logprobs: None, or give each token's log-probability and that many
    alternatives (0-20).

    ``history`` is extended in place. Returns the stop reason: ``"eos"`` (an end-of-generation
    token, which is not emitted), ``"length"`` (n_predict reached), ``"context"`` (the KV cache
    is full) or ``"cancelled"``.
    """
    now = time.perf_counter
    while True:
        if stats.n_generated >= n_predict:
            return "length"
        if cancelled():
            return "cancelled"
        pos = len(history) - 1
        if pos >= ctx.n_ctx:
            return "context"
        # drafts must fit in the context and in the budget (the bonus token is always emitted)
        room = min(n_predict - stats.n_generated - 1, ctx.n_ctx - pos - 1)

        t0 = now()
        draft = None
        if room > 0:
            req = DraftRequest(np.asarray(history, dtype=np.int32), pos, room, sampler, rng)
            draft = drafter.propose(req)
        t1 = now()
        n_acc, nxt, logits = verify(ctx, history, draft, pos, sampler, rng, constraint, stats)
        ctx.kv_remove(pos + 1 + n_acc)  # drop rejected drafts; keep pending + accepted
        if constraint is not None and not is_eog(nxt):
            constraint.consume(nxt)
        t2 = now()

        n_drafted = len(draft.tokens) if draft else 0
        emitted = (draft.tokens[:n_acc] if draft else []) + [nxt]
        eos = next((i for i, t in enumerate(emitted) if is_eog(t)), None)
        if eos is not None and eos < n_acc:
            n_acc = eos + 1  # drafts past the end of generation were never going to be emitted
        if draft:
            drafter.observe(n_drafted, n_acc)
        stats.observe_cycle(n_drafted, n_acc)
        stats.t_draft_ms += (t1 - t0) * 1e3
        stats.t_verify_ms += (t2 - t1) * 1e3

        if eos is not None:
            emitted = emitted[:eos]
        emitted = emitted[:n_predict - stats.n_generated]
        lp = row_logprobs(logits[:len(emitted)], emitted, n_logprobs) if n_logprobs is not None else None
        history.extend(emitted)
        stats.n_generated += len(emitted)
        ctx.kv_remove(len(history) - 1)  # restore the invariant after any truncation
        if emitted:
            yield Emitted(emitted, lp)
        if eos is not None:
            stats.n_eog = 1
            return "eos"
