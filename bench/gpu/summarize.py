#!/usr/bin/env python3
"""Summarize a GPU run's results folder (call2.sh's $OUT/r) as one Markdown report.

    python bench/gpu/summarize.py RESULTS_DIR --out summary.md

Reports V(k)/t(1), the measured speedups on smollm2-135m, the PREDICTED speedups of the
stand-ins (random weights, real shapes; acceptance recorded on the CPU), the check of that
method on smollm2 (prediction against measurement, within ±10%), whether greedy output was
identical, and the CUDA-graph captures per cycle. Writes summary.json beside the report.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

STANDINS = ("smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b")
KS = (2, 4, 8, 16)
# replay.py's policy -> the bench method it predicts
PREDICTS = {"auto": "auto", "lookup d=4": "lookup"}


def load(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def v_ratios(prof: dict) -> dict:
    """V(k)/t(1) at the shortest context measured, for the k measured."""
    t1, v = prof["t1_ms"][0], prof["verify_ms"][0]
    return {"ctx": prof["ctx"][0], "t1_ms": t1, **{f"V({k})/t(1)": v[k - 1] / t1 for k in KS if k <= len(v)}}


def measured(bench: dict) -> dict:
    return {r["method"]: {"speedup": r["speedup"], "identical": r["identical"], "of": r["identical_of"],
                          "tok_s": r["tok_s_mean"]}
            for r in bench.get("summary", []) if r["category"] == "all"}


def summarize(rd: Path) -> dict:
    out: dict = {}
    prof = load(rd / "profile-smollm2-135m.json")
    if prof:
        out["device"] = prof["device"]
        out["smollm2_v"] = v_ratios(prof)
    out["standin_v"] = {m: v_ratios(p) for m in STANDINS if (p := load(rd / f"profile-standin-{m}.json"))}
    bench = load(rd / "bench-smollm2-135m.json")
    out["measured"] = measured(bench) if bench else {}
    out["predicted"] = {m: r["predicted_speedup"] for m in STANDINS if (r := load(rd / f"replay-{m}.json"))}
    check = {}
    for policy, method in PREDICTS.items():
        pred = out["predicted"].get("smollm2-135m", {}).get(policy)
        meas = out["measured"].get(method, {}).get("speedup")
        if pred is not None and meas:
            check[method] = {"predicted": pred, "measured": meas, "error": pred / meas - 1,
                             "within_10pct": abs(pred / meas - 1) <= 0.10}
    out["method_check_smollm2"] = check
    checks = load(rd / "checks.json")
    if checks:
        out["checks"] = {"skip_masks": checks["skip_masks"], "lossless_all_identical": checks["lossless"]["all_identical"],
                         "lanes_and_cuda_graphs": checks["lanes_and_cuda_graphs"]}
    return out


def markdown(s: dict) -> str:
    dev = s.get("device", {})
    lines = [f"# GPU run: {dev.get('gpu')} (backend {dev.get('backend')}, -ngl {dev.get('n_gpu_layers', 0)})", ""]
    rows = ([("smollm2-135m (real)", s["smollm2_v"])] if "smollm2_v" in s else []) + \
        [(f"{m} (stand-in)", v) for m, v in s["standin_v"].items()]
    if rows:
        ks = [k for k in rows[0][1] if k.startswith("V(")]
        lines += ["## V(k)/t(1)", "", "| model | ctx | t(1) ms | " + " | ".join(ks) + " |", "|---" * (3 + len(ks)) + "|"]
        lines += [f"| {n} | {v['ctx']} | {v['t1_ms']:.3f} | " + " | ".join(f"{v[k]:.2f}" for k in ks) + " |"
                  for n, v in rows]
    if s["measured"]:
        lines += ["", "## smollm2-135m, measured (speedup over plain; identical greedy runs)", "",
                  "| method | speedup | tok/s | identical |", "|---|---|---|---|"]
        lines += [f"| {m} | {r['speedup']:.3f} | {r['tok_s']:.1f} | {r['identical']}/{r['of']} |"
                  for m, r in s["measured"].items()]
    if s["predicted"]:
        pol = list(next(iter(s["predicted"].values())))
        lines += ["", "## PREDICTED speedup over plain (stand-in GPU costs, acceptance recorded on the CPU)", "",
                  "| model | " + " | ".join(pol) + " |", "|---" * (1 + len(pol)) + "|"]
        lines += [f"| {m} | " + " | ".join(f"{p[k]:.3f}" for k in pol) + " |" for m, p in s["predicted"].items()]
    if s["method_check_smollm2"]:
        lines += ["", "## The prediction method on smollm2-135m", "", "| method | predicted | measured | error | within ±10% |",
                  "|---|---|---|---|---|"]
        lines += [f"| {m} | {c['predicted']:.3f} | {c['measured']:.3f} | {c['error']:+.1%} | {c['within_10pct']} |"
                  for m, c in s["method_check_smollm2"].items()]
    if "checks" in s:
        c = s["checks"]
        lines += ["", "## Checks", "", f"- skip masks: {c['skip_masks']}",
                  f"- greedy output identical (lookup, layer skip, auto vs plain): {c['lossless_all_identical']}", "",
                  "| phase | graph reuses/cycle | decodes/cycle | CUDA captures/cycle | replays/cycle | resets/cycle |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {p} | {r['graph_reuses_per_cycle']:.2f} | {r['decodes_per_cycle']:.1f} | "
                  f"{r['cuda_captures_per_cycle']:.2f} | {r['cuda_replays_per_cycle']:.2f} | {r['cuda_resets_per_cycle']:.2f} |"
                  for p, r in c["lanes_and_cuda_graphs"].items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ns = ap.parse_args(argv)
    s = summarize(ns.results)
    ns.out.write_text(markdown(s))
    ns.out.with_suffix(".json").write_text(json.dumps(s, indent=2) + "\n")
    print(markdown(s))
    return 0


if __name__ == "__main__":
    sys.exit(main())
