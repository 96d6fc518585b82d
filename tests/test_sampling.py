"""The pure accept/reject rules, sampler and lookup search, on literal arrays."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from edgessd.drafters.lookup import find_continuation, longest_match
from edgessd.errors import InvalidArgumentError
from edgessd.sampling import SamplerParams, greedy_accept, penalized, sample, speculative_accept, target_probs
from edgessd.stats import GenerationStats


def test_greedy_accept_longest_matching_prefix():
    assert greedy_accept([5, 7, 9], np.array([5, 7, 2, 4])) == 2
    assert greedy_accept([5, 7, 9], np.array([5, 7, 9, 4])) == 3
    assert greedy_accept([5, 7, 9], np.array([1, 7, 9, 4])) == 0
    assert greedy_accept([], np.array([3])) == 0


def test_target_probs_top_k_top_p_temperature():
    logits = np.array([2.0, 1.0, 0.0, -1.0])
    p = target_probs(logits, SamplerParams(temperature=1.0, top_k=0, top_p=1.0))
    np.testing.assert_allclose(p, np.exp(logits) / np.exp(logits).sum())
    p2 = target_probs(logits, SamplerParams(temperature=1.0, top_k=2, top_p=1.0))
    np.testing.assert_allclose(p2, [np.e / (np.e + 1), 1 / (np.e + 1), 0, 0])
    # softmax = [.644, .237, .087, .032]: top_p .85 keeps the first two (cumulative .881)
    p3 = target_probs(logits, SamplerParams(temperature=1.0, top_k=0, top_p=0.85))
    assert (p3 > 0).tolist() == [True, True, False, False]
    cold = target_probs(logits, SamplerParams(temperature=0.1, top_k=0, top_p=1.0))
    assert cold[0] > 0.9999
    rows = target_probs(np.stack([logits, logits[::-1]]), SamplerParams(temperature=1.0, top_k=1, top_p=1.0))
    np.testing.assert_array_equal(rows, [[1, 0, 0, 0], [0, 0, 0, 1]])


def test_min_p_keeps_tokens_at_least_min_p_times_the_top_one():
    logits = np.log(np.array([0.5, 0.3, 0.12, 0.08]))
    p = target_probs(logits, SamplerParams(temperature=1.0, top_k=0, top_p=1.0, min_p=0.2))
    assert np.count_nonzero(p) == 3 and p[3] == 0  # 0.08 < 0.2 * 0.5 <= 0.12
    np.testing.assert_allclose(p[:3], np.array([0.5, 0.3, 0.12]) / 0.92)
    assert np.count_nonzero(target_probs(logits, SamplerParams(temperature=1.0, top_k=0, top_p=1.0, min_p=1.0))) == 1


def test_target_probs_ties_keep_lower_token_id():
    p = target_probs(np.array([1.0, 3.0, 3.0, 3.0]), SamplerParams(temperature=1.0, top_k=2, top_p=1.0))
    np.testing.assert_allclose(p, [0, 0.5, 0.5, 0])


def test_repeat_penalty_divides_positive_and_multiplies_negative_logits():
    logits = np.array([[2.0, -1.0, 3.0, 0.5]], dtype=np.float32)
    got = penalized(logits, [1, 0, 0], [], SamplerParams(repeat_penalty=2.0))
    np.testing.assert_array_equal(got, [[1.0, -2.0, 3.0, 0.5]])  # each token once, however often it occurs
    assert penalized(logits, [0, 1], [], SamplerParams()) is logits  # 1.0: off
    assert penalized(logits, [0, 1], [], SamplerParams(repeat_penalty=2.0, repeat_last_n=0)) is logits


def test_repeat_penalty_rows_see_the_drafts_before_them_within_the_window():
    logits = np.full((3, 5), 4.0, dtype=np.float32)
    # context [0, 1], draft [2, 3]; last 2 tokens: row 0 sees {0, 1}, row 1 {1, 2}, row 2 {2, 3}
    got = penalized(logits, [0, 1], [2, 3], SamplerParams(repeat_penalty=2.0, repeat_last_n=2))
    np.testing.assert_array_equal(got, [[2, 2, 4, 4, 4], [4, 2, 2, 4, 4], [4, 4, 2, 2, 4]])
    everything = penalized(logits, [0, 1], [2, 3], SamplerParams(repeat_penalty=2.0, repeat_last_n=-1))
    np.testing.assert_array_equal(everything[2], [2, 2, 2, 2, 4])
    # a row is penalised as plain decoding would: the same as that position decoded with no draft
    plain = penalized(logits[:1], [0, 1, 2, 3], [], SamplerParams(repeat_penalty=2.0, repeat_last_n=2))
    np.testing.assert_array_equal(plain[0], got[2])


@pytest.mark.parametrize("bad", [dict(temperature=-0.1), dict(top_p=0.0), dict(top_p=1.5), dict(top_k=-1),
                                 dict(temperature=float("nan")), dict(min_p=-0.1), dict(min_p=1.5),
                                 dict(repeat_penalty=0.0), dict(repeat_penalty=float("inf")), dict(repeat_last_n=-2)])
def test_sampler_params_reject_nonsense(bad):
    with pytest.raises(InvalidArgumentError):
        SamplerParams(**bad)


def test_speculative_accept_identical_distributions_accepts_everything():
    p = np.array([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5], [0.1, 0.1, 0.8]])
    rng = np.random.default_rng(0)
    for _ in range(200):
        n, tok = speculative_accept([1, 2], p[:2], p, rng)
        assert n == 2 and tok in (0, 1, 2)


def test_speculative_accept_impossible_draft_is_rejected_and_resampled():
    p = np.array([[0.0, 1.0, 0.0], [1 / 3, 1 / 3, 1 / 3]])
    q = np.array([[1.0, 0.0, 0.0]])
    rng = np.random.default_rng(1)
    for _ in range(100):
        assert speculative_accept([0], q, p, rng) == (0, 1)
    for _ in range(100):  # a deterministic (lookup) proposal of an impossible token, likewise
        assert speculative_accept([0], None, p, rng) == (0, 1)


@pytest.mark.parametrize("deterministic", [False, True], ids=["sampled-draft", "point-mass-draft"])
def test_speculative_accept_output_distribution_is_the_target(deterministic):
    """First emitted token over many trials ~ p[0] (chi-square; false-failure rate 1e-4)."""
    p = np.array([[0.1, 0.4, 0.3, 0.2], [0.25, 0.25, 0.25, 0.25]])
    q = np.array([[0.4, 0.1, 0.1, 0.4]])
    rng = np.random.default_rng(12345)
    trials = 20000
    counts = np.zeros(4)
    for _ in range(trials):
        if deterministic:
            draft, qq = [3], None
        else:
            draft, qq = [sample(q[0], rng)], q
        n, tok = speculative_accept(draft, qq, p, rng)
        counts[draft[0] if n == 1 else tok] += 1
    chi2 = sps.chisquare(counts, trials * p[0])
    assert chi2.pvalue > 1e-4, (counts / trials, chi2)


def test_find_continuation_worked_example():
    h = np.array([1, 2, 3, 9, 1, 2, 3])
    np.testing.assert_array_equal(find_continuation(h, 1, 3, 2), [9, 1])
    np.testing.assert_array_equal(find_continuation(h, 1, 3, 10), [9, 1, 2, 3])
    assert find_continuation(np.array([1, 2, 3, 4]), 1, 3, 4).size == 0
    # the most recent earlier occurrence wins
    np.testing.assert_array_equal(find_continuation(np.array([7, 5, 7, 6, 7]), 1, 1, 1), [6])
    cont, n = longest_match(h, 1, 3, 2)
    assert n == 3 and cont.tolist() == [9, 1]
    assert longest_match(np.array([1, 2, 3, 4]), 1, 3, 4)[1] == 0


def test_stats_per_position_and_mean_excludes_bonus():
    s = GenerationStats()
    s.observe_cycle(3, 2)
    s.observe_cycle(1, 1)
    s.observe_cycle(0, 0)
    assert s.n_cycles == 3 and s.n_drafted == 4 and s.n_accepted == 3
    assert s.drafted_per_pos == [2, 1, 1] and s.accepted_per_pos == [2, 1, 0]
    assert s.acceptance_per_pos == [1.0, 1.0, 0.0]
    assert s.mean_accepted == pytest.approx(1.0)
    assert s.n_rejections == 1 and s.alpha == pytest.approx(3 / 4)


def _longest_match_reference(h, n_min, n_max, k):
    """Brute force: for n from n_max down, the most recent earlier occurrence of the last n tokens."""
    n_hist = len(h)
    for n in range(min(n_max, n_hist - 1), n_min - 1, -1):
        for i in range(n_hist - 1 - n, -1, -1):
            if (h[i:i + n] == h[n_hist - n:]).all():
                return h[i + n:min(i + n + k, n_hist)].tolist(), n
    return [], 0


def test_longest_match_equals_brute_force_on_random_histories():
    rng = np.random.default_rng(0)
    for _ in range(2000):
        h = rng.integers(0, rng.integers(2, 6), rng.integers(1, 40))
        cont, n = longest_match(h, 2, 5, 4)
        assert (cont.tolist(), n) == _longest_match_reference(h, 2, 5, 4), h
