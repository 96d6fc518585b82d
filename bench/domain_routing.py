"""KNN domain routing: accuracy, lookup cost, and what the routed sets accept (issue #5).

    python bench/domain_routing.py [MODEL] [--index DIR] [-n 32] [--tier K] [--json OUT] [--md OUT]

1. Routing on the evaluation split: accuracy per domain, the feature's cost against
   prefill, and the index lookup time per prompt.
2. A mixed-domain stream (the evaluation prompts of all domains, shuffled with a fixed
   seed): greedy speculative decoding with, per prompt, the KNN-routed domain's set, the
   prompt's own domain's set (the oracle), and every domain's set used for all prompts
   (static; the best of them is "the best single static set", as Self-SD would use one).
   All sets come from one size tier (same number of skipped sublayers), so they cost the
   same per draft and acceptance is what differs. Metric: mean accepted drafts per cycle.
3. Out of domain (a category left out of calibration): the nearest domain's set against
   the online search's choice (online.py), scored on the same generations.

Acceptance counts are device-independent (greedy, exact); timings are this machine's.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from edgessd import online, registry  # noqa: E402
from edgessd.domains import DomainSet, index_dir, load_index, shipped_index_dir  # noqa: E402
from edgessd.engine import Engine  # noqa: E402
from edgessd.prompts import bundled, load_prompts  # noqa: E402


def chat(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def tier_sets(index, tier: int | None) -> tuple[int, dict[str, DomainSet]]:
    """Each calibrated domain's best set with ``tier`` skipped sublayers (default: the smallest size)."""
    cal = {d: s for d, s in index.domains.items() if d not in index.learned}
    sizes = sorted({x.skip.n_skipped for sets in cal.values() for x in sets})
    tier = tier if tier is not None else sizes[0]
    out = {}
    for d, sets in cal.items():
        at = [x for x in sets if x.skip.n_skipped == tier]
        if at:
            out[d] = max(at, key=lambda x: x.mean_accepted)
    return tier, out


def accepted(eng: Engine, prompt: str, s: DomainSet, n: int) -> tuple[int, int]:
    r = eng.generate(chat(prompt), n_predict=n, mode="layerskip", skip=s.skip, draft_max=s.draft_len)
    return r.stats.n_accepted, r.stats.n_cycles


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="?", default="smollm2-135m")
    ap.add_argument("--index", type=Path, default=None, help="index directory [default: the user's, else shipped]")
    ap.add_argument("-n", type=int, default=32)
    ap.add_argument("--tier", type=int, default=None, help="skipped sublayers of the compared sets")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--stream-per-domain", type=int, default=16, help="evaluation prompts per domain in section 2")
    ap.add_argument("--ood", type=int, default=24, help="out-of-domain prompts in section 3")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--md", type=Path, default=None)
    ns = ap.parse_args()

    path = registry.resolve(ns.model)
    sha = registry.model_sha256(path)
    where = ns.index or next((d for d in (index_dir(sha), shipped_index_dir(sha)) if d.exists()), None)
    if where is None:
        sys.exit(f"no domain index for {ns.model}: run `edgessd calibrate {ns.model}` first")
    index = load_index(where, model_sha256=sha)
    eng = Engine(path, n_ctx=2048, n_threads=ns.threads, learn="off")
    lines: list[str] = []

    def out(s: str = "") -> None:
        print(s, flush=True)
        lines.append(s)

    report: dict = {"model": ns.model, "index": str(where), "n": ns.n, "threads": ns.threads}
    out(f"# bench/domain_routing.py: {ns.model}, index {where}")
    out(f"Command: `python bench/domain_routing.py {' '.join(sys.argv[1:])}`")

    # 1. routing ------------------------------------------------------------------------------------
    ev = load_prompts(bundled("domains-eval"))
    feats, t_prefill, t_feat, t_knn, routes = [], 0.0, 0.0, 0.0, []
    for p in ev:
        toks = eng.tokenize(chat(p.first))
        eng.reset()
        t0 = time.perf_counter()
        eng._prefill(toks)
        t1 = time.perf_counter()
        f = eng._feature(chat(p.first), toks, index.feature)
        t2 = time.perf_counter()
        r = index.route(f)
        t3 = time.perf_counter()
        t_prefill, t_feat, t_knn = t_prefill + t1 - t0, t_feat + t2 - t1, t_knn + t3 - t2
        feats.append(f)
        routes.append(r)
    cats = sorted({p.category for p in ev})
    out("\n## 1. Routing on the evaluation split")
    out("| domain | prompts | routed right | in-domain (under the OOD threshold) |")
    out("|---|---|---|---|")
    per = {}
    for c in cats:
        idx = [i for i, p in enumerate(ev) if p.category == c]
        ok = sum(routes[i].domain == c for i in idx)
        ind = sum(routes[i].in_domain for i in idx)
        per[c] = ok / len(idx)
        out(f"| {c} | {len(idx)} | {ok / len(idx):.0%} | {ind / len(idx):.0%} |")
    acc = float(np.mean([r.domain == p.category for r, p in zip(routes, ev)]))
    out(f"| **all** | {len(ev)} | **{acc:.1%}** | {np.mean([r.in_domain for r in routes]):.0%} |")
    out(f"\nfeature {1e3 * t_feat / len(ev):.3f} ms/prompt = {100 * t_feat / t_prefill:.2f}% of prefill "
        f"({1e3 * t_prefill / len(ev):.1f} ms/prompt); index lookup {1e6 * t_knn / len(ev):.1f} µs/prompt")
    report["routing"] = {"accuracy": acc, "per_domain": per, "feature_ms": 1e3 * t_feat / len(ev),
                         "prefill_ms": 1e3 * t_prefill / len(ev), "feature_share": t_feat / t_prefill,
                         "lookup_us": 1e6 * t_knn / len(ev)}

    # 2. mixed stream -------------------------------------------------------------------------------
    tier, sets = tier_sets(index, ns.tier)
    keep = [i for c in cats for i in [j for j, p in enumerate(ev) if p.category == c][:ns.stream_per_domain]]
    order = np.random.default_rng(ns.seed).permutation(keep)
    table = np.zeros((len(ev), len(sets), 2))  # [prompt, set] -> (accepted, cycles)
    names = list(sets)
    t0 = time.perf_counter()
    for i in order:
        for j, d in enumerate(names):
            table[i, j] = accepted(eng, ev[i].first, sets[d], ns.n)
    out(f"\n## 2. Mixed-domain stream ({len(keep)} prompts, seed {ns.seed}, -n {ns.n}, sets with {tier} of "
        f"{2 * eng.model.n_layer} sublayers skipped, d = {sets[names[0]].draft_len}; {time.perf_counter() - t0:.0f} s)")
    ma = lambda rows, cols: table[rows, cols, 0].sum() / max(table[rows, cols, 1].sum(), 1)  # noqa: E731
    knn_col = np.array([names.index(r.domain) if r.domain in names else 0 for r in routes])
    own_col = np.array([names.index(p.category) for p in ev])
    static_all = {d: ma(np.array(keep), np.full(len(keep), j)) for j, d in enumerate(names)}
    best_static = max(static_all, key=static_all.__getitem__)
    out(f"best single static set: {best_static}'s ({sets[best_static].skip.spec()})")
    out("| domain | KNN | oracle | best static | KNN/oracle | KNN/static |")
    out("|---|---|---|---|---|---|")
    rows_report = {}
    for c in cats + ["all"]:
        rows = np.array(keep) if c == "all" else np.array([i for i in keep if ev[i].category == c])
        k, o = ma(rows, knn_col[rows]), ma(rows, own_col[rows])
        s = ma(rows, np.full(len(rows), names.index(best_static)))
        rows_report[c] = {"knn": k, "oracle": o, "static": s}
        b = "**" if c == "all" else ""
        out(f"| {b}{c}{b} | {k:.2f} | {o:.2f} | {s:.2f} | {k / o if o else 0:.2f} | {k / s if s else 0:.2f}x |")
    out("\nEvery domain's set used for all prompts (mean accepted drafts per cycle): "
        + ", ".join(f"{d} {v:.2f}" for d, v in static_all.items()))
    report["stream"] = {"tier": tier, "sets": {d: s.skip.spec() for d, s in sets.items()}, "by_domain": rows_report,
                        "static_all": static_all, "best_static": best_static}

    # 3. out of domain ------------------------------------------------------------------------------
    ood = load_prompts(bundled("domains-ood"))[:ns.ood]
    near_acc = near_cyc = found_acc = found_cyc = flagged = changed = 0
    for p in ood:
        toks = eng.tokenize(chat(p.first))
        eng.reset()
        eng._prefill(toks)
        r = index.route(eng._feature(chat(p.first), toks, index.feature))
        flagged += not r.in_domain
        plain = eng.generate(chat(p.first), n_predict=ns.n, mode="plain")
        half = toks + plain.tokens[: max(8, len(plain.tokens) // 2)]
        # the search sees the first half of the reply; both sets are then scored on the whole reply
        res = online.search(eng.ctx, half, len(toks), index, r.domain)
        eng.reset()
        near = sets.get(r.domain) or index.best_set(r.domain)
        found = next((s for s in sets.values() if s.skip == res.best.skip), res.best)
        changed += found.skip != near.skip
        a, c = accepted(eng, p.first, near, ns.n)
        near_acc, near_cyc = near_acc + a, near_cyc + c
        a, c = accepted(eng, p.first, found, ns.n)
        found_acc, found_cyc = found_acc + a, found_cyc + c
    out(f"\n## 3. Out of domain: {len(ood)} '{ood[0].category}' prompts (left out of calibration)")
    out(f"flagged out of domain by the threshold ({index.ood_distance:.3f}): {flagged}/{len(ood)}; "
        f"online search chose another set for {changed}")
    out(f"mean accepted: nearest domain's set {near_acc / max(near_cyc, 1):.2f}, "
        f"online search's {found_acc / max(found_cyc, 1):.2f}")
    report["ood"] = {"n": len(ood), "flagged": flagged, "changed": changed,
                     "nearest": near_acc / max(near_cyc, 1), "online": found_acc / max(found_cyc, 1)}
    eng.close()
    if ns.json:
        ns.json.write_text(json.dumps(report, indent=2) + "\n")
    if ns.md:
        ns.md.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
