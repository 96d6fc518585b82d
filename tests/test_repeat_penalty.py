"""llama.cpp's repetition penalty (--repeat-penalty, --repeat-last-n) applied to the full model's logits.

Plain greedy decoding with the penalty must be a step-by-step reference loop written here
with numpy (one-token decodes; each of the last N tokens, prompt included, has its logit
divided by the penalty if positive, else multiplied, once however often it occurs). Speculation
must then give plain's tokens: each verification row is penalised by the tokens before it,
drafts included, so lookup and layer skip accept exactly what plain decoding would emit.
"""
from __future__ import annotations

import numpy as np
import pytest
from conftest import batches_exact

from edgessd.engine import Engine
from edgessd.skipset import SkipSet

# a copy task: lookup still finds drafts that the penalised full model accepts (7 of 15 here)
PROMPT = ("Copy the sentence exactly.\nSentence: The quick brown fox jumps over the lazy dog near the river bank.\n"
          "Copy: The quick")
N_NEW = 40
PENALTY = dict(repeat_penalty=1.3, repeat_last_n=16)


@pytest.fixture(scope="module")
def eng():
    e = Engine("smollm2-135m", n_ctx=512, n_threads=2, learn="off")
    yield e
    e.close()


def reference(eng: Engine, prompt: str, n: int, penalty: float, last_n: int) -> list[int]:
    """Greedy decoding one token at a time with the penalty, independent of edgessd.sampling."""
    toks = eng.tokenize(prompt)
    eng.reset()
    ctx = eng.ctx
    ctx.decode(toks, 0)
    seq, out = list(toks), []
    for _ in range(n):
        row = ctx.logits()[-1].astype(np.float64)
        for t in set(seq[-last_n:]):
            row[t] = row[t] / penalty if row[t] > 0 else row[t] * penalty
        tok = int(np.argmax(row))
        if eng.model.is_eog(tok):
            break
        out.append(tok)
        seq.append(tok)
        ctx.decode([tok], len(seq) - 1)
    eng.reset()
    return out


def test_plain_greedy_with_the_penalty_is_the_reference_loop(eng):
    want = reference(eng, PROMPT, N_NEW, PENALTY["repeat_penalty"], PENALTY["repeat_last_n"])
    eng.reset()
    got = eng.generate(PROMPT, n_predict=N_NEW, mode="plain", **PENALTY)
    assert got.tokens == want
    eng.reset()
    unpenalised = eng.generate(PROMPT, n_predict=N_NEW, mode="plain")
    assert unpenalised.tokens != got.tokens, "the penalty must change this output, or the test shows nothing"


@pytest.mark.parametrize("mode,skip", [("lookup", None),
                                       ("layerskip", SkipSet.of(range(2, 28, 4), range(2, 28, 4)))],
                         ids=["lookup", "layerskip"])
def test_speculation_with_the_penalty_is_plain_decoding(eng, mode, skip):
    if not batches_exact(eng.model.path):
        pytest.skip("batched logits are exact only with edgessd's CPU kernels")
    eng.reset()
    plain = eng.generate(PROMPT, n_predict=N_NEW, mode="plain", **PENALTY)
    eng.reset()
    r = eng.generate(PROMPT, n_predict=N_NEW, mode=mode, skip=skip, draft_max=4, **PENALTY)
    assert r.tokens == plain.tokens
    assert r.stats.n_drafted > 0 and r.stats.n_accepted > 0, "drafts must be verified under the penalty"
