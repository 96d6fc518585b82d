"""What does switching the skip mask between draft and verify cost?

    python bench/mask_switch.py [MODEL ...] [--threads 2] [--reps 40]

For each model it measures, at a context of ~100 tokens:
  decode   a plain 1-token decode (graph reused)
  rebuild  1-token decodes alternating two equally costly masks, minus the same with one
           mask: what one graph rebuild costs, and its share of a plain decode
and, for real cycles (d=3 one-token decodes, then a 4-token verification), the graph
reuses per cycle (at most 4) and the time per cycle, with the drafts under a skip mask
and with unmasked one-token steps (lookup drafting's shape). Run it once with the wheel
with EDGESSD_NO_GRAPH_LANES=1 (the patch's lanes off) and once without, to compare.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from edgessd import registry  # noqa: E402
from edgessd._capi import Context, Model  # noqa: E402
from edgessd.skipset import SKIP_ATTN, SKIP_FFN  # noqa: E402

PROMPT = ("Write a Python function that parses a CSV file of transactions, groups them by month, "
          "and prints the total amount per month, sorted by date. Explain each step briefly. ") * 2


def timed_steps(ctx: Context, tok: int, pos: int, masks: list[np.ndarray | None], reps: int) -> list[float]:
    times = []
    for i in range(reps):
        ctx.set_skip(masks[i % len(masks)])
        t0 = time.perf_counter()
        ctx.decode([tok], pos)
        times.append((time.perf_counter() - t0) * 1e3)
        ctx.kv_remove(pos)
    ctx.set_skip(None)
    return times[2:]  # drop warm-up


def cycle(ctx: Context, tok: int, pos: int, mask: np.ndarray | None, cycles: int, d: int = 3) -> tuple[float, float]:
    """Draft/verify cycles: d one-token decodes under ``mask``, then a (d+1)-token verification.

    With mask None this is the shape of lookup drafting's plain steps around verifications.
    Returns (graph reuses per cycle, ms per cycle), after one warm-up cycle.
    """
    def run(n: int) -> None:
        for _ in range(n):
            with ctx.skipping(mask):
                for i in range(d):
                    ctx.decode([tok], pos + i)
            ctx.kv_remove(pos)
            ctx.decode([tok] * (d + 1), pos, all_logits=True)
            ctx.kv_remove(pos)

    run(1)
    before = ctx.perf()["n_reused"]
    t0 = time.perf_counter()
    run(cycles)
    ms = (time.perf_counter() - t0) * 1e3 / cycles
    return (ctx.perf()["n_reused"] - before) / cycles, ms


def measure(name: str, threads: int, reps: int, cycles: int) -> dict:
    model = Model(registry.resolve(name))
    ctx = Context(model, n_ctx=512, n_batch=64, n_threads=threads)
    toks = model.tokenize(PROMPT)
    ctx.decode(toks, 0)
    tok, pos = int(np.argmax(ctx.logits()[0])), len(toks)
    mask = model.skip_flags()
    mask[1:-1:2] = SKIP_ATTN | SKIP_FFN
    # rebuild cost: alternate two masks of equal cost (both in the masked lane), against one mask
    a = model.skip_flags()
    a[model.n_layer // 2] = SKIP_FFN
    b = model.skip_flags()
    b[model.n_layer // 2 + 1] = SKIP_FFN
    plain, same_a, alt_ab = [], [], []
    for _ in range(3):  # interleaved rounds: drift on a busy machine hits all alike
        plain += timed_steps(ctx, tok, pos, [None], reps)
        same_a += timed_steps(ctx, tok, pos, [a], reps)
        alt_ab += timed_steps(ctx, tok, pos, [a, b], reps)
    t_reuse, t_switch = statistics.median(same_a), statistics.median(alt_ab)
    rounds_m, rounds_p = [], []
    for _ in range(5):  # best of interleaved rounds
        rounds_m.append(cycle(ctx, tok, pos, mask, cycles))
        rounds_p.append(cycle(ctx, tok, pos, None, cycles))
    reuse_m, ms_m = rounds_m[0][0], min(ms for _, ms in rounds_m)
    reuse_p, ms_p = rounds_p[0][0], min(ms for _, ms in rounds_p)
    out = {
        "model": name, "n_layer": model.n_layer, "ctx_tokens": pos,
        "t_decode_ms": statistics.median(plain),
        "t_reuse_ms": t_reuse, "t_switch_ms": t_switch,
        "rebuild_ms": t_switch - t_reuse, "rebuild_pct": 100 * (t_switch - t_reuse) / statistics.median(plain),
        "reuses_per_cycle_masked": reuse_m, "ms_per_cycle_masked": ms_m,
        "reuses_per_cycle_unmasked": reuse_p, "ms_per_cycle_unmasked": ms_p,
    }
    ctx.close()
    model.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", default=["smollm2-135m", "qwen2.5-coder-1.5b"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=40)
    ap.add_argument("--cycles", type=int, default=8)
    ns = ap.parse_args()
    print(f"{'model':<20} {'decode':>9} {'rebuild':>9} {'share':>6}   reuses/cycle (of 4) and ms/cycle: "
          "masked drafts | unmasked 1-token steps")
    for name in ns.models:
        r = measure(name, ns.threads, ns.reps, ns.cycles)
        print(f"{r['model']:<20} {r['t_decode_ms']:7.2f}ms {r['rebuild_ms']:7.3f}ms {r['rebuild_pct']:5.1f}%   "
              f"{r['reuses_per_cycle_masked']:.1f} {r['ms_per_cycle_masked']:7.2f}ms | "
              f"{r['reuses_per_cycle_unmasked']:.1f} {r['ms_per_cycle_unmasked']:7.2f}ms", flush=True)


if __name__ == "__main__":
    main()
