#!/usr/bin/env python3
"""Where a process's memory goes, edgessd's CPU kernels against ggml's stock ones, same build.

    python bench/peak_memory.py gemma3-270m -t 2

One worker process per kernel choice (``EDGESSD_CPU_KERNELS`` is read once per process) runs
the same steps: load the model, make a context, decode 1 token, then 16 with logits for every
row, prefill 512, refill 200 and verify k = 1..16 at 200, then check a 16-token batch against
16 one-token decodes (``edgessd.batchcheck``); then the same two at 1000. After each step it
records the resident set (VmRSS) and the peak so far (ru_maxrss), in MB. verify_cost.py reports only the last peak,
which also holds Python's logits arrays: 16 rows of gemma3's 262k vocabulary are 17 MB.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _mb() -> tuple[float, float]:
    """(resident now, peak so far) in MB"""
    with open("/proc/self/status") as f:
        now = next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024
    return now, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(model: str, threads: int) -> dict:
    import numpy as np

    from edgessd import registry
    from edgessd._capi import Context, Model, cpu_kernels
    from edgessd.batchcheck import batch_and_single_logits

    steps: dict[str, tuple[float, float]] = {}
    m = Model(registry.resolve(model))
    steps["load"] = _mb()
    ctx = Context(m, n_ctx=1032, n_batch=512, n_threads=threads)
    steps["context"] = _mb()
    toks = [int(t) for t in np.random.default_rng(0).integers(100, min(m.n_vocab, 30000), size=1100)]
    ctx.decode(toks[:1], 0, all_logits=True)
    steps["decode 1"] = _mb()
    ctx.decode(toks[1:17], 1, all_logits=True)
    steps["decode 16"] = _mb()
    ctx.kv_clear()
    ctx.decode(toks[:512], 0)
    steps["pp512"] = _mb()
    for pos, at in ((200, ""), (1000, " at 1000")):
        ctx.kv_clear()
        for p0 in range(0, pos, 512):
            ctx.decode(toks[p0:min(p0 + 512, pos)], p0)
        draft = toks[pos:pos + 16]
        for k in range(1, 17):
            ctx.decode(draft[:k], pos, all_logits=True)
            ctx.kv_remove(pos)
        steps["verify k=1..16" + at] = _mb()
        batch_and_single_logits(ctx, pos, draft)
        steps["batch check" + at] = _mb()
    return {"kernels": cpu_kernels(), "steps": steps}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ns = ap.parse_args()
    if ns.worker:
        print(json.dumps(worker(ns.model, ns.threads)))
        return 0
    runs = {}
    for mode in ("stock", "auto"):
        cmd = [sys.executable, __file__, ns.model, "-t", str(ns.threads), "--worker"]
        r = subprocess.run(cmd, env=dict(os.environ, EDGESSD_CPU_KERNELS=mode), capture_output=True, text=True,
                           timeout=1800)
        if r.returncode != 0:
            raise SystemExit(f"worker ({mode}) failed with {r.returncode}:\n{r.stderr[-2000:]}")
        runs[mode] = json.loads(r.stdout.strip().splitlines()[-1])
    ours = runs["auto"]["kernels"]
    print(f"# Memory by step: {ns.model}, {ns.threads} threads, MB resident / peak so far\n")
    print(f"| step | stock | edgessd {ours} | peak, edgessd / stock |\n|---|---|---|---|")
    for step, (now, peak) in runs["stock"]["steps"].items():
        o_now, o_peak = runs["auto"]["steps"][step]
        print(f"| {step} | {now:.0f} / {peak:.0f} | {o_now:.0f} / {o_peak:.0f} | {o_peak / peak:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
