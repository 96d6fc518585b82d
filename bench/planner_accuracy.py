"""Does --mode auto decide well on this device, and can its predictions be trusted?

    python bench/planner_accuracy.py [MODEL] [-n 64] [--repeat 3] [--threads 2] [--json OUT]

Greedy, same build, same threads, one process. Needs the model's device profile
(`edgessd profile MODEL`; measured here if missing). It prints:

1. auto against plain on prompts of several kinds, plain and auto interleaved --repeat
   times, median tok/s each: auto's speedup per prompt, and what auto chose.
2. The planner's predicted speedup beside the measured one, for plain, lookup and two
   fixed layer-skip sets (d=3, no early stop), at the acceptance each run measured:
   predicted = E[tokens per cycle](alpha, d) / (d * c_draft(S) + V(d + 1)) * t(1), and for
   lookup, whose draft lengths vary, the cost model applied to the run's own cycles.
3. A simulated memory-bound device, V(k) = t(1) * (1 + 0.05 (k - 1)), with the same
   measured acceptance: what the planner would choose there and predict.
4. How well the cheap acceptance estimate (teacher-forced matchness over plain decoding's
   own output) ranks skip sets against the real per-token acceptance of a generation, on
   three domains: Spearman rank correlation over six sets.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from edgessd.acceptance import argmax_rows, block_matchness, matchness  # noqa: E402
from edgessd.drafters import LayerSkipDrafter  # noqa: E402
from edgessd.engine import Engine  # noqa: E402
from edgessd.planner import CostModel, expected_tokens, plan_layerskip, plan_lookup  # noqa: E402
from edgessd.profiler import profile_model  # noqa: E402
from edgessd.skipset import SkipSet  # noqa: E402

CODE = ("def add(items):\n    total = 0\n    for x in items:\n        total += x\n    return total\n\n"
        "def mean(items):\n    total = add(items)\n    return total / len(items)\n\n"
        "def spread(items):\n    total = max(items) - min(items)\n    return total\n")
PROMPTS = {
    "code": "Write a Python function that checks whether a string is a palindrome, ignoring case.",
    "math": "A shop sells pens at 3 dollars and notebooks at 5 dollars. Tom buys 4 pens and 3 notebooks. "
            "How much does he pay? Explain step by step.",
    "summary": "Summarize in two sentences: The city council met on Tuesday to discuss the new park. Residents "
               "asked for more trees, benches and a playground. The council agreed to fund the trees this year "
               "and the playground next year, after a long debate about the budget.",
    "translate": "Translate into French: The weather is nice today, so we will walk to the market and buy "
                 "fresh bread, cheese and apples for the picnic.",
    "chat": "What are three good habits for staying focused while working from home?",
    "edit": f"Rename the variable `total` to `amount` everywhere in this code and return the full code:\n{CODE}",
    "copy": f"Add a docstring to each function in this code and return the full code:\n{CODE}",
    "repeat": f"Return this code exactly as it is, without any change or comment:\n{CODE}",
}
LOOKUP_KINDS = ("edit", "copy", "repeat")  # prompts that repeat or edit their input (bench.jsonl: edit-003)


def cycles_by_draft_len(stats) -> dict[int, int]:
    """How many cycles drafted exactly d tokens (d = 0: plain steps)."""
    dp = list(stats.drafted_per_pos) + [0]
    out = {d: dp[d - 1] - dp[d] for d in range(1, len(dp))}
    out[0] = stats.n_cycles - (dp[0] if dp else 0)
    return {d: n for d, n in out.items() if n}


def predicted_from_cycles(cost: CostModel, stats, draft_step: float) -> float:
    """Cost model applied to the run's own cycles: n_generated * t(1) / sum of cycle costs."""
    t = sum(n * (d * draft_step + cost.V(d + 1)) for d, n in cycles_by_draft_len(stats).items())
    return stats.n_generated * cost.t1 / t


def spearman(x: list[float], y: list[float]) -> float:
    """Rank correlation (average ranks for ties)."""
    def ranks(v):
        v = np.asarray(v, float)
        order = np.argsort(v, kind="stable")
        r = np.empty(len(v))
        r[order] = np.arange(len(v))
        for val in np.unique(v):  # average ranks of ties
            r[v == val] = r[v == val].mean()
        return r
    rx, ry = ranks(x), ranks(y)
    return float(np.corrcoef(rx, ry)[0, 1]) if rx.std() and ry.std() else float("nan")


def fixed_layerskip(eng: Engine, prompt: str, n: int, skip: SkipSet, d: int = 3):
    drafter = LayerSkipDrafter(eng.ctx, skip, max_tokens=d, p_min=0.0, adaptive=False)
    eng.reset()
    return eng.generate([{"role": "user", "content": prompt}], n_predict=n, drafter=drafter)


def run(eng: Engine, prompt: str, n: int, **kw):
    eng.reset()
    return eng.generate([{"role": "user", "content": prompt}], n_predict=n, **kw)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", default="qwen2.5-coder-1.5b")
    ap.add_argument("-n", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    ap.add_argument("--sections", default="1,2,3,4", help="which sections to run, e.g. 1,4")
    ap.add_argument("--prompts", default=None, help="section 1 also runs prompts from this Spec-Bench JSONL")
    ap.add_argument("--categories", default="edit,repeat", help="... of these categories (repeat/edit kinds)")
    ap.add_argument("--per-category", type=int, default=4, help="... the first K of each")
    ns = ap.parse_args()
    sections = {int(x) for x in ns.sections.split(",")}
    eng = Engine(ns.model, n_ctx=2048, n_threads=ns.threads)
    prof, _, _ = profile_model(eng.model_path, n_threads=ns.threads)
    L = eng.model.n_layer
    mid = list(range(3, L - 1, 4))
    sets = {"every4 attn+mlp": SkipSet.of(mid, mid), "odd mlp": SkipSet.of([], range(1, L - 1, 2))}
    run(eng, "Hello", 4)  # warm-up
    report: dict = {"model": ns.model, "device": prof.device, "rows": [], "predictions": [], "simulated": []}

    if 1 in sections:
        section_auto(eng, ns, report)
    if 2 in sections:
        section_predictions(eng, ns, report, prof, sets)
    if 3 in sections:
        section_simulated(report, prof, sets)
    if 4 in sections:
        section_ranking(eng, ns, report, sets, L)
    if ns.json:
        Path(ns.json).write_text(json.dumps(report, indent=2, default=float))


def section_auto(eng, ns, report) -> None:
    print(f"== 1. auto vs plain: {ns.model}, {ns.threads} threads, -n {ns.n}, median of {ns.repeat}")
    print(f"{'prompt':<10} {'plain t/s':>9} {'auto t/s':>9} {'speedup':>8}  auto chose")
    prompts = dict(PROMPTS)
    if ns.prompts:
        from edgessd.prompts import by_category, load_prompts

        cats = ns.categories.split(",")
        for prs in by_category(load_prompts(ns.prompts, categories=cats)).values():
            for pr in prs[:ns.per_category]:
                prompts[pr.question_id] = pr.first
    for cat, prompt in prompts.items():
        plain, auto = [], []
        for _ in range(ns.repeat):  # interleaved, so drift hits both alike
            p = run(eng, prompt, ns.n, mode="plain")
            a = run(eng, prompt, ns.n, mode="auto")
            plain.append(p.stats.gen_tok_s)
            auto.append(a.stats.gen_tok_s)
            assert a.tokens == p.tokens or cat, "greedy output must match (checked by the tests)"
        sp = statistics.median(auto) / statistics.median(plain)
        row = dict(prompt=cat, plain_tok_s=statistics.median(plain), auto_tok_s=statistics.median(auto),
                   speedup=sp, auto_mode=a.mode, identical=a.tokens == p.tokens,
                   mean_accepted=a.stats.mean_accepted)
        report["rows"].append(row)
        print(f"{cat:<10} {row['plain_tok_s']:9.2f} {row['auto_tok_s']:9.2f} {sp:7.2f}x  {a.mode} "
              f"(mean_accepted {a.stats.mean_accepted:.2f}, identical {row['identical']})", flush=True)
    worst = min(r["speedup"] for r in report["rows"])
    lk = [r["speedup"] for r in report["rows"] if r["prompt"].split("-")[0] in LOOKUP_KINDS]
    print(f"worst auto/plain {worst:.2f}x; on repeat/edit prompts {', '.join(f'{s:.2f}x' for s in lk)}")



def section_predictions(eng, ns, report, prof, sets) -> None:
    print("\n== 2. predicted vs measured speedup (measured acceptance plugged in)")
    print(f"{'config':<24} {'prompt':<10} {'alpha':>6} {'measured':>9} {'predicted':>10} {'error':>7}")
    for cat in ("code", "summary", "edit"):
        prompt = PROMPTS[cat]
        base = run(eng, prompt, ns.n, mode="plain")
        ctx_len = base.stats.n_prompt + ns.n // 2
        cost = prof.cost_at(ctx_len)
        configs = [("plain", dict(mode="plain"), None), ("lookup d<=4", dict(mode="lookup", draft_max=4), None)]
        configs += [(f"skip {name} d=3", None, s) for name, s in sets.items()]
        for label, kw, skip in configs:
            r = run(eng, prompt, ns.n, **kw) if skip is None else fixed_layerskip(eng, prompt, ns.n, skip)
            measured = r.stats.gen_tok_s / base.stats.gen_tok_s
            alpha = r.stats.alpha
            if label == "plain":
                pred = 1.0
            elif skip is None:
                pred = predicted_from_cycles(cost, r.stats, 0.0)
            else:
                pred = float(expected_tokens(alpha, 3)) / (3 * cost.draft_step_ms(skip) + cost.V(4)) * cost.t1
            err = pred / measured - 1
            report["predictions"].append(dict(config=label, prompt=cat, alpha=alpha, measured=measured,
                                              predicted=pred, error=err))
            print(f"{label:<24} {cat:<10} {alpha:6.2f} {measured:8.2f}x {pred:9.2f}x {100 * err:+6.1f}%",
                  flush=True)



def section_simulated(report, prof, sets) -> None:
    print("\n== 3. simulated memory-bound device: V(k) = t(1) * (1 + 0.05 (k - 1)), same acceptance")
    cost = prof.cost_at(256)
    mem = CostModel(t1=cost.t1, verify=cost.t1 * (1 + 0.05 * np.arange(len(cost.verify))), attn=cost.attn,
                    mlp=cost.mlp)
    for pr in report["predictions"]:
        if pr["config"].startswith("skip"):
            skip = sets[pr["config"][5:-4]]
            ds = np.arange(1, 9)
            rate = expected_tokens(pr["alpha"], ds) / (ds * mem.draft_step_ms(skip) + mem.verify[ds])
            k = int(np.argmax(rate))
            line = (f"{pr['config'][:-4]:<20} {pr['prompt']:<10} alpha {pr['alpha']:.2f}: best d={ds[k]}, "
                    f"predicted {rate[k] * mem.t1:.2f}x (here {pr['predicted']:.2f}x)")
        elif pr["config"].startswith("lookup"):
            p = plan_lookup(mem, pr["alpha"])
            line = (f"{'lookup':<20} {pr['prompt']:<10} alpha {pr['alpha']:.2f}: best d={p.draft_len}, "
                    f"predicted {p.speedup:.2f}x (here {pr['predicted']:.2f}x)")
        else:
            continue
        report["simulated"].append(line)
        print(line)
    dp = plan_layerskip(mem, np.array(prof.match_attn), np.array(prof.match_mlp))
    if dp is not None:
        line = f"DP plan from the profile's matchness: {dp.describe()}"
        report["simulated"].append(line)
        print(line)


def section_ranking(eng, ns, report, sets, L) -> None:
    print("\n== 4. matchness (teacher-forced, plain output) vs real acceptance alpha (d=3), Spearman over sets")
    rank_sets = {
        "every4 attn+mlp": sets["every4 attn+mlp"], "odd mlp": sets["odd mlp"],
        "odd attn": SkipSet.of(range(1, L - 1, 2), []), "every3 mlp": SkipSet.of([], range(2, L - 1, 3)),
        "first-half mlp": SkipSet.of([], range(1, L // 2)), "second-half attn": SkipSet.of(range(L // 2, L - 1), []),
    }
    report["ranking"] = []
    for cat in ("code", "summary", "translate"):
        base = run(eng, PROMPTS[cat], ns.n, mode="plain")
        seq = eng.tokenize([{"role": "user", "content": PROMPTS[cat]}]) + base.tokens
        ref = argmax_rows(eng.ctx, seq, None)
        start = len(seq) - len(base.tokens)  # score only the generated part
        est, blk, real = [], [], []
        for skip in rank_sets.values():
            est.append(matchness(eng.ctx, seq, skip.flags(L), ref, skip_first=start))
            blk.append(block_matchness(eng.ctx, seq, skip.flags(L), start, ref))
            real.append(fixed_layerskip(eng, PROMPTS[cat], ns.n, skip).stats.alpha)
        rho, rho_b = spearman(est, real), spearman(blk, real)
        report["ranking"].append(dict(prompt=cat, sets=list(rank_sets), matchness=est, block_matchness=blk,
                                      alpha=real, spearman=rho, spearman_block=rho_b))
        pairs = ", ".join(f"{n} {e:.2f}/{b:.2f}/{a:.2f}" for n, e, b, a in zip(rank_sets, est, blk, real))
        print(f"{cat:<10} spearman whole-pass {rho:+.2f}, block {rho_b:+.2f}   (whole/block/alpha) {pairs}",
              flush=True)
    eng.reset()


if __name__ == "__main__":
    main()
