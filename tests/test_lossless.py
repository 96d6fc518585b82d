"""Speculative decoding is lossless: greedy output is the full model's, sampled output has its distribution.

Real models (smollm2-135m, qwen2.5-coder-0.5b), real drafters, 8 prompts of different
kinds, 48 new tokens, several skip sets and draft lengths.

Where edgessd's CPU kernels cover the model's weight types (patch 0005), a verification
batch computes exactly the logits of one-token decoding, so every run must be token-for-token
plain decoding, and a draft by the full model itself is never rejected.

With ggml's stock kernels (EDGESSD_CPU_KERNELS=stock, or a CPU the kernels do not cover),
batched verification rounds differently from a single-token step (FINDINGS §3). There, where
speculative and plain output differ, the first differing position must be a near-tie of
plain decoding: its top-2 logit margin must be under NEAR_TIE. Measured: such divergences
happened at plain margins of 0.0001-0.06 (smollm2) while the median margin of a greedy step
is about 2-4 logits, and FINDINGS saw 0.013-0.17. 0.25 covers those with room and is still
far below a real choice.
"""
from __future__ import annotations

import numpy as np
import pytest
from conftest import batches_exact

import edgessd.decode as decode_mod
from edgessd.engine import Engine
from edgessd.skipset import SkipSet

NEAR_TIE = 0.25
N_NEW = 48

PROMPTS = [
    "def quicksort(arr):\n    \"\"\"Sort a list with quicksort.\"\"\"\n",
    "Question: A train travels 60 km in 45 minutes. What is its speed in km/h?\nAnswer: Let's think step by step.",
    "Once upon a time, in a village at the edge of a great forest, there lived",
    "Translate to French: The weather is nice today and I would like to go for a walk.\nFrench:",
    "The three primary colors are",
    "import numpy as np\nimport numpy as np\nimport numpy as np\nimport",
    "Summarize: The city council met on Tuesday to discuss the new park. Residents asked for more trees, "
    "benches and a playground. The council agreed to fund the trees this year.\nSummary:",
    "User: What is the capital of Japan?\nAssistant:",
]


class Recorder:
    """Wraps decode.accept to record every verification: drafted tokens, the verifier's rows, the decision."""

    def __init__(self, monkeypatch):
        self.cycles: list[tuple[list[int], np.ndarray, int, int]] = []
        real = decode_mod.accept

        def recording(draft, logits, sampler, rng):
            n, nxt = real(draft, logits, sampler, rng)
            self.cycles.append((list(draft.tokens) if draft else [], logits.copy(), n, nxt))
            return n, nxt

        monkeypatch.setattr(decode_mod, "accept", recording)

    def take(self):
        out, self.cycles = self.cycles, []
        return out


def margin(row: np.ndarray) -> float:
    top2 = np.partition(row, -2)[-2:]
    return float(top2[1] - top2[0])


def check_emitted_are_verifier_argmax(cycles, tokens):
    """Every emitted token is the verifier's argmax at its position, in order."""
    emitted = []
    for draft, logits, n, nxt in cycles:
        argmax = np.argmax(logits, axis=1)
        assert list(argmax[:n]) == draft[:n]
        assert nxt == int(argmax[n])
        emitted += draft[:n] + [nxt]
    assert tokens == emitted[:len(tokens)]


@pytest.fixture(scope="module", params=["smollm2-135m", pytest.param("qwen2.5-coder-0.5b", marks=pytest.mark.slow)])
def engine(request):
    eng = Engine(request.param, n_ctx=1024, n_threads=2)
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def plain_runs(engine):
    """Plain greedy output and, per position, plain decoding's logits margin."""
    runs = {}
    mp = pytest.MonkeyPatch()
    rec = Recorder(mp)
    for p in PROMPTS:
        engine.reset()
        r = engine.generate(p, n_predict=N_NEW, mode="plain")
        runs[p] = (r.tokens, [margin(c[1][0]) for c in rec.take()])
    mp.undo()
    return runs


def assert_same_or_near_tie(tokens, plain_tokens, plain_margins, label):
    if tokens == plain_tokens:
        return True
    j = next((i for i, (a, b) in enumerate(zip(tokens, plain_tokens)) if a != b), min(len(tokens), len(plain_tokens)))
    assert j < len(plain_margins), f"{label}: outputs differ in length only ({len(tokens)} vs {len(plain_tokens)})"
    assert plain_margins[j] < NEAR_TIE, (f"{label}: differs from plain at token {j} where plain's top-2 margin "
                                         f"is {plain_margins[j]:.3f} (not a near-tie)")
    return False


def configs(n_layer: int):
    mid = list(range(2, n_layer - 2, 4))
    odd = list(range(1, n_layer - 1, 2))
    return [
        ("layerskip", SkipSet.of(mid, mid), 3),
        ("layerskip", SkipSet.of([], odd), 5),
        ("layerskip", SkipSet.of(odd, []), 2),
        ("lookup", None, 4),
    ]


def test_greedy_speculation_is_lossless(engine, plain_runs, monkeypatch):
    rec = Recorder(monkeypatch)
    exact = batches_exact(engine.model.path)
    same = total = 0
    for mode, skip, d in configs(engine.model.n_layer):
        for p in PROMPTS:
            engine.reset()
            r = engine.generate(p, n_predict=N_NEW, mode=mode, skip=skip, draft_max=d)
            cycles = rec.take()
            assert r.stats.n_generated == len(r.tokens) and r.stats.n_cycles == len(cycles)
            check_emitted_are_verifier_argmax(cycles, r.tokens)
            plain_tokens, plain_margins = plain_runs[p]
            if r.stop_reason == "length":
                assert len(r.tokens) == N_NEW
            label = f"{mode} {skip} d={d} {p[:30]!r}"
            if exact:
                assert r.tokens == plain_tokens, f"{label}: not token-identical to plain with exact batch kernels"
            same += assert_same_or_near_tie(r.tokens, plain_tokens, plain_margins, label)
            total += 1
    assert same >= total * 3 // 4, f"only {same}/{total} runs were token-identical to plain"


def test_nothing_skipped_accepts_every_draft_but_near_ties(engine, monkeypatch):
    rec = Recorder(monkeypatch)
    exact = batches_exact(engine.model.path)
    drafted = accepted = 0
    for p in PROMPTS:
        engine.reset()
        r = engine.generate(p, n_predict=N_NEW, mode="layerskip", skip=SkipSet(), draft_max=4)
        for draft, logits, n, _ in rec.take():
            if exact:
                assert n == len(draft), f"the full model's own draft was rejected at {n} in {p[:30]!r}"
            if n < len(draft):  # a rejection must be a near-tie in the verifier's own row
                row = logits[n]
                assert row.max() - row[draft[n]] < NEAR_TIE, f"rejected a full-model draft clearly in {p[:30]!r}"
        drafted += r.stats.n_drafted
        accepted += r.stats.n_accepted
    assert drafted > 0 and accepted / drafted > 0.9


def test_sampling_is_reproducible_with_a_seed(engine):
    kw = dict(n_predict=24, temperature=0.8, top_k=40, top_p=0.95, seed=7)
    runs = []
    for mode in ("plain", "plain", "layerskip", "layerskip", "lookup", "lookup"):
        engine.reset()
        runs.append(engine.generate(PROMPTS[2], mode=mode, **kw).tokens)
    assert runs[0] == runs[1] and runs[2] == runs[3] and runs[4] == runs[5]
    engine.reset()
    assert engine.generate(PROMPTS[2], mode="plain", **dict(kw, seed=8)).tokens != runs[0]
