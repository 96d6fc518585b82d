#!/usr/bin/env python3
"""The GPU subset of edgessd's checks, with the model offloaded: skip masks, lossless greedy
output, graph lanes, and whether CUDA graphs are captured once or again per cycle.

    python bench/gpu/gpu_checks.py [MODEL] [-ngl 99] [--json OUT.json]

What each check settles (on a CPU build the same code runs, and CUDA-graph counts are 0):
  skip_masks     a mask changes the logits; clearing it gives back the unmasked logits exactly
  lossless       greedy output of lookup, layer skip and auto equals plain decoding's, token
                 for token (on a GPU a batch may take other kernels than a single token)
  lanes          graph reuses per draft/verify cycle: d masked drafts and a (d+1)-token
                 verification reuse their lanes' graphs (d + 1 of d + 1 after warm-up)
  cuda_graphs    ggml-cuda's own log lines, counted per phase: a capture is "CUDA graph warmup
                 complete", a replay without re-checking "CUDA Graph id N reused", a graph
                 whose properties changed "warmup reset" (it then runs uncaptured). Phases:
                 steady cycles with one mask and one d; a switch to another mask and back;
                 cycles whose d alternates. Each lane keeps its own captured graphs (they are
                 keyed by the address of their first node, and each lane's nodes live in its
                 own graph result); a mask switch rebuilds the masked lane's graph in place,
                 so it is captured again; a new verification length does the same in lane 0.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

os.environ.setdefault("EDGESSD_VERBOSE", "1")  # llama.cpp's and ggml's log lines reach fd 2: counted below
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np  # noqa: E402

from edgessd import device, registry  # noqa: E402
from edgessd._capi import Context, Model  # noqa: E402
from edgessd.engine import Engine  # noqa: E402
from edgessd.skipset import SKIP_ATTN, SKIP_FFN  # noqa: E402

PROMPT = ("Write a Python function that parses a CSV file of transactions, groups them by month, "
          "and prints the total amount per month, sorted by date. Explain each step briefly. ")
LOSSLESS_PROMPTS = ["def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
                    "Rewrite this sentence in the passive voice: The cat chased the mouse across the garden.",
                    "List the first ten prime numbers, separated by commas: 2, 3, 5,"]
MARKS = {"captures": "CUDA graph warmup complete", "replays": "CUDA Graph id", "resets": "CUDA graph warmup reset"}


@contextlib.contextmanager
def stderr_to(log: list[str]) -> Iterator[None]:
    """Collect what is written to fd 2 (llama.cpp's log callback writes there) into ``log``."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as f:
        os.dup2(f.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            f.seek(0)
            log.append(f.read().decode("utf-8", "replace"))


def count(text: str) -> dict[str, int]:
    return {k: sum(1 for line in text.splitlines() if m in line) for k, m in MARKS.items()}


def check_skip_masks(ctx: Context, model: Model, toks: list[int]) -> dict:
    pos = len(toks)
    ctx.decode(toks, 0)
    tok = int(np.argmax(ctx.logits()[0]))

    def step(mask) -> np.ndarray:
        ctx.set_skip(mask)
        ctx.decode([tok], pos)
        out = ctx.logits()[0].copy()
        ctx.kv_remove(pos)
        return out

    full = step(None)
    mask = model.skip_flags()
    mask[1:-1:2] = SKIP_ATTN | SKIP_FFN
    masked = step(mask)
    again = step(None)
    return {"mask_changes_logits": bool(np.any(masked != full)), "unmask_restores_exactly": bool(np.array_equal(again, full)),
            "max_abs_diff_masked": float(np.max(np.abs(masked - full)))}


def cycles(ctx: Context, tok: int, pos: int, mask, ds: list[int]) -> None:
    """Draft/verify cycles: d one-token decodes under ``mask``, then a (d+1)-token verification, per d."""
    for d in ds:
        with ctx.skipping(mask):
            for i in range(d):
                ctx.decode([tok], pos + i)
        ctx.kv_remove(pos)
        ctx.decode([tok] * (d + 1), pos, all_logits=True)
        ctx.kv_remove(pos)


def check_lanes_and_graphs(ctx: Context, model: Model, toks: list[int]) -> dict:
    ctx.kv_clear()
    ctx.decode(toks, 0)
    tok, pos = int(np.argmax(ctx.logits()[0])), len(toks)
    a, b = model.skip_flags(), model.skip_flags()
    a[1:-1:2] = SKIP_ATTN | SKIP_FFN
    b[2:-1:2] = SKIP_ATTN | SKIP_FFN
    phases = {"warm-up (mask A, d=3)": (a, [3, 3]), "steady (mask A, d=3)": (a, [3] * 8),
              "switch to mask B (d=3)": (b, [3] * 3), "back to mask A (d=3)": (a, [3] * 3),
              "d alternating 3,4 (mask A)": (a, [3, 4] * 4)}
    out = {}
    for name, (mask, ds) in phases.items():
        log: list[str] = []
        before = ctx.perf()["n_reused"]
        with stderr_to(log):
            cycles(ctx, tok, pos, mask, ds)
        c = count(log[0])
        out[name] = {"cycles": len(ds), "graph_reuses_per_cycle": (ctx.perf()["n_reused"] - before) / len(ds),
                     "decodes_per_cycle": float(np.mean([d + 1 for d in ds])),
                     **{f"cuda_{k}_per_cycle": v / len(ds) for k, v in c.items()}}
    return out


def check_lossless(path: Path, ngl: int, n: int) -> dict:
    skip = "attn:5,9,13,17,21;mlp:5,9,13,17,21"
    rows = []
    with Engine(path, n_ctx=1024, n_gpu_layers=ngl) as eng:
        for p in LOSSLESS_PROMPTS:
            ref = eng.generate(p, n_predict=n, mode="plain").tokens
            row = {"prompt": p[:40]}
            for mode, kw in (("lookup", {}), ("layerskip", {"skip": skip}), ("auto", {})):
                got = eng.generate(p, n_predict=n, mode=mode, **kw).tokens
                same = list(got) == list(ref)
                first = next((i for i, (x, y) in enumerate(zip(got, ref)) if x != y), None if same else min(len(got), len(ref)))
                row[mode] = {"identical": same, "first_diff": first}
            rows.append(row)
    return {"n_predict": n, "rows": rows,
            "all_identical": all(r[m]["identical"] for r in rows for m in ("lookup", "layerskip", "auto"))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", default="smollm2-135m")
    ap.add_argument("-ngl", "--n-gpu-layers", type=int, default=99)
    ap.add_argument("-n", "--n-predict", type=int, default=48)
    ap.add_argument("--json", type=Path)
    ns = ap.parse_args(argv)
    path = registry.resolve(ns.model)
    log: list[str] = []
    with stderr_to(log):  # the load's log lines
        model = Model(path, n_gpu_layers=ns.n_gpu_layers)
        ctx = Context(model, n_ctx=512, n_batch=64)
    toks = model.tokenize(PROMPT)
    result = {"model": path.name, "n_gpu_layers": ns.n_gpu_layers, "device": device.fingerprint(ctx.n_threads, ns.n_gpu_layers),
              "offloaded": next((line.strip() for line in log[0].splitlines() if "offloaded" in line), None),
              "skip_masks": check_skip_masks(ctx, model, toks),
              "lanes_and_cuda_graphs": check_lanes_and_graphs(ctx, model, toks)}
    ctx.close()
    model.close()
    result["lossless"] = check_lossless(path, ns.n_gpu_layers, ns.n_predict)
    text = json.dumps(result, indent=2)
    print(text)
    if ns.json:
        ns.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
