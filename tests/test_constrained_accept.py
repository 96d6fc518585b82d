"""The accept rule under a constraint, on literal arrays: masks per row, drafts cut at the
first disallowed token, and the constrained distribution kept by speculative sampling."""
from __future__ import annotations

import numpy as np
from scipy import stats as sps

from edgessd.sampling import SamplerParams, constrained_accept, masked, target_probs

GREEDY = SamplerParams()
T = True
F = False


def test_greedy_takes_each_rows_masked_argmax():
    logits = np.array([[0.0, 5.0, 9.0], [9.0, 0.0, 1.0], [0.0, 3.0, 2.0]])
    masks = np.array([[T, T, F], [F, T, T], [T, T, T]])
    # row 0: 9.0 is masked, argmax 1 (= draft 0); row 1: 9.0 masked, argmax 2 (= draft 1); row 2: 1
    assert constrained_accept([1, 2], None, logits, masks, GREEDY, None) == (2, 1)
    # the unmasked rule would have rejected draft 0 (row 0's raw argmax is 2)
    assert int(np.argmax(logits[0])) == 2


def test_greedy_rejects_at_a_mask_changed_argmax():
    logits = np.array([[0.0, 5.0, 9.0], [9.0, 0.0, 1.0]])
    masks = np.array([[T, T, F], [F, T, T]])
    assert constrained_accept([2], None, logits[:1], masks[:1], GREEDY, None) == (0, 1)  # cut: 2 is disallowed
    assert constrained_accept([1, 0], None, logits, masks, GREEDY, None) == (1, 2)       # cut at draft 1


def test_masked_puts_disallowed_tokens_at_minus_infinity():
    z = masked(np.array([[1.0, 2.0]]), np.array([[T, F]]))
    assert z[0, 0] == 1.0 and z[0, 1] == -np.inf


def test_sampled_emits_the_masked_distribution_with_cut_drafts():
    """A drafter samples x0 ~ q0, which half the time is a disallowed token (the draft is cut
    there, unverified). The emitted token must still follow the masked target p0 exactly."""
    params = SamplerParams(temperature=1.0, top_k=0, top_p=1.0)
    logits = np.log(np.array([[0.2, 0.3, 0.1, 0.4], [0.25, 0.25, 0.25, 0.25]]))
    masks = np.array([[T, T, T, F], [T, T, T, T]])
    q0 = np.array([0.05, 0.05, 0.4, 0.5])  # far from p0, and drafting the disallowed token 3 half the time
    q = np.vstack([q0, np.full(4, 0.25)])
    p0 = target_probs(masked(logits[:1], masks[:1]), params)[0]
    rng = np.random.default_rng(7)
    n_trials, counts, cut = 20000, np.zeros(4), 0
    for _ in range(n_trials):
        x0 = int(rng.choice(4, p=q0))
        m = 0 if not masks[0, x0] else 1  # the constraint allows draft 0 or cuts the draft there
        cut += m == 0
        n, tok = constrained_accept([x0], q[:1], logits[:m + 1], masks[:m + 1], params, rng)
        counts[x0 if n >= 1 else tok] += 1
    assert 0.4 * n_trials < cut < 0.6 * n_trials
    assert counts[3] == 0, "a disallowed token was emitted"
    pvalue = sps.chisquare(counts[:3], p0[:3] * n_trials).pvalue
    assert pvalue > 1e-3, (counts / n_trials, p0)


def test_sampling_the_target_at_a_cut_would_be_biased():
    """The residual at a cut matters: drawing from p0 there instead skews the output (this
    test shows the check above can fail)."""
    params = SamplerParams(temperature=1.0, top_k=0, top_p=1.0)
    p0 = target_probs(masked(np.log(np.array([[0.2, 0.3, 0.1, 0.4]])), np.array([[T, T, T, F]])), params)[0]
    q0 = np.array([0.05, 0.05, 0.4, 0.5])
    # analytic output of the wrong rule: accept allowed x with min(1, p/q), else draw p0; cut draws p0
    acc = np.minimum(q0[:3], p0[:3])
    wrong = acc + (1 - acc.sum()) * p0[:3]
    assert np.abs(wrong - p0[:3]).max() > 0.05
