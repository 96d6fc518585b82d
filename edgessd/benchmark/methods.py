"""How each in-process method generates on one :class:`~edgessd.engine.Engine`.

Every method runs greedy, on the same engine (same build, same threads, same context),
after ``Engine.reset()`` for a fresh prefill. What each one is:

- ``plain``: the same patched build and decode loop, nothing drafted or skipped.
- ``lookup``: n-gram lookup drafts from prompt + output (``mode="lookup"``, up to 4 drafts).
- ``static``: layer-skip self-drafting with one fixed set for every prompt, as Self-SD
  uses: the domain index's best single set across domains (the set that is best in the
  most domains; ties by mean accepted drafts), else :func:`~edgessd.engine.default_skip_set`.
  Up to 4 drafts, with Self-SD's adaptive confidence stop.
- ``swift``: SWIFT-style online search. The first 16 tokens are decoded plainly; then
  every candidate set (the index's sets, or four fixed ones without an index) is scored
  by block matchness (``online.search``'s score: the draft's argmax under the mask,
  teacher-forced from the full model's cache, blocks of 4) over the prompt's last token
  and those 16 tokens, in the engine's own context; the rest is drafted with the best set.
  The search is timed as part of the generation, as SWIFT pays it.
- ``knn``: the domain index alone: ``mode="layerskip"`` with no set, so the engine routes the
  prompt to its nearest domain and drafts with that domain's best set, d = 4.
- ``planner``: the profile's knapsack DP set alone (no KNN): ``planner.plan_layerskip`` on
  ``profile.cost_at(256)`` and the profile's matchness, as ``Engine.device_profile`` plans
  it, with the plan's draft length.
- ``auto``: ``mode="auto"``, edgessd as shipped (the engine is built with ``learn="off"``, so
  the benchmark never writes the user's domain index).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..drafters import LayerSkipDrafter
from ..drafters.base import Draft, DraftRequest
from ..engine import Engine, GenerationResult, default_skip_set
from ..skipset import SkipSet

IN_PROCESS = ("plain", "lookup", "static", "swift", "knn", "planner", "auto")
SWIFT_WARMUP = 16  # tokens decoded plainly before the search
DRAFT_MAX = 4


@dataclass
class Method:
    """A prepared method: ``run(eng, messages, n_predict, seed)`` -> GenerationResult."""

    name: str
    run: Callable[[Engine, list[dict], int, int], GenerationResult]
    detail: dict = field(default_factory=dict)  # what it uses (set, source, d), for the report


def _mode(mode: str, **kw) -> Callable[[Engine, list[dict], int, int], GenerationResult]:
    def run(eng: Engine, messages: list[dict], n: int, seed: int) -> GenerationResult:
        return eng.generate(messages, n_predict=n, temperature=0.0, seed=seed, mode=mode, **kw)
    return run


def static_set(eng: Engine) -> tuple[SkipSet, str]:
    """One set for all prompts: the index's best single set across domains, else the default."""
    index = eng.domain_index()
    if index is None:
        return default_skip_set(eng.model.n_layer), "default_skip_set (no domain index)"
    wins: dict[SkipSet, list[float]] = {}
    for name, sets in index.domains.items():
        if name not in index.learned and sets:
            wins.setdefault(sets[0].skip, []).append(sets[0].mean_accepted)
    if not wins:
        return default_skip_set(eng.model.n_layer), "default_skip_set (index has no calibrated domain)"
    best = max(wins, key=lambda s: (len(wins[s]), float(np.mean(wins[s]))))
    return best, f"domain index: best in {len(wins[best])} of {len(index.domains) - len(index.learned)} domains"


def planner_plan(eng: Engine):
    """The profile's layer-skip plan, computed as Engine.device_profile() does; None without one."""
    from ..planner import plan_layerskip

    prof = eng.device_profile()
    if prof is None:
        return None
    return plan_layerskip(prof.cost_at(256), np.array(prof.match_attn), np.array(prof.match_mlp))


def swift_candidates(eng: Engine) -> tuple[list[SkipSet], str]:
    """The sets the online search chooses among: the index's (every domain's), else fixed ones."""
    index = eng.domain_index()
    if index is not None:
        from ..online import candidate_sets

        return [c.skip for c in candidate_sets(index)], "domain index sets"
    L = eng.model.n_layer
    odd = range(1, L - 1, 2)
    cands = [default_skip_set(L), SkipSet.of([], odd), SkipSet.of(odd, [])]
    plan = planner_plan(eng)
    if plan is not None and plan.skip not in cands:
        cands.append(plan.skip)
    return cands, "fixed sets (no domain index): every-4th attn+mlp, odd mlp, odd attn, planner's"


def score_sets_in_place(eng: Engine, history: np.ndarray, start: int, candidates: list[SkipSet],
                        block: int = 4) -> list[float]:
    """Block matchness of each candidate over ``history[start:]`` (``start``: first generated).

    The same score as ``online.search`` (``acceptance.block_matchness``), computed in the
    engine's context without clearing it: for each block, every candidate decodes it under
    its mask on top of the full model's cache, then the full model decodes it once. On
    return the cache holds ``history[:-1]`` again, as the decode loop requires.
    """
    toks = [int(t) for t in history[:-1]]
    ref = np.asarray(history[1:])
    flags = [c.flags(eng.model.n_layer) for c in candidates]
    hits = np.zeros(len(candidates))
    total = 0
    ctx = eng.ctx
    b0 = max(start - 1, 0)
    ctx.kv_remove(b0)
    for b in range(b0, len(toks), block):
        chunk = toks[b:b + block]
        for i, f in enumerate(flags):
            with ctx.skipping(f):
                ctx.decode(chunk, b, all_logits=True)
                got = np.argmax(ctx.logits(), axis=1)
            ctx.kv_remove(b)
            hits[i] += int(np.sum(got == ref[b:b + len(chunk)]))
        ctx.decode(chunk, b)
        total += len(chunk)
    return list(hits / max(total, 1))


class SwiftDrafter:
    """Decodes plainly for ``warmup`` tokens, searches the candidate sets once, then drafts."""

    name = "swift"

    def __init__(self, eng: Engine, prompt_len: int, candidates: list[SkipSet], *, warmup: int = SWIFT_WARMUP,
                 max_tokens: int = DRAFT_MAX) -> None:
        self.eng, self.prompt_len, self.candidates = eng, prompt_len, candidates
        self.warmup, self.max_tokens = warmup, max_tokens
        self.inner: LayerSkipDrafter | None = None
        self.skip: SkipSet | None = None
        self.scores: dict[str, float] = {}

    def propose(self, req: DraftRequest) -> Draft | None:
        if self.inner is None:
            if len(req.history) - self.prompt_len < self.warmup:
                return None
            scores = score_sets_in_place(self.eng, req.history, self.prompt_len, self.candidates)
            best = int(np.argmax(scores))
            self.scores = {c.spec(): round(s, 4) for c, s in zip(self.candidates, scores)}
            self.skip = self.candidates[best]
            self.inner = LayerSkipDrafter(self.eng.ctx, self.skip, max_tokens=self.max_tokens)
        return self.inner.propose(req)

    def observe(self, n_drafted: int, n_accepted: int) -> None:
        if self.inner is not None:
            self.inner.observe(n_drafted, n_accepted)


def _swift(candidates: list[SkipSet]) -> Callable[[Engine, list[dict], int, int], GenerationResult]:
    def run(eng: Engine, messages: list[dict], n: int, seed: int) -> GenerationResult:
        drafter = SwiftDrafter(eng, len(eng.tokenize(messages)), candidates)
        result = eng.generate(messages, n_predict=n, temperature=0.0, seed=seed, drafter=drafter)
        result.layer_set = drafter.skip
        result.mode = f"swift→{drafter.skip.spec()}" if drafter.skip else "swift (no search: too short)"
        return result
    return run


def prepare(eng: Engine, names: list[str]) -> tuple[dict[str, Method], dict[str, str]]:
    """The runnable methods among ``names``, and for the others why not ("n/a: ...")."""
    ready: dict[str, Method] = {}
    unavailable: dict[str, str] = {}
    skip_ok = eng.model.skip_supported
    for name in names:
        if name in ("static", "swift", "knn", "planner") and not skip_ok:
            unavailable[name] = f"layer skip is not supported for architecture {eng.model.arch!r}"
        elif name == "plain":
            ready[name] = Method(name, _mode("plain"))
        elif name == "lookup":
            ready[name] = Method(name, _mode("lookup", draft_max=DRAFT_MAX), {"draft_max": DRAFT_MAX})
        elif name == "auto":
            ready[name] = Method(name, _mode("auto"), {"profile": eng.device_profile() is not None})
        elif name == "static":
            skip, source = static_set(eng)
            ready[name] = Method(name, _mode("layerskip", skip=skip, draft_max=DRAFT_MAX),
                                 {"skip": skip.spec(), "source": source, "draft_max": DRAFT_MAX})
        elif name == "knn":
            if eng.domain_index() is None:
                unavailable[name] = f"no domain index for this model (`edgessd calibrate {eng.model_path.stem}`)"
            else:
                ready[name] = Method(name, _mode("layerskip", draft_max=DRAFT_MAX), {"draft_max": DRAFT_MAX})
        elif name == "planner":
            plan = planner_plan(eng)
            if plan is None:
                unavailable[name] = ("no device profile for this model and thread count "
                                     f"(`edgessd profile {eng.model_path.stem} -t {eng.ctx.n_threads}`)"
                                     if eng.device_profile() is None else "the planner finds no skip set")
            else:
                ready[name] = Method(name, _mode("layerskip", skip=plan.skip, draft_max=plan.draft_len),
                                     {"skip": plan.skip.spec(), "draft_max": plan.draft_len,
                                      "plan_predicted_speedup": round(plan.speedup, 3)})
        elif name == "swift":
            cands, source = swift_candidates(eng)
            ready[name] = Method(name, _swift(cands), {"candidates": [c.spec() for c in cands], "source": source,
                                                       "warmup_tokens": SWIFT_WARMUP, "draft_max": DRAFT_MAX})
        else:
            raise AssertionError(f"unknown in-process method {name!r}")
    return ready, unavailable


def cycles_by_draft_len(stats) -> dict[int, int]:
    """How many cycles drafted exactly d tokens (d = 0: plain steps)."""
    dp = list(stats.drafted_per_pos) + [0]
    out = {d: dp[d - 1] - dp[d] for d in range(1, len(dp))}
    out[0] = stats.n_cycles - (dp[0] if dp else 0)
    return {d: n for d, n in out.items() if n}


def predicted_speedup(eng: Engine, result: GenerationResult) -> float | None:
    """The cost model's speedup for the cycles this run made, at the acceptance it measured.

    ``n_generated * t(1) / sum over cycles of (d * c_draft + V(d + 1))`` with the device
    profile's costs at the run's mean context length; c_draft is the skip set's draft step
    (layer skip) or 0 (lookup). None without a profile. The SWIFT search is not modelled.
    """
    prof = eng.device_profile()
    s = result.stats
    if prof is None or s.n_generated == 0 or s.n_cycles == 0:
        return None
    cost = prof.cost_at(s.n_prompt + s.n_generated // 2)
    step = cost.draft_step_ms(result.layer_set) if result.layer_set is not None else 0.0
    k_max = len(cost.verify)
    total = sum(n * (d * step + cost.V(min(d + 1, k_max))) for d, n in cycles_by_draft_len(s).items())
    return s.n_generated * cost.t1 / total if total > 0 else None
