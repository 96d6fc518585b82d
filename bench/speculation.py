"""Plain vs lookup vs layer-skip drafting, measured in one process on the same prompts.

    python bench/speculation.py [MODEL] [-n 64] [--threads 2] [--json OUT]

Greedy, same build, same threads, same prompts, all in one run. For each prompt and
method it prints generated tok/s, the speedup over plain decoding measured in this run,
mean_accepted (accepted drafts per cycle, excluding the bonus token), the acceptance
rate, whether the text is token-identical to plain's, and the Python overhead per cycle
(wall time of the generation minus the time inside llama_decode, per cycle), beside a
single-token decode's time.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edgessd.engine import Engine  # noqa: E402
from edgessd.skipset import SkipSet  # noqa: E402

PROMPTS = {
    "code": "Write a Python function that checks whether a string is a palindrome, ignoring case and punctuation.",
    "math": "A shop sells pens at 3 dollars each and notebooks at 5 dollars each. Tom buys 4 pens and "
            "3 notebooks. How much does he pay? Explain.",
    "edit": "Rename the variable `total` to `amount` in this code and return the full code:\n"
            "def add(items):\n    total = 0\n    for x in items:\n        total += x\n    return total\n\n"
            "def mean(items):\n    total = add(items)\n    return total / len(items)\n",
    "summary": "Summarize in two sentences: The city council met on Tuesday to discuss the new park. Residents "
               "asked for more trees, benches and a playground. The council agreed to fund the trees this year "
               "and the playground next year.",
}


def methods(n_layer: int) -> list[tuple[str, str, SkipSet | None, int]]:
    every4 = list(range(3, n_layer - 1, 4))
    odd = list(range(1, n_layer - 1, 2))
    return [
        ("plain", "plain", None, 1),
        ("lookup", "lookup", None, 4),
        ("skip every4 attn+mlp d=3", "layerskip", SkipSet.of(every4, every4), 3),
        ("skip odd mlp d=3", "layerskip", SkipSet.of([], odd), 3),
        ("skip odd attn d=3", "layerskip", SkipSet.of(odd, []), 3),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", default="qwen2.5-coder-1.5b")
    ap.add_argument("-n", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    ns = ap.parse_args()
    eng = Engine(ns.model, n_ctx=2048, n_threads=ns.threads)
    eng.generate("Hello", n_predict=4)  # warm-up
    rows = []
    print(f"model {ns.model}, {ns.threads} threads, greedy, -n {ns.n}")
    print(f"{'prompt':<8} {'method':<26} {'tok/s':>7} {'speedup':>8} {'mean_acc':>8} {'accept':>7} "
          f"{'same':>5} {'ovh/cyc':>8} {'t(1)':>7}")
    for cat, prompt in PROMPTS.items():
        plain = None
        for label, mode, skip, d in methods(eng.model.n_layer):
            eng.reset()
            t_dec0 = eng.ctx.t_decode_ms
            r = eng.generate([{"role": "user", "content": prompt}], n_predict=ns.n, mode=mode, skip=skip, draft_max=d)
            s = r.stats
            t_dec = eng.ctx.t_decode_ms - t_dec0
            # the prefill's decode time is part of t_decode but not of t_gen
            overhead = (s.t_gen_ms - (t_dec - s.t_prompt_ms)) / max(s.n_cycles, 1)
            if mode == "plain":
                plain = r
                t1 = s.t_verify_ms / max(s.n_cycles, 1)
            row = dict(prompt=cat, method=label, gen_tok_s=s.gen_tok_s, speedup=s.gen_tok_s / plain.stats.gen_tok_s,
                       mean_accepted=s.mean_accepted, acceptance=s.acceptance_rate,
                       identical=r.tokens == plain.tokens, overhead_ms_per_cycle=overhead, t1_ms=t1,
                       n_generated=s.n_generated)
            rows.append(row)
            print(f"{cat:<8} {label:<26} {s.gen_tok_s:7.2f} {row['speedup']:7.2f}x {s.mean_accepted:8.2f} "
                  f"{100 * s.acceptance_rate:6.0f}% {str(row['identical']):>5} {overhead:7.2f}ms {t1:6.1f}ms",
                  flush=True)
    print("\nmean over prompts")
    for label, *_ in methods(eng.model.n_layer):
        sel = [r for r in rows if r["method"] == label]
        print(f"  {label:<26} speedup {statistics.mean(r['speedup'] for r in sel):.2f}x  "
              f"mean_accepted {statistics.mean(r['mean_accepted'] for r in sel):.2f}  "
              f"overhead/cycle {statistics.mean(r['overhead_ms_per_cycle'] for r in sel):.2f}ms "
              f"({100 * statistics.mean(r['overhead_ms_per_cycle'] / r['t1_ms'] for r in sel):.1f}% of t(1))")
    if ns.json:
        Path(ns.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
