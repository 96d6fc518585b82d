#!/usr/bin/env python3
"""What a verification batch costs: edgessd's CPU kernels against ggml's stock ones, same build.

    python bench/verify_cost.py qwen2.5-coder-1.5b -t 2 --ctx 200,1000 --rounds 3 \
        --json bench/results/verify-cost-qwen2.5-coder-1.5b.json --md bench/results/verify-cost-qwen2.5-coder-1.5b.md

For each round it starts one worker process per kernel choice (``EDGESSD_CPU_KERNELS`` is
read once per process), alternating which goes first, so both are measured minutes apart on
the same machine. A worker loads the model, fills the context to each length with random
tokens, then times ``llama_decode`` of k = 1..16 distinct tokens with logits for every row
(what verification pays), the mean of ``--reps`` runs after one warm-up; then pp512 (one
512-token batch) and the process's peak RSS. The report gives V(k) / t(1) against stock's
t(1), medians over rounds, and checks that each batch's logits equal one-token decodes.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

KS = list(range(1, 17))


def worker(model: str, threads: int, ctxs: list[int], reps: int) -> dict:
    import numpy as np

    from edgessd import registry
    from edgessd._capi import Context, Model, cpu_kernels
    from edgessd.batchcheck import batch_and_single_logits, differing_rows

    m = Model(registry.resolve(model))
    n_ctx = max(max(ctxs) + 32, 600)
    ctx = Context(m, n_ctx=n_ctx, n_batch=512, n_threads=threads)
    rng = np.random.default_rng(0)
    toks = [int(t) for t in rng.integers(100, min(m.n_vocab, 30000), size=n_ctx)]
    out: dict = {"kernels": cpu_kernels(), "v_ms": {}, "exact": {}}
    for c in ctxs:
        ctx.kv_clear()
        ctx.decode(toks[:c], 0)
        for _ in range(4):  # settle first: edgessd re-lays Q4_K out on its first small batch
            ctx.decode(toks[c:c + 1], c, all_logits=True)
            ctx.kv_remove(c)
        row: dict[int, float] = {}
        exact = True
        for k in KS:
            batch = toks[c:c + k]
            ctx.decode(batch, c, all_logits=True)  # warm-up
            ctx.kv_remove(c)
            ts = []
            for _ in range(reps):
                t0 = time.perf_counter()
                ctx.decode(batch, c, all_logits=True)
                ts.append((time.perf_counter() - t0) * 1e3)
                ctx.kv_remove(c)
            if k > 1:
                exact = exact and not differing_rows(*batch_and_single_logits(ctx, c, batch))
            row[k] = statistics.fmean(ts)
        out["v_ms"][c] = row
        out["exact"][c] = exact
    ctx.kv_clear()
    ctx.decode(toks[:512], 0)  # warm-up
    pp = []
    for _ in range(2):
        ctx.kv_clear()
        t0 = time.perf_counter()
        ctx.decode(toks[:512], 0)
        pp.append((time.perf_counter() - t0) * 1e3)
    out["pp512_tok_s"] = 512 / (min(pp) / 1e3)
    out["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def run_worker(mode: str, ns: argparse.Namespace) -> dict:
    env = dict(os.environ, EDGESSD_CPU_KERNELS=mode)
    cmd = [sys.executable, __file__, ns.model, "-t", str(ns.threads), "--ctx", ns.ctx, "--reps", str(ns.reps),
           "--worker"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
    if r.returncode != 0:
        raise SystemExit(f"worker ({mode}) failed with {r.returncode}:\n{r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def med(xs: list[float]) -> float:
    return statistics.median(xs)


def report(ns: argparse.Namespace, runs: dict[str, list[dict]], ctxs: list[int]) -> tuple[str, dict]:
    from edgessd.device import fingerprint

    lines = [f"# Verification cost: edgessd kernels vs stock, {ns.model}, {ns.threads} threads", "",
             f"`{' '.join(['python', 'bench/verify_cost.py'] + sys.argv[1:])}`", "",
             f"device: {json.dumps(fingerprint(ns.threads))}; kernels: {runs['auto'][0]['kernels']} vs stock; "
             f"{ns.rounds} rounds, medians; each figure the mean of {ns.reps} runs after a warm-up; "
             "V(k) is one llama_decode of k tokens with logits for every row, relative to stock's t(1)", ""]
    summary: dict = {"model": ns.model, "threads": ns.threads, "rounds": ns.rounds, "ctx": {}}
    for c in ctxs:
        t1s = med([r["v_ms"][str(c)]["1"] for r in runs["stock"]])
        lines += [f"## context {c}", "",
                  "| kernels | t(1) ms | " + " | ".join(f"V({k})" for k in KS) + " | batch == single steps |",
                  "|---|---|" + "---|" * len(KS) + "---|"]
        summary["ctx"][c] = {}
        for mode in ("stock", "auto"):
            v = {k: med([r["v_ms"][str(c)][str(k)] for r in runs[mode]]) for k in KS}
            exact = all(r["exact"][str(c)] for r in runs[mode])
            name = runs[mode][0]["kernels"]
            lines.append(f"| {name} | {v[1]:.1f} | " + " | ".join(f"{v[k] / t1s:.2f}" for k in KS)
                         + f" | {'yes' if exact else 'no'} |")
            summary["ctx"][c][name] = {"t1_ms": v[1], "v_over_stock_t1": {k: v[k] / t1s for k in KS},
                                       "exact": exact}
        lines.append("")
    pp = {m: med([r["pp512_tok_s"] for r in runs[m]]) for m in runs}
    rss = {m: med([r["maxrss_mb"] for r in runs[m]]) for m in runs}
    lines += ["## prompt processing and memory", "", "| kernels | pp512 tok/s | peak RSS MB |", "|---|---|---|"]
    for m in ("stock", "auto"):
        lines.append(f"| {runs[m][0]['kernels']} | {pp[m]:.1f} | {rss[m]:.0f} |")
    summary["pp512_tok_s"] = {runs[m][0]["kernels"]: pp[m] for m in runs}
    summary["maxrss_mb"] = {runs[m][0]["kernels"]: rss[m] for m in runs}
    summary["runs"] = runs
    return "\n".join(lines) + "\n", summary


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("--ctx", default="200,1000", help="context lengths, comma-separated")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--kernels", default="auto", choices=["auto", "avx2", "avx512", "ref"],
                    help="edgessd's variant to compare with stock (default: the best this CPU runs)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--md", type=Path)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ns = ap.parse_args()
    ctxs = [int(x) for x in ns.ctx.split(",")]
    if ns.worker:
        print(json.dumps(worker(ns.model, ns.threads, ctxs, ns.reps)))
        return 0
    runs: dict[str, list[dict]] = {"stock": [], "auto": []}
    for i in range(ns.rounds):
        for mode in (("stock", "auto") if i % 2 == 0 else ("auto", "stock")):
            runs[mode].append(run_worker(ns.kernels if mode == "auto" else mode, ns))
            print(f"round {i + 1}/{ns.rounds} {mode}: t(1) {runs[mode][-1]['v_ms'][str(ctxs[0])]['1']:.1f} ms",
                  file=sys.stderr, flush=True)
    md, summary = report(ns, runs, ctxs)
    print(md)
    if ns.md:
        ns.md.write_text(md)
    if ns.json:
        ns.json.write_text(json.dumps(summary, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
