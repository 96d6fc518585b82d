"""Soak: many consecutive generations in one Engine, and what happens to its memory.

    python bench/soak.py [MODEL] [--generations 1000] [-n 16] [--threads 1] [--every 50] [--warmup 100]

One engine runs generation after generation, the way a long chat or server session
does: raw and chat prompts from bench/prompts/bench.jsonl in turn, plain / lookup /
layer-skip / auto decoding in turn, every third one sampled (temperature 0.8, its own
seed), and every tenth one streamed and cancelled after its first piece of text. The
KV cache is reused between calls whenever a prompt extends the previous one, and
rolled back otherwise, as in normal use.

It prints the process's resident set size (RSS) every ``--every`` generations and
compares the last one with the RSS after ``--warmup`` generations, when the allocator,
graphs and caches have settled. The target: growth of at most 5% (``--max-growth``);
the exit code is 1 above it. It writes bench/results/soak-<model>.{json,md}.
"""
from __future__ import annotations

import argparse
import gc
import json
import sys
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edgessd import device  # noqa: E402
from edgessd.engine import Engine, GenerationResult  # noqa: E402
from edgessd.prompts import load_prompts  # noqa: E402

MODES = ("plain", "lookup", "layerskip", "auto")


def rss_mib() -> float:
    return psutil.Process().memory_info().rss / 2**20


def one_generation(eng: Engine, i: int, texts: list[str], n_predict: int) -> tuple[str, int]:
    """Generation number ``i``: which prompt, form, mode and sampling follow from ``i`` alone.
    Returns (mode that ran, tokens generated)."""
    text = texts[i % len(texts)]
    prompt = [{"role": "user", "content": text}] if i % 2 else text
    kwargs = dict(n_predict=n_predict, mode=MODES[i % len(MODES)])
    if i % 3 == 0:
        kwargs.update(temperature=0.8, seed=i)
    if i % 10 == 9:  # streamed, and cancelled after the first piece: the path a client that leaves takes
        cancel = threading.Event()
        result = None
        for item in eng.stream(prompt, cancel=cancel, **kwargs):
            if isinstance(item, GenerationResult):
                result = item
            else:
                cancel.set()
        assert result is not None
    else:
        result = eng.generate(prompt, **kwargs)
    return result.mode, len(result.tokens)


def soak(model: str, *, generations: int, n_predict: int, threads: int, every: int, warmup: int) -> dict:
    texts = [p.first for p in load_prompts(ROOT / "bench" / "prompts" / "bench.jsonl")]
    t0 = time.perf_counter()
    eng = Engine(model, n_ctx=2048, n_threads=threads)
    samples = [{"generation": 0, "rss_mib": round(rss_mib(), 2), "seconds": round(time.perf_counter() - t0, 1),
                "tokens": 0}]
    print(f"soak: {model}, {generations} generations of <= {n_predict} tokens, {threads} thread(s); "
          f"RSS after loading {samples[0]['rss_mib']:.1f} MiB", flush=True)
    tokens = 0
    modes: dict[str, int] = {}
    for i in range(1, generations + 1):
        mode, n = one_generation(eng, i, texts, n_predict)
        tokens += n
        modes[mode] = modes.get(mode, 0) + 1
        if i % every == 0 or i == generations or i == warmup:
            gc.collect()  # what the Python heap still holds, not what is waiting to be collected
            s = {"generation": i, "rss_mib": round(rss_mib(), 2), "seconds": round(time.perf_counter() - t0, 1),
                 "tokens": tokens}
            samples.append(s)
            print(f"  {i:>5} generations  RSS {s['rss_mib']:8.1f} MiB  {s['seconds']:7.1f} s  {tokens} tokens",
                  flush=True)
    eng.close()
    warm = next(s for s in samples if s["generation"] >= warmup)
    end = samples[-1]
    after = [s["rss_mib"] for s in samples if s["generation"] >= warmup]
    return {
        "model": model, "generations": generations, "n_predict": n_predict, "threads": threads,
        "warmup": warm["generation"], "rss_loaded_mib": samples[0]["rss_mib"], "rss_warm_mib": warm["rss_mib"],
        "rss_end_mib": end["rss_mib"], "rss_max_after_warmup_mib": max(after),
        "growth_pct": round(100 * (end["rss_mib"] - warm["rss_mib"]) / warm["rss_mib"], 2),
        "tokens": tokens, "seconds": end["seconds"], "modes": modes, "samples": samples,
        "device": device.fingerprint(threads),
    }


def markdown(r: dict, max_growth: float) -> str:
    verdict = "within" if r["growth_pct"] <= max_growth else "OVER"
    lines = [
        f"# Soak: {r['generations']} generations on {r['model']}",
        "",
        f"`python bench/soak.py {r['model']} --generations {r['generations']} -n {r['n_predict']} "
        f"--threads {r['threads']}` on {r['device'].get('cpu')} ({r['threads']} thread(s)), {r['seconds']:.0f} s, "
        f"{r['tokens']} tokens generated.",
        "",
        "Raw and chat prompts from bench/prompts/bench.jsonl in turn; plain, lookup, layer-skip and auto decoding "
        "in turn; every third generation sampled; every tenth streamed and cancelled after its first text.",
        "",
        f"- RSS after loading: {r['rss_loaded_mib']:.1f} MiB",
        f"- RSS after warm-up ({r['warmup']} generations): {r['rss_warm_mib']:.1f} MiB",
        f"- RSS at the end: {r['rss_end_mib']:.1f} MiB "
        f"(largest after warm-up: {r['rss_max_after_warmup_mib']:.1f} MiB)",
        f"- growth after warm-up: **{r['growth_pct']:+.2f}%** ({verdict} the {max_growth:g}% limit)",
        f"- modes that ran: {', '.join(f'{k} {v}' for k, v in sorted(r['modes'].items()))}",
        "",
        "| generations | RSS MiB | seconds | tokens |",
        "|---:|---:|---:|---:|",
        *[f"| {s['generation']} | {s['rss_mib']:.1f} | {s['seconds']:.1f} | {s['tokens']} |" for s in r["samples"]],
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", default="smollm2-135m")
    ap.add_argument("--generations", type=int, default=1000)
    ap.add_argument("-n", "--n-predict", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--every", type=int, default=50, help="print RSS every this many generations")
    ap.add_argument("--warmup", type=int, default=100, help="generations before the reference RSS")
    ap.add_argument("--max-growth", type=float, default=5.0, help="percent; exit code 1 above it")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results",
                    help="directory for soak-<model>.json and .md")
    ns = ap.parse_args()
    if not 0 < ns.warmup < ns.generations:
        ap.error("--warmup must lie between 0 and --generations")
    r = soak(ns.model, generations=ns.generations, n_predict=ns.n_predict, threads=ns.threads, every=ns.every,
             warmup=ns.warmup)
    print(f"RSS {r['rss_warm_mib']:.1f} MiB after {r['warmup']} generations -> {r['rss_end_mib']:.1f} MiB after "
          f"{r['generations']}: {r['growth_pct']:+.2f}% (limit {ns.max_growth:g}%)")
    ns.out.mkdir(parents=True, exist_ok=True)
    name = Path(ns.model).name.removesuffix(".gguf")
    out_json, out_md = ns.out / f"soak-{name}.json", ns.out / f"soak-{name}.md"
    out_json.write_text(json.dumps(r, indent=2) + "\n")
    out_md.write_text(markdown(r, ns.max_growth))
    print(f"wrote {out_json} and {out_md.name}")
    return 0 if r["growth_pct"] <= ns.max_growth else 1


if __name__ == "__main__":
    sys.exit(main())
