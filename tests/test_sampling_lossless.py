"""Speculative *sampling* on a real model emits tokens with the target model's distribution.

At a position where several tokens are likely, N seeded generations draft the token
(layer skip: a sampled draft with its own q; lookup: a deterministic point mass) and
verify it by speculative sampling. The counts of the emitted token are compared, by a
chi-square test, with the target distribution p computed from the full model's logits
under the same sampler settings. Categories with an expected count under 5 are pooled.

False-failure rate: the test fails when p-value < ALPHA = 1e-3, so a correct
implementation fails one run in a thousand. A wrong rule, for example accepting every
draft, moves the layer-skip distribution by far more than this test resolves with N=600
(the draft's top token differs from the target's by ~10+ points of probability here).
"""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from edgessd.engine import Engine
from edgessd.sampling import SamplerParams, penalized, target_probs
from edgessd.skipset import SkipSet

ALPHA = 1e-3
N = 600
SETTINGS = dict(temperature=1.0, top_k=6, top_p=1.0, min_p=0.0)
# llama.cpp's repetition penalty moves mass off the prompt's words ("mat", "cat", "dog" below)
PENALTY = dict(SETTINGS, repeat_penalty=1.5, repeat_last_n=64)


@pytest.fixture(scope="module")
def eng():
    e = Engine("smollm2-135m", n_ctx=256, n_threads=2)
    yield e
    e.close()


def target_first_token(eng: Engine, prompt: str, settings: dict = SETTINGS) -> np.ndarray:
    """The target distribution of the first generated token (the verifier's row 0), as plain
    sampling computes it: penalised by the prompt's tokens, then the sampler chain."""
    toks = eng.tokenize(prompt)
    eng.reset()
    eng.ctx.decode(toks, 0)
    params = SamplerParams(**settings)
    p = target_probs(penalized(eng.ctx.logits()[:1].copy(), toks, [], params)[0], params)
    eng.reset()
    return p


def chi_square_pvalue(counts: dict[int, int], p: np.ndarray, n: int) -> float:
    support = np.flatnonzero(p > 0)
    assert set(counts) <= set(support.tolist()), "emitted a token outside the sampler's support"
    expected = p[support] * n
    observed = np.array([counts.get(int(t), 0) for t in support], dtype=float)
    big = expected >= 5
    obs = np.append(observed[big], observed[~big].sum())
    exp = np.append(expected[big], expected[~big].sum())
    if exp[-1] == 0:
        obs, exp = obs[:-1], exp[:-1]
    return float(sps.chisquare(obs, exp).pvalue)


CAT = "The cat sat on the mat. The dog sat on the"


@pytest.mark.parametrize("mode,prompt,skip,settings", [
    ("layerskip", "My favourite fruit is", SkipSet.of(range(2, 28, 3), range(2, 28, 3)), SETTINGS),
    ("lookup", CAT, None, SETTINGS),
    ("layerskip", "My favourite fruit is", SkipSet.of(range(2, 28, 3), range(2, 28, 3)), {**SETTINGS, "min_p": 0.22}),
    ("layerskip", CAT, SkipSet.of(range(2, 28, 3), range(2, 28, 3)), PENALTY),
], ids=["layerskip", "lookup", "layerskip-min-p", "layerskip-penalty"])
def test_first_token_has_the_target_distribution(eng, mode, prompt, skip, settings):
    p = target_first_token(eng, prompt, settings)
    if settings.get("min_p"):  # min-p must really cut the support here, or this case tests nothing new
        assert np.count_nonzero(p) < np.count_nonzero(target_first_token(eng, prompt, SETTINGS))
    assert (p > 0.05).sum() >= 3, "the position must have several likely tokens"
    if settings is PENALTY:  # the penalty really changed the distribution sampled from
        unpenalized = target_first_token(eng, prompt, dict(settings, repeat_penalty=1.0))
        assert np.abs(p - unpenalized).sum() > 0.2
    counts: dict[int, int] = {}
    drafted = accepted = 0
    for seed in range(N):
        r = eng.generate(prompt, n_predict=2, mode=mode, skip=skip, draft_max=1, seed=seed, **settings)
        counts[r.tokens[0]] = counts.get(r.tokens[0], 0) + 1
        drafted += r.stats.n_drafted
        accepted += r.stats.n_accepted
    # the drafter really proposed, and some proposals were rejected: the rule was exercised
    assert drafted == N
    assert 0 < accepted < drafted
    assert chi_square_pvalue(counts, p, N) > ALPHA
