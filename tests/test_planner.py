"""The planner's pure functions: the knapsack DP against brute force, and the mode choice."""
from __future__ import annotations

import itertools
import time

import numpy as np
import pytest
from conftest import cpu_15b

from edgessd.planner import CostModel, choose, expected_tokens, knapsack, plan_layerskip, plan_lookup, recover


def test_expected_tokens():
    assert expected_tokens(0.0, 3) == pytest.approx(1.0)
    assert expected_tokens(0.5, 1) == pytest.approx(1.5)
    assert expected_tokens(0.5, 2) == pytest.approx(1.75)
    assert expected_tokens(1.0, 4) == pytest.approx(5.0, rel=1e-6)


@pytest.mark.parametrize("seed", range(25))
def test_knapsack_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 10))
    saving = rng.integers(0, 6, n)
    logm = np.log(rng.uniform(0.3, 1.0, n))
    total = int(saving.sum())
    best, take = knapsack(saving, logm, total)
    brute = np.full(total + 1, -np.inf)
    for mask in itertools.product([0, 1], repeat=n):
        m = np.array(mask, bool)
        j = int(saving[m].sum())
        brute[j] = max(brute[j], float(logm[m].sum()))
    np.testing.assert_allclose(best, brute)
    for j in np.flatnonzero(np.isfinite(best)):
        chosen = recover(take, saving, int(j))
        assert int(saving[chosen].sum()) == j
        assert float(logm[chosen].sum()) == pytest.approx(best[j])


def brute_force_plan(cost: CostModel, m_attn, m_mlp, d_max):
    """Score every allowed set and d by the planner's objective, exactly (no cost rounding)."""
    L = cost.n_layer
    items = [(i, "a") for i in range(1, L - 1)] + [(i, "m") for i in range(1, L - 1)]
    best = (0.0, None, None)
    for mask in itertools.product([0, 1], repeat=len(items)):
        chosen = [it for it, b in zip(items, mask) if b]
        if not chosen:
            continue
        save = sum(cost.attn[i] if k == "a" else cost.mlp[i] for i, k in chosen)
        alpha = float(np.prod([m_attn[i] if k == "a" else m_mlp[i] for i, k in chosen]))
        for d in range(1, d_max + 1):
            rate = expected_tokens(alpha, d) / (d * (cost.t1 - save) + cost.V(d + 1))
            if rate > best[0]:
                best = (float(rate), chosen, d)
    return best


@pytest.mark.parametrize("seed", range(8))
def test_layerskip_plan_matches_brute_force_on_small_models(seed):
    rng = np.random.default_rng(100 + seed)
    L = 5
    attn, mlp = rng.uniform(0.5, 1.5, L), rng.uniform(1.0, 2.0, L)
    t1 = float(attn.sum() + mlp.sum() + 1.0)
    verify = t1 * (1 + 0.05 * np.arange(12))  # memory-bound: speculation can pay
    cost = CostModel(t1=t1, verify=verify, attn=attn, mlp=mlp)
    m_attn, m_mlp = rng.uniform(0.6, 1.0, L), rng.uniform(0.6, 1.0, L)
    plan = plan_layerskip(cost, m_attn, m_mlp, d_max=6, units=4000)
    rate, _, _ = brute_force_plan(cost, m_attn, m_mlp, 6)
    assert plan is not None
    assert plan.tok_per_ms == pytest.approx(rate, rel=2e-3)  # cost rounding to 1/4000 of the total


def test_compute_bound_cpu_chooses_plain_and_memory_bound_chooses_layerskip():
    L = 28
    attn, mlp = np.full(L, 0.6), np.full(L, 1.2)
    t1 = float(attn.sum() + mlp.sum() + 6.0)
    m = np.full(L, 0.99)  # about what 1.5B models show: 12 skipped sublayers keep ~80% (FINDINGS §2)
    # FINDINGS §1 (qwen2.5-coder-1.5b Q4_K_M, 2 cores): V(k)/t(1) = 1, 1.57, 2.10, 2.54, 3.29, ...
    cpu = CostModel(t1, t1 * np.array([1, 1.57, 2.10, 2.54, 3.29, 3.9, 4.6, 5.4, 6.0]), attn, mlp)
    gpu = CostModel(t1, t1 * (1 + 0.05 * np.arange(9)), attn, mlp)
    p_cpu = choose(cpu, layerskip=plan_layerskip(cpu, m, m), lookup=plan_lookup(cpu, 0.3))
    assert p_cpu.mode == "plain" and p_cpu.speedup == 1.0
    # with little lookup acceptance, layer skip wins where verification is nearly free ...
    p_gpu = choose(gpu, layerskip=plan_layerskip(gpu, m, m), lookup=plan_lookup(gpu, 0.1))
    assert p_gpu.mode == "layerskip" and p_gpu.speedup > 1.2
    # ... but near-free drafts accepted often beat it there too (they cost no draft steps)
    assert choose(gpu, layerskip=plan_layerskip(gpu, m, m), lookup=plan_lookup(gpu, 0.7)).mode == "lookup"
    assert 0 not in p_gpu.skip.attn + p_gpu.skip.mlp and L - 1 not in p_gpu.skip.attn + p_gpu.skip.mlp
    # lookup with high acceptance pays even on the CPU
    p_rep = choose(cpu, layerskip=plan_layerskip(cpu, m, m), lookup=plan_lookup(cpu, 0.9))
    assert p_rep.mode == "lookup" and p_rep.speedup > 1.2


def test_dp_for_64_layers_is_fast():
    rng = np.random.default_rng(0)
    L = 64
    cost = CostModel(t1=100.0, verify=100.0 * (1 + 0.05 * np.arange(17)), attn=rng.uniform(0.3, 0.8, L),
                     mlp=rng.uniform(0.6, 1.0, L))
    m = rng.uniform(0.9, 1.0, L)
    plan_layerskip(cost, m, m)  # warm-up
    t0 = time.perf_counter()
    for _ in range(10):
        plan_layerskip(cost, m, m)
    per_call_ms = (time.perf_counter() - t0) * 100
    print(f"DP + scoring for 64 layers: {per_call_ms:.2f} ms")  # a measurement, not a test threshold


# -- auto's online acceptance estimates (pure) ------------------------------------------------------
from edgessd.drafters.auto import (  # noqa: E402
    LOOKUP_PRIORS,
    AcceptanceTracker,
    CopyTracker,
    best_draft_len,
    copied_prefix,
)


def test_copied_prefix_is_the_matching_prefix_and_whether_it_is_final():
    p = np.array([5, 6, 7])
    assert copied_prefix(p, np.array([9])) == (0, True)
    assert copied_prefix(p, np.array([5, 6, 8, 1])) == (2, True)
    assert copied_prefix(p, np.array([5, 6, 7, 1])) == (3, True)
    assert copied_prefix(p, np.array([5, 6])) == (2, False)
    assert copied_prefix(p, np.array([], dtype=int)) == (0, False)


def test_copy_tracker_pools_what_copies_teach_by_how_long_they_have_run():
    t = CopyTracker()
    before = t.rates(4, 3).copy()
    assert np.allclose(before, [LOOKUP_PRIORS[4], LOOKUP_PRIORS[5], LOOKUP_PRIORS[6]])
    for _ in range(30):  # proposals after 2-token matches, each copied for 6 tokens, then a miss
        t.tick()
        t.credit(2, 0, 6, accepted=True)
        t.credit(2, 6, 7, accepted=False)
    # a proposal after a 4-token match has never been seen, but its tokens sit at copy
    # lengths 4, 5, 6 ... that the 2-token matches taught: they have gone on every time
    assert (t.rates(4, 3) > 0.9).all() and (t.rates(4, 3) > before).all()
    assert t.rate[8] < 0.2  # and the copy has always stopped after 8
    e = t.expected_tokens(4, np.array([1, 3, 5]))
    assert e[0] == pytest.approx(1 + t.rate[4]) and e[1] < e[2] < 6


def test_tracker_learns_per_position_so_runs_of_copies_predict_long_drafts():
    t = AcceptanceTracker(prior=0.5, d_max=8)
    for _ in range(40):  # a copy: either the first draft fails, or all eight are accepted
        t.observe(8, 0)
        t.observe(8, 8)
    r = t.rate
    assert r[0] == pytest.approx(0.5, abs=0.05)
    assert (r[1:] > 0.8).all()  # once started, a copy goes on
    # an i.i.d. model with the first position's rate would predict far fewer tokens for d = 8
    e = t.expected_tokens(np.array([1, 8]))
    assert e[0] == pytest.approx(1 + r[0])
    iid = (1 - r[0] ** 9) / (1 - r[0])
    assert e[1] > 1.5 * iid


def test_tracker_with_no_data_is_the_prior_and_decays_towards_new_evidence():
    t = AcceptanceTracker(prior=0.7, d_max=4)
    assert np.allclose(t.rate, 0.7) and t.alpha == pytest.approx(0.7)
    for _ in range(60):
        t.observe(4, 0)
    assert t.rate[0] < 0.15 and t.alpha < 0.15
    assert np.allclose(t.rate[1:], 0.7)  # never reached: still the prior


CPU_15B = cpu_15b(8)


def test_best_draft_len_drafts_long_only_where_acceptance_holds_up():
    cpu = CPU_15B
    sure = AcceptanceTracker(prior=0.97, d_max=7)
    d, speedup = best_draft_len(cpu, sure.expected_tokens, 0.0, 7)
    ds = np.arange(1, 8)
    by_d = 10.0 * sure.expected_tokens(ds) / cpu.verify[ds]
    assert d == ds[np.argmax(by_d)] and d > 1 and speedup == pytest.approx(by_d.max()) and speedup > 1.2
    coin = AcceptanceTracker(prior=0.5, d_max=7)
    _, speedup = best_draft_len(cpu, coin.expected_tokens, 0.0, 7)
    assert speedup < 1.0  # a coin-flip lookup loses on this CPU at every draft length


def test_predicted_speedup_trades_draft_cost_against_acceptance():
    from edgessd.planner import predicted_speedup

    mem = CostModel(t1=10.0, verify=10.0 * (1 + 0.05 * np.arange(17)), attn=np.ones(4), mlp=np.ones(4))
    cpu = CPU_15B
    # where verification is nearly free, a cheaper draft at lower acceptance can win ...
    assert predicted_speedup(mem, 0.5, 3.0) > 1.0 > predicted_speedup(mem, 0.6, 6.0)
    # ... on the compute-bound CPU neither pays, and free lookup drafts pay only when accepted
    assert predicted_speedup(cpu, 0.6, 3.0) < 1.0 and predicted_speedup(cpu, 0.9, 0.0) > 1.0
    assert predicted_speedup(cpu, 0.3, 0.0) < 1.0


def test_auto_learns_past_the_drafted_length_from_the_whole_lookup_proposal():
    """A copy under way: drafting one token per cycle must not hide that twelve would be accepted."""
    from edgessd.drafters.auto import AutoDrafter
    from edgessd.drafters.base import DraftRequest
    from edgessd.sampling import SamplerParams

    auto = AutoDrafter(lambda pos: CPU_15B)
    text = list(range(100, 140))
    history = text + text[:12]  # the model has started copying `text`
    rng = np.random.default_rng(0)
    lens = []
    while len(history) < 2 * len(text) - 1:
        req = DraftRequest(np.asarray(history), len(history) - 1, 64, SamplerParams(temperature=0.0), rng)
        draft = auto.propose(req)
        d = len(draft.tokens) if draft else 0
        lens.append(d)
        if draft:
            auto.observe(d, d)  # the copy goes on: every draft is accepted
        history += text[len(history) - len(text):][:d + 1]
    assert lens[0] == 1 and max(lens) >= 4, lens  # the prior drafts one; the shadows then show four pay


def test_auto_counts_each_copied_token_as_it_is_emitted_not_when_the_proposal_ends():
    from edgessd.drafters.auto import AutoDrafter
    from edgessd.drafters.base import DraftRequest
    from edgessd.sampling import SamplerParams

    auto = AutoDrafter(lambda pos: CPU_15B)
    text = list(range(100, 140))
    history = text + text[:3]  # a copy of `text` has begun: a 3-token match, 12 tokens proposed
    rng = np.random.default_rng(0)

    def cycle():
        auto.propose(DraftRequest(np.asarray(history), len(history) - 1, 64, SamplerParams(temperature=0.0), rng))

    cycle()
    assert auto.copy.reached.sum() == 0  # nothing emitted yet
    history.append(text[3])  # one plain step: the copy went on
    cycle()
    assert auto.copy.accepted[3] > 0 and auto.copy.reached.sum() == pytest.approx(auto.copy.accepted.sum())
    history.append(999)  # the model leaves the copy
    cycle()
    assert auto.copy.reached.sum() > auto.copy.accepted.sum()  # the miss counts against both proposals
    assert not auto._shadows  # the miss decided both proposals
