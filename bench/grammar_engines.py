#!/usr/bin/env python3
"""Which grammar engine: llguidance, xgrammar, or llama.cpp's own grammar sampler.

    python bench/grammar_engines.py qwen2.5-coder-0.5b -t 2 [--json out.json]

On one model's vocabulary (qwen2.5-coder's 152k tokens, from the GGUF), for each engine:
the time to build its tokenizer, to compile each schema, and to compute one token mask at
every position of a walk through a valid JSON document of that schema (the document's own
tokens are consumed one by one, so every mask is one a generation would need). Each is
compared with t(1), the model's one-token decode with ``-t`` threads. It also prints
whether the engine rolls back (speculation needs it), its install size (its files and
those of every package it requires, from the installed RECORDs) and where it has wheels.

xgrammar is optional (it requires torch, transformers and triton); where it is not
installed its row says so. The llama.cpp row uses llama-cpp-python's bindings directly
(``llama_sampler_init_grammar`` and ``llama_sampler_apply`` over a full candidates array),
with the GBNF that llama-cpp-python converts the schema to.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# (schema, a valid document): nested objects, arrays, enums, numbers
CASES = [
    ({"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"},
                                       "email": {"type": "string"}}, "required": ["name", "age", "email"]},
     {"name": "Ada Lovelace", "age": 36, "email": "ada@example.com"}),
    ({"type": "object", "properties": {
        "order": {"type": "object", "properties": {
            "id": {"type": "integer"}, "status": {"enum": ["open", "shipped", "closed"]},
            "items": {"type": "array", "items": {"type": "object", "properties": {
                "sku": {"type": "string"}, "qty": {"type": "integer"}, "price": {"type": "number"}},
                "required": ["sku", "qty", "price"]}}},
            "required": ["id", "status", "items"]}}, "required": ["order"]},
     {"order": {"id": 1042, "status": "shipped", "items": [{"sku": "A-17", "qty": 2, "price": 9.5},
                                                            {"sku": "B-3", "qty": 1, "price": 120.25}]}}),
]

# wheels on PyPI for the pinned versions, checked with `pip download --only-binary=:all: --platform ...`
# on 2026-12-03; llama.cpp's sampler ships inside the patched llama-cpp-python edgessd already builds
PLATFORMS = {
    "llguidance": "abi3 wheels: manylinux_2_31 x86_64 + aarch64, macOS 11 arm64, Windows x64",
    "xgrammar": "cp311 wheels: manylinux_2_28 x86_64 + aarch64, macOS 11 arm64, Windows x64; requires torch",
    "llama.cpp": "built with edgessd (every platform llama.cpp builds on)",
}
ROLLBACK = {
    "llguidance": "yes: LLMatcher.rollback(n)",
    "xgrammar": "yes: GrammarMatcher.rollback(n), up to max_rollback_tokens",
    "llama.cpp": "no: llama_sampler_clone per position and free the rest",
}


def install_mb(dist: str, seen: set[str] | None = None) -> float:
    """MB on disk of ``dist`` and everything it requires (no extras), from the RECORD files."""
    seen = set() if seen is None else seen
    key = dist.lower().replace("_", "-")
    if key in seen:
        return 0.0
    seen.add(key)
    try:
        d = metadata.distribution(dist)
    except metadata.PackageNotFoundError:
        return 0.0
    size = sum((f.size or 0) for f in (d.files or []))
    for req in d.requires or []:
        if "extra ==" in req:
            continue
        name = req.split(";")[0].strip().split(" ")[0]
        for sep in "<>=!~[(":
            name = name.split(sep)[0]
        size += install_mb(name, seen) * 1e6
    return size / 1e6


def t1_ms(model: str, threads: int, n: int = 32) -> float:
    """Mean one-token decode time after a short prompt (plain greedy decoding)."""
    import numpy as np

    from edgessd import registry
    from edgessd._capi import Context, Model

    m = Model(registry.resolve(model))
    ctx = Context(m, n_ctx=512, n_batch=512, n_threads=threads)
    toks = m.tokenize("def quicksort(items):\n    ")
    ctx.decode(toks, 0)
    tok, pos = int(np.argmax(ctx.logits()[-1])), len(toks)
    ctx.decode([tok], pos)  # warm-up
    ts = []
    for i in range(n):
        tok = int(np.argmax(ctx.logits()[-1]))
        t0 = time.perf_counter()
        ctx.decode([tok], pos + 1 + i)
        ts.append((time.perf_counter() - t0) * 1e3)
    ctx.close()
    m.close()
    return statistics.mean(ts)


def walk_tokens(model, doc: dict) -> list[int]:
    text = json.dumps(doc, separators=(", ", ": "))
    return model.tokenize(text, add_special=False, parse_special=False)


def bench_llguidance(model, docs) -> dict:
    from edgessd.grammar import Vocab, compile_json_schema

    t0 = time.perf_counter()
    vocab = Vocab(model)
    out = {"setup_ms": (time.perf_counter() - t0) * 1e3, "compile_ms": [], "mask_ms": []}
    for schema, doc in docs:
        t0 = time.perf_counter()
        con = compile_json_schema(schema, vocab)
        m = con.matcher()
        out["compile_ms"].append((time.perf_counter() - t0) * 1e3)
        for tok in walk_tokens(model, doc):
            t0 = time.perf_counter()
            mask = m.mask()  # includes turning the bitmask into bool [n_vocab], as the decode loop uses it
            out["mask_ms"].append((time.perf_counter() - t0) * 1e3)
            assert mask[tok], "the document's own token must be allowed"
            m.consume(tok)
        m.rollback(3)  # what speculation needs
    return out


def bench_xgrammar(model, docs) -> dict:
    import xgrammar as xgr

    t0 = time.perf_counter()
    vocab = []
    for t in range(model.n_vocab):
        vocab.append(model.token_bytes(t, special=True))
    info = xgr.TokenizerInfo(vocab, xgr.VocabType.RAW, vocab_size=model.n_vocab, stop_token_ids=model.eog_tokens())
    compiler = xgr.GrammarCompiler(info, max_threads=1)
    out = {"setup_ms": (time.perf_counter() - t0) * 1e3, "compile_ms": [], "mask_ms": []}
    bitmask = xgr.allocate_token_bitmask(1, model.n_vocab)
    for schema, doc in docs:
        t0 = time.perf_counter()
        compiled = compiler.compile_json_schema(json.dumps(schema), any_whitespace=False, separators=(", ", ": "))
        m = xgr.GrammarMatcher(compiled, max_rollback_tokens=16)
        out["compile_ms"].append((time.perf_counter() - t0) * 1e3)
        for tok in walk_tokens(model, doc):
            t0 = time.perf_counter()
            m.fill_next_token_bitmask(bitmask)
            out["mask_ms"].append((time.perf_counter() - t0) * 1e3)
            assert m.accept_token(tok), "the document's own token must be accepted"
        m.rollback(3)
    return out


def bench_llamacpp(model, docs) -> dict:
    import ctypes

    import llama_cpp as C
    from llama_cpp._internals import LlamaTokenDataArray
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    import numpy as np

    out = {"setup_ms": 0.0, "compile_ms": [], "mask_ms": []}
    cand = LlamaTokenDataArray(n_vocab=model.n_vocab)
    logits = np.zeros(model.n_vocab, dtype=np.float32)
    for schema, doc in docs:
        gbnf = json_schema_to_gbnf(json.dumps(schema))
        t0 = time.perf_counter()
        smpl = C.llama_sampler_init_grammar(model.vocab, gbnf.encode(), b"root")
        out["compile_ms"].append((time.perf_counter() - t0) * 1e3)
        assert smpl, "llama.cpp did not parse the GBNF"
        for tok in walk_tokens(model, doc):
            cand.copy_logits(logits)
            t0 = time.perf_counter()
            C.llama_sampler_apply(smpl, ctypes.byref(cand.candidates))
            out["mask_ms"].append((time.perf_counter() - t0) * 1e3)
            C.llama_sampler_accept(smpl, tok)
        C.llama_sampler_free(smpl)
    return out


def summary(name: str, res: dict | str, t1: float) -> dict:
    row = {"engine": name, "rollback": ROLLBACK[name], "platforms": PLATFORMS[name]}
    dist = {"llguidance": "llguidance", "xgrammar": "xgrammar", "llama.cpp": None}[name]
    row["install_mb"] = round(install_mb(dist), 1) if dist else 0.0
    if isinstance(res, str):
        row["error"] = res
        return row
    masks = sorted(res["mask_ms"])
    row.update(setup_ms=round(res["setup_ms"], 1), compile_ms=round(statistics.mean(res["compile_ms"]), 2),
               mask_median_ms=round(statistics.median(masks), 3),
               mask_p90_ms=round(masks[int(0.9 * (len(masks) - 1))], 3), mask_max_ms=round(masks[-1], 3),
               n_masks=len(masks), mask_share_of_t1=round(statistics.mean(masks) / t1, 4))
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", nargs="?", default="qwen2.5-coder-0.5b")
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("--json", help="write the rows here")
    args = ap.parse_args()

    from edgessd import registry
    from edgessd._capi import Model

    t1 = t1_ms(args.model, args.threads)
    model = Model(registry.resolve(args.model))
    rows = []
    for name, fn in (("llguidance", bench_llguidance), ("xgrammar", bench_xgrammar), ("llama.cpp", bench_llamacpp)):
        try:
            res: dict | str = fn(model, CASES)
        except ImportError as e:
            res = f"not installed ({e.name})"
        rows.append(summary(name, res, t1))
    print(f"model {args.model}: {model.n_vocab} tokens; t(1) = {t1:.2f} ms with {args.threads} threads")
    print("| engine | tokenizer setup ms | compile ms | mask median ms | p90 | max | mean mask / t(1) | "
          "rollback | install MB (with deps) | wheels |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['engine']} | {r['error']} | | | | | | {r['rollback']} | {r['install_mb']} | {r['platforms']} |")
            continue
        print(f"| {r['engine']} | {r['setup_ms']} | {r['compile_ms']} | {r['mask_median_ms']} | {r['mask_p90_ms']} | "
              f"{r['mask_max_ms']} | {r['mask_share_of_t1']:.1%} | {r['rollback']} | {r['install_mb']} | "
              f"{r['platforms']} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"model": args.model, "t1_ms": t1, "threads": args.threads,
                                               "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
