#!/usr/bin/env python3
"""What a JSON schema costs per token, and what speculation gains under one.

    python bench/constrained_cost.py qwen2.5-coder-0.5b -t 2 -n 64 [--json out.json]

For each schema (a chat prompt that quotes it, as an app asking for JSON does), greedy:
- plain unconstrained and plain under the schema: ms per generated token, and the
  constraint's own share (``stats.t_constraint_ms``: masks, cuts, rollbacks, the masked argmax);
- lookup and auto under the schema: tok/s against plain under the schema, drafts accepted
  per cycle, and whether the output is plain's, token for token.
Lookup drafts copy from the prompt, so they pay where the reply repeats the schema's keys
and enum values; the columns show where.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", nargs="?", default="qwen2.5-coder-0.5b")
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("-n", "--n-predict", type=int, default=64)
    ap.add_argument("--schemas", default="flat,enum,nested,array_of_objects",
                    help="names from tests/test_constrained_lossless.py SCHEMAS")
    ap.add_argument("--repeat", type=int, default=2, help="runs of each kind; ms/tok and speedups are medians")
    ap.add_argument("--json", help="write the rows here")
    args = ap.parse_args()

    from test_constrained_lossless import SCHEMAS, prompt

    from edgessd import Engine

    eng = Engine(args.model, n_ctx=2048, n_threads=args.threads)
    rows = []
    for name in args.schemas.split(","):
        msgs, schema = prompt(name), SCHEMAS[name]
        eng.generate(msgs, n_predict=4, mode="plain")  # warm: the prompt is cached for every run alike
        reps: list[dict] = []
        for _ in range(args.repeat):  # each repeat runs every kind, seconds apart
            runs = {"free": eng.generate(msgs, n_predict=args.n_predict, mode="plain")}
            runs.update({m: eng.generate(msgs, n_predict=args.n_predict, mode=m, json_schema=schema)
                         for m in ("plain", "lookup", "auto")})
            reps.append(runs)
        base = reps[0]["plain"]

        def med(f) -> float:
            return statistics.median(f(r) for r in reps)

        def per_tok(r, field="t_gen_ms") -> float:
            return getattr(r.stats, field) / max(r.stats.n_generated, 1)

        row = {"schema": name, "n_tokens": base.stats.n_generated,
               "free_ms_per_tok": med(lambda r: per_tok(r["free"])),
               "schema_ms_per_tok": med(lambda r: per_tok(r["plain"])),
               "constraint_ms_per_tok": med(lambda r: per_tok(r["plain"], "t_constraint_ms"))}
        for m in ("lookup", "auto"):
            row[f"{m}_speedup"] = med(lambda r, m=m: r[m].stats.gen_tok_s / r["plain"].stats.gen_tok_s)
            row[f"{m}_mean_accepted"] = reps[0][m].stats.mean_accepted
            row[f"{m}_identical"] = all(r[m].tokens == r["plain"].tokens for r in reps)
            row[f"{m}_mode"] = reps[0][m].mode
        rows.append(row)
        print(f"{name}: {base.text[:100]!r}", file=sys.stderr)
    print(f"model {args.model}, {args.threads} threads, -n {args.n_predict}, greedy")
    print("| schema | tokens | plain free ms/tok | plain schema ms/tok | constraint ms/tok | share | "
          "lookup x | lookup acc/cycle | auto x | auto acc/cycle | identical |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        share = r["constraint_ms_per_tok"] / r["schema_ms_per_tok"] if r["schema_ms_per_tok"] else 0.0
        same = "yes" if r["lookup_identical"] and r["auto_identical"] else "NO"
        print(f"| {r['schema']} | {r['n_tokens']} | {r['free_ms_per_tok']:.1f} | {r['schema_ms_per_tok']:.1f} | "
              f"{r['constraint_ms_per_tok']:.2f} | {share:.1%} | {r['lookup_speedup']:.2f} | "
              f"{r['lookup_mean_accepted']:.2f} | {r['auto_speedup']:.2f} ({r['auto_mode']}) | "
              f"{r['auto_mean_accepted']:.2f} | {same} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"model": args.model, "threads": args.threads,
                                               "n_predict": args.n_predict, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
