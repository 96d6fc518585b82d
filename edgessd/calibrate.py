"""``edgessd calibrate``: per-domain skip sets, scored by real acceptance, and their KNN anchors.

For each domain of a Spec-Bench JSONL file:

1. Generate greedy references for the domain's search prompts with the full model.
2. Search skip sets of a few sizes (a share of the 2L sublayers): seeds (the planner's
   knapsack choice from the device profile's sublayer matchness when there is one, even
   spacing, attention-only, MLP-only, later-layers-first) and random single swaps from the best,
   in the style of SWIFT. Each candidate is scored cheaply by block matchness over the
   references: the draft's argmax under the mask, teacher-forced from the full model's cache.
3. Re-score the best few of each size by *real* acceptance: speculative decoding with the
   set, counting accepted drafts per cycle.
4. Choose: every domain measures every domain's best set of each size by real acceptance
   on ``n_select`` of its prompts that the search did not use. The set best over all
   domains is every domain's, unless a domain's own best beats it there by more than
   ``own_margin`` (choose_sets). A set that won on four search prompts often won by
   chance; on smollm2-135m, choosing on the search prompts themselves gave sets that did
   worse on the evaluation split than one other domain's set did, and on
   qwen2.5-coder-1.5b, each domain's best on its selection prompts gave 0.92x of the
   common best set on the evaluation split.
5. Features of every calibration prompt (features.py) -> K-means anchors per domain.
   The out-of-domain threshold comes from two kinds of held-out distance: in-domain
   prompts the anchors did not see (a quarter of each domain), and each domain's prompts
   against anchors built without that domain (leave one domain out). The threshold is
   the distance that separates the two best (balanced accuracy).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from .acceptance import block_matchness
from .domains import DomainIndex, DomainSet, kmeans
from .engine import Engine
from .features import FeatureSpec
from .prompts import Prompt, by_category
from .skipset import SkipSet


@dataclass(frozen=True)
class CalibrationConfig:
    sizes: tuple[float, ...] = (0.15, 0.3)  # shares of the 2L sublayers to skip
    n_search: int = 4         # prompts per domain that score candidates
    n_select: int = 12        # other prompts per domain that choose among every domain's finalists
    n_tokens: int = 24        # tokens generated per reference / acceptance run
    candidates: int = 8       # sets scored by block matchness, per size
    finalists: int = 2        # of those, re-scored by real acceptance, per size
    draft_len: int = 4        # drafts per cycle when measuring acceptance
    anchors: int = 4          # K-means anchors per domain
    k: int = 1                # neighbours consulted when routing
    own_margin: float = 0.1   # a domain keeps its own set only if it beats the common best by this
    feature: FeatureSpec = field(default_factory=lambda: FeatureSpec(last_layers=8))
    seed: int = 0


@dataclass
class Reference:
    tokens: list[int]   # prompt + greedy continuation
    start: int          # where the continuation begins


def references(eng: Engine, prompts: list[Prompt], n_tokens: int) -> list[Reference]:
    out = []
    for pr in prompts:
        prompt_tokens = eng.tokenize([{"role": "user", "content": pr.first}])
        r = eng.generate([{"role": "user", "content": pr.first}], n_predict=n_tokens, mode="plain")
        out.append(Reference(prompt_tokens + r.tokens, len(prompt_tokens)))
    eng.reset()
    return out


def matchness_score(eng: Engine, refs: list[Reference], skip: SkipSet, block: int) -> float:
    """Mean block matchness of ``skip`` over the references' continuations."""
    flags = skip.flags(eng.model.n_layer)
    scores = []
    for ref in refs:
        toks = ref.tokens[:-1]
        if len(toks) <= ref.start:
            continue
        scores.append(block_matchness(eng.ctx, toks, flags, ref.start - 1, np.asarray(ref.tokens[1:]), block))
    eng.reset()  # block_matchness cleared the cache behind the engine's back
    return float(np.mean(scores)) if scores else 0.0


def real_acceptance(eng: Engine, prompts: list[Prompt], skip: SkipSet, n_tokens: int, d: int) -> DomainSet:
    """Speculative decoding with ``skip`` on ``prompts``: accepted drafts per cycle, and alpha."""
    acc = cyc = rej = 0
    for pr in prompts:
        r = eng.generate([{"role": "user", "content": pr.first}], n_predict=n_tokens, mode="layerskip",
                         skip=skip, draft_max=d)
        acc, cyc, rej = acc + r.stats.n_accepted, cyc + r.stats.n_cycles, rej + r.stats.n_rejections
    eng.reset()
    return DomainSet(skip, acc / max(cyc, 1), acc / max(acc + rej, 1), d)


def seed_sets(n_layer: int, n_skip: int, rng: np.random.Generator, planner_order: np.ndarray | None) -> list[SkipSet]:
    """Starting points for the search, each skipping ``n_skip`` sublayers (never layer 0 or L-1).

    Items are numbered 0..L-1 for attention and L..2L-1 for MLP.
    """
    inner = np.arange(1, n_layer - 1)
    items = np.concatenate([inner, n_layer + inner])
    n_skip = min(n_skip, len(items))
    seeds = []
    if planner_order is not None:  # most harmless first, by the profile's single-skip matchness
        seeds.append(planner_order[:n_skip])
    spaced = inner[np.linspace(0, len(inner) - 1, max(1, (n_skip + 1) // 2)).round().astype(int)]
    seeds.append(np.concatenate([spaced, n_layer + spaced])[:n_skip])
    seeds.append(inner[::-1][:n_skip] if n_skip <= len(inner) else items[::-1][:n_skip])  # attention, late first
    if n_skip <= len(inner):  # MLP only, evenly spaced: which kind a domain tolerates differs (FINDINGS §2)
        seeds.append(n_layer + inner[np.linspace(0, len(inner) - 1, n_skip).round().astype(int)])
    late = np.concatenate([[il, n_layer + il] for il in inner[::-1]])
    seeds.append(late[:n_skip])
    seeds.append(rng.choice(items, n_skip, replace=False))
    return [to_set(s, n_layer) for s in seeds]


def to_set(items: np.ndarray, n_layer: int) -> SkipSet:
    items = np.asarray(items)
    return SkipSet.of(items[items < n_layer], items[items >= n_layer] - n_layer)


def to_items(s: SkipSet, n_layer: int) -> np.ndarray:
    return np.array(list(s.attn) + [n_layer + i for i in s.mlp], dtype=np.int64)


def mutate(s: SkipSet, n_layer: int, rng: np.random.Generator) -> SkipSet:
    """Swap one skipped sublayer for one that is not skipped (first and last layers stay)."""
    inner = np.arange(1, n_layer - 1)
    items = np.concatenate([inner, n_layer + inner])
    cur = to_items(s, n_layer)
    out = np.setdiff1d(items, cur)
    if cur.size == 0 or out.size == 0:
        return s
    cur = cur.copy()
    cur[rng.integers(cur.size)] = rng.choice(out)
    return to_set(cur, n_layer)


def search_domain(eng: Engine, prompts: list[Prompt], cfg: CalibrationConfig, rng: np.random.Generator,
                  planner_order: np.ndarray | None, tick: Callable[[], None]) -> tuple[list[DomainSet], dict]:
    """The domain's best sets (best real acceptance first) and what the search saw."""
    L = eng.model.n_layer
    search = prompts[:cfg.n_search]
    refs = references(eng, search, cfg.n_tokens)
    found: list[DomainSet] = []
    log: dict[str, list] = {}
    for share in cfg.sizes:
        n_skip = max(1, int(round(share * 2 * L)))
        scored: dict[SkipSet, float] = {}
        pool = seed_sets(L, n_skip, rng, planner_order)
        while len(scored) < cfg.candidates:
            if pool:
                cand = pool.pop(0)
            else:  # hill-climb: mutate one of the best three so far
                best = sorted(scored, key=scored.__getitem__, reverse=True)[:3]
                cand = mutate(best[rng.integers(len(best))], L, rng)
                if cand in scored:
                    cand = mutate(cand, L, rng)
            if cand in scored:
                continue
            scored[cand] = matchness_score(eng, refs, cand, cfg.draft_len)
            tick()
        top = sorted(scored, key=scored.__getitem__, reverse=True)[:cfg.finalists]
        for s in top:
            found.append(real_acceptance(eng, search, s, cfg.n_tokens, cfg.draft_len))
            tick()
        log[f"{share:.2f}"] = sorted(((s.spec(), round(v, 4)) for s, v in scored.items()), key=lambda t: -t[1])
    # best real acceptance per skipped sublayer first: the planner trades them off per device
    found.sort(key=lambda ds: (-ds.skip.n_skipped, -ds.mean_accepted))
    by_size: dict[int, DomainSet] = {}
    for ds in found:
        if ds.skip.n_skipped not in by_size or ds.mean_accepted > by_size[ds.skip.n_skipped].mean_accepted:
            by_size[ds.skip.n_skipped] = ds
    sets = sorted(by_size.values(), key=lambda ds: -ds.mean_accepted)
    return sets, {"matchness": log}


def select_prompts(prs: list[Prompt], cfg: CalibrationConfig) -> list[Prompt]:
    """The prompts that choose a domain's sets: after the search prompts, else (too few) the search's."""
    rest = prs[cfg.n_search:cfg.n_search + cfg.n_select]
    return rest if rest else prs[:cfg.n_search]


def cross_select(eng: Engine, groups: dict[str, list[Prompt]], domains: dict[str, list[DomainSet]],
                 cfg: CalibrationConfig, tick: Callable[[], None]) -> dict[str, dict[str, dict[str, float]]]:
    """Give each domain, at each size, one of *every* domain's sets at that size (choose_sets),
    measured by real acceptance on prompts the search did not see. Replaces ``domains`` in place, each
    set with the acceptance measured on the selection prompts; returns every measurement
    (size -> domain -> set -> mean accepted) for the sidecar."""
    sizes = sorted({s.skip.n_skipped for sets in domains.values() for s in sets})
    table: dict[str, dict[str, dict[str, float]]] = {}
    chosen: dict[str, list[DomainSet]] = {dom: [] for dom in groups}
    runs = 0
    for n in sizes:
        pool = list(dict.fromkeys(s.skip for sets in domains.values() for s in sets if s.skip.n_skipped == n))
        table[str(n)] = {}
        found: dict[str, dict[str, DomainSet]] = {}
        for dom, prs in groups.items():
            sel = select_prompts(prs, cfg)
            measured = []
            for skip in pool:
                measured.append(real_acceptance(eng, sel, skip, cfg.n_tokens, cfg.draft_len))
                runs += 1
                tick()
            table[str(n)][dom] = {m.skip.spec(): round(m.mean_accepted, 4) for m in measured}
            found[dom] = {m.skip.spec(): m for m in measured}
        pick = choose_sets(table[str(n)], cfg.own_margin)
        for dom in groups:
            chosen[dom].append(found[dom][pick[dom]])
    for _ in range(cross_select_steps(groups, cfg) - runs):
        tick()  # domains that found the same set leave a smaller pool: the bar still ends full
    for dom in groups:
        domains[dom] = sorted(chosen[dom], key=lambda ds: -ds.mean_accepted)
    return table


def choose_sets(measured: dict[str, dict[str, float]], own_margin: float) -> dict[str, str]:
    """Each domain's set from ``measured`` (domain -> set -> mean accepted on its selection
    prompts): the set best over all domains (equal weight), unless the domain's own best
    beats that one on the domain by more than ``own_margin`` (relative).

    Sets of one size found by separate searches often accept within a few percent of each
    other, and a few selection prompts cannot rank them: on qwen2.5-coder-1.5b, taking each
    domain's own best gave a stream 0.92x of the one best set. A domain keeps a set of its
    own only where the difference is larger than that noise.

    >>> choose_sets({"a": {"x": 1.0, "y": 1.05}, "b": {"x": 2.0, "y": 1.0}, "c": {"x": 0.5, "y": 1.0}}, 0.1)
    {'a': 'x', 'b': 'x', 'c': 'y'}
    """
    sets = sorted({s for row in measured.values() for s in row})
    mean = {s: float(np.mean([row.get(s, 0.0) for row in measured.values()])) for s in sets}
    common = max(sets, key=lambda s: (mean[s], s))
    out = {}
    for dom, row in measured.items():
        own = max(row, key=lambda s: (row[s], s == common))
        out[dom] = own if row[own] > (1.0 + own_margin) * row.get(common, 0.0) else common
    return out


def cross_select_steps(groups: dict[str, list[Prompt]], cfg: CalibrationConfig) -> int:
    """Real-acceptance runs cross_select makes at most: every domain, every size, one set per domain."""
    return len(cfg.sizes) * len(groups) * len(groups)


def prompt_features(eng: Engine, prompts: list[Prompt], spec: FeatureSpec) -> np.ndarray:
    return np.stack([eng.prompt_feature([{"role": "user", "content": pr.first}], spec) for pr in prompts])


def build_anchors(feats: dict[str, np.ndarray], n_anchors: int, seed: int) -> tuple[np.ndarray, list[str], float, dict]:
    """Anchors of every domain, their domains, the out-of-domain distance threshold, and how
    that threshold was chosen.

    In-domain held-out distances: anchors from three quarters of each domain, the other
    quarter's nearest-anchor cosine distances. Out-of-domain distances: each domain's
    prompts against the anchors of the other domains only. The threshold is the midpoint
    that maximises balanced accuracy (in-domain kept + out-of-domain flagged) / 2.
    """
    rng = np.random.default_rng(seed)
    held_anchor, held_out = {}, {}
    for dom, x in feats.items():
        perm = rng.permutation(len(x))
        cut = max(1, (3 * len(x)) // 4)
        held_anchor[dom] = kmeans(x[perm[:cut]], n_anchors, seed=seed)
        held_out[dom] = x[perm[cut:]]
    A = np.vstack(list(held_anchor.values()))
    outs = [h for h in held_out.values() if len(h)]
    d_in = np.min(1.0 - np.vstack(outs) @ A.T, axis=1) if outs else np.zeros(0)
    d_out = np.zeros(0)  # leave one domain out: each domain against the others' anchors
    if len(feats) > 1:
        d_out = np.concatenate([
            np.min(1.0 - x @ np.vstack([a for o, a in held_anchor.items() if o != dom]).T, axis=1)
            for dom, x in feats.items()])
    ood, stats = ood_threshold(d_in, d_out)
    anchors, names = [], []
    for dom, x in feats.items():
        c = kmeans(x, n_anchors, seed=seed)
        anchors.append(c)
        names += [dom] * len(c)
    return np.vstack(anchors), names, ood, stats


def ood_threshold(d_in: np.ndarray, d_out: np.ndarray) -> tuple[float, dict]:
    """The distance above which a prompt is out of domain, from held-out in-domain distances
    ``d_in`` and leave-one-domain-out distances ``d_out``: the midpoint between sorted
    distances with the best balanced accuracy (ties: the larger threshold, fewer false flags).
    With no out-of-domain data, the largest in-domain distance plus 10%."""
    if len(d_in) == 0:
        return 0.5, {"method": "default"}
    if len(d_out) == 0:
        return float(min(2.0, d_in.max() * 1.1)), {"method": "max in-domain + 10%", "n_in": len(d_in)}
    cuts = np.unique(np.concatenate([d_in, d_out]))
    mids = np.concatenate([(cuts[:-1] + cuts[1:]) / 2, [cuts[-1] + 1e-6]])
    kept = (d_in[None, :] <= mids[:, None]).mean(axis=1)
    flagged = (d_out[None, :] > mids[:, None]).mean(axis=1)
    bal = (kept + flagged) / 2
    best = int(np.flatnonzero(bal >= bal.max() - 1e-12)[-1])
    return float(min(2.0, mids[best])), {
        "method": "balanced accuracy, leave one domain out", "n_in": int(len(d_in)), "n_out": int(len(d_out)),
        "in_kept": round(float(kept[best]), 3), "out_flagged": round(float(flagged[best]), 3)}


def calibrate(eng: Engine, prompts: list[Prompt], cfg: CalibrationConfig, *, model_sha256: str,
              planner_order: np.ndarray | None = None,
              progress: Callable[[str, int], None] = lambda what, total: None,
              tick: Callable[[], None] = lambda: None) -> DomainIndex:
    """Calibrate a domain index for ``eng``'s model from ``prompts`` (grouped by category)."""
    t0 = time.perf_counter()
    groups = by_category(prompts)
    rng = np.random.default_rng(cfg.seed)
    steps_per_domain = len(cfg.sizes) * (cfg.candidates + cfg.finalists)
    progress("search", steps_per_domain * len(groups) + cross_select_steps(groups, cfg) + len(prompts))
    domains: dict[str, list[DomainSet]] = {}
    logs = {}
    for dom, prs in groups.items():
        domains[dom], logs[dom] = search_domain(eng, prs, cfg, rng, planner_order, tick)
    selection = cross_select(eng, groups, domains, cfg, tick)
    feats = {}
    for dom, prs in groups.items():
        feats[dom] = prompt_features(eng, prs, cfg.feature)
        for _ in prs:
            tick()
    anchors, names, ood, ood_stats = build_anchors(feats, cfg.anchors, cfg.seed)
    meta = {"config": asdict(cfg),
            "seconds": round(time.perf_counter() - t0, 1), "n_prompts": {d: len(p) for d, p in groups.items()},
            "search": logs, "selection": selection, "ood": ood_stats}
    return DomainIndex(model_sha256, cfg.feature, anchors.shape[1], anchors, names, domains, ood, cfg.k, [], meta)
