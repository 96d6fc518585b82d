"""The device profile file (real measurements, atomic JSON, validation) and auto's decisions."""
from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import run_cli

from edgessd import registry
from edgessd.drafters import LayerSkipDrafter
from edgessd.drafters.auto import AutoDrafter
from edgessd.engine import Engine
from edgessd.planner import CostModel
from edgessd.profiler import SCHEMA, ProfileError, load_profile, profile_model
from edgessd.skipset import SkipSet

SMOL = "smollm2-135m"


@pytest.fixture(scope="module")
def small_profile(tmp_path_factory):
    """A real, quick profile of smollm2 in a private cache."""
    cache = tmp_path_factory.mktemp("cache")
    mp = pytest.MonkeyPatch()
    path = registry.resolve(SMOL)
    mp.setenv("EDGESSD_CACHE_DIR", str(cache))
    prof, where, measured = profile_model(path, n_threads=2, n_ctx=256, k_max=5, reps=1, ctx_lengths=[32, 128])
    yield prof, where, measured, path
    mp.undo()


def test_profile_measures_and_is_saved_and_reused(small_profile, monkeypatch):
    prof, where, measured, path = small_profile
    assert measured and where.exists()
    assert prof.schema == SCHEMA and prof.model_sha256 == registry.spec(SMOL).sha256
    assert prof.n_layer == 30 and prof.ctx == [32, 128] and prof.k_max == 5
    assert prof.device["threads"] == 2 and prof.device["cores_logical"] >= 1
    assert all(t > 0 for t in prof.t1_ms)
    assert prof.verify_ms[0][4] > prof.verify_ms[0][0]  # five tokens cost more than one here
    assert all(0 <= m <= 1 for m in prof.match_attn + prof.match_mlp)
    assert min(prof.match_attn + prof.match_mlp) < 0.9  # some sublayer matters
    loaded = load_profile(where, model_sha256=prof.model_sha256, fingerprint=prof.device)
    assert loaded == prof
    monkeypatch.setenv("EDGESSD_CACHE_DIR", str(where.parent.parent))
    again, _, measured_again = profile_model(path, n_threads=2, n_ctx=256, k_max=5, reps=1, ctx_lengths=[32, 128])
    assert not measured_again and again == prof
    cost = prof.cost_at(64)
    assert isinstance(cost, CostModel) and cost.n_layer == 30 and cost.V(1) == pytest.approx(prof.t1(64))


def test_verify_curve_is_measured_at_every_k_to_16_and_one_slow_run_does_not_lift_the_rest():
    from edgessd.profiler import monotone_fit, verify_points

    assert verify_points(16) == list(range(1, 17)) and verify_points(32)[-2:] == [24, 32]
    times = np.array([1.0, 1.7, 2.3, 9.0, 3.5, 4.1, 4.6])  # V(4) hit by a slow run
    fit = monotone_fit(times)
    assert np.all(np.diff(fit) >= 0) and np.allclose(fit[:3], times[:3])
    assert fit[-1] < 6.0  # a running maximum would say 9.0 for every k >= 4
    assert np.allclose(monotone_fit(np.sort(times)), np.sort(times))  # a monotone curve stays as it is
    # least squares among non-decreasing sequences: no such sequence on a grid is closer
    grid = np.linspace(0, 10, 41)
    best = min(((a, b, c) for a in grid for b in grid if b >= a for c in grid if c >= b),
               key=lambda v: np.sum((np.array(v) - [3.0, 1.0, 2.0]) ** 2))
    assert np.allclose(monotone_fit(np.array([3.0, 1.0, 2.0])), best)


@pytest.mark.parametrize("damage", ["truncated", "schema", "other-model", "nonsense", "negative"])
def test_broken_profiles_are_rejected_with_a_reason(small_profile, tmp_path, damage):
    prof, where, _, _ = small_profile
    data = json.loads(where.read_text())
    bad = tmp_path / "p.json"
    if damage == "truncated":
        bad.write_text(where.read_text()[: len(where.read_text()) // 2])
    else:
        if damage == "schema":
            data["schema"] = SCHEMA + 1
        elif damage == "other-model":
            data["model_sha256"] = "0" * 64
        elif damage == "nonsense":
            data["verify_ms"] = [[1.0]]
        elif damage == "negative":
            data["t1_ms"][0] = -3
        bad.write_text(json.dumps(data))
    with pytest.raises(ProfileError):
        load_profile(bad, model_sha256=prof.model_sha256)


def test_profile_cli_prints_a_table(small_profile):
    prof, where, _, path = small_profile
    r = run_cli("profile", str(path), "-t", "2", "-c", "256", "--k-max", "5", "--reps", "1",
                env={"EDGESSD_CACHE_DIR": str(where.parent.parent)})
    # -c 256 measures at 64/128 (not 32/128): a new measurement, which still fits in seconds
    assert r.returncode == 0, r.stderr
    assert "t(1) ms" in r.stdout and "V(k)/t(1)" in r.stdout and "matchness" in r.stdout


def costs(t1: float, ratios, L: int = 30) -> CostModel:
    per = t1 * 0.45 / L
    return CostModel(t1=t1, verify=t1 * np.asarray(ratios, float), attn=np.full(L, per), mlp=np.full(L, per))


CPU = [1.0, 1.67, 2.2, 2.49, 3.5, 3.9, 4.3, 4.51, 5.0]   # measured on smollm2 here (FINDINGS-like)
MEMORY_BOUND = [1.0 + 0.05 * k for k in range(9)]


@pytest.fixture(scope="module")
def eng():
    e = Engine(SMOL, n_ctx=1024, n_threads=2)
    yield e
    e.close()


# skipping 40 of 60 sublayers: big enough a saving to pay where verification is nearly free
BIG_SKIP = SkipSet.of(range(4, 24), range(4, 24))


def run_auto(eng, cost_model, prompt, skip=BIG_SKIP):
    drafter = AutoDrafter(lambda _pos: cost_model, layerskip=LayerSkipDrafter(eng.ctx, skip, max_tokens=4),
                          layerskip_alpha=0.8)
    eng.reset()
    r = eng.generate(prompt, n_predict=48, drafter=drafter)
    return drafter, r


def test_auto_never_layer_skips_where_verification_costs_k_steps(eng):
    drafter, r = run_auto(eng, costs(10.0, CPU), "The history of the Roman empire begins")
    assert drafter.cycles["layerskip"] == 0
    # the result reports what ran: plain steps, or a lookup where the prose repeated itself
    assert r.mode in ("auto→plain", "auto→lookup") and r.layer_set is None
    plain = eng.generate("The history of the Roman empire begins", n_predict=48, mode="plain")
    assert r.tokens == plain.tokens


def test_auto_layer_skips_where_verification_is_nearly_free_and_backs_off_when_rejected(eng):
    drafter, r = run_auto(eng, costs(10.0, MEMORY_BOUND), "The history of the Roman empire begins")
    assert drafter.cycles["layerskip"] > 0 and r.stats.n_drafted > 0
    assert r.mode.startswith("auto→") and "layerskip" in r.mode and r.layer_set == BIG_SKIP
    # a 135M model with two thirds of its sublayers gone drafts badly: the online estimate
    # sees the rejections and auto stops drafting that way
    assert drafter.trackers["layerskip"].alpha < 0.8
    assert drafter.cycles["plain"] + drafter.cycles["lookup"] > drafter.cycles["layerskip"]


def test_auto_uses_lookup_on_repetitive_text_even_on_the_cpu(eng):
    prompt = ("Repeat this list exactly: apple, banana, cherry, date, elderberry, fig, grape, kiwi, lemon, mango. "
              "Repeat this list exactly: apple, banana,")
    drafter, r = run_auto(eng, costs(10.0, CPU), prompt)
    assert drafter.cycles["lookup"] > 0 and drafter.cycles["layerskip"] == 0
    assert r.stats.n_accepted > 0


def test_block_matchness_is_one_without_skips_and_tracks_real_acceptance(eng):
    from edgessd.acceptance import argmax_rows, block_matchness, matchness

    prompt = "The history of the Roman empire begins"
    plain = eng.generate(prompt, n_predict=32, mode="plain")
    seq = eng.tokenize(prompt) + plain.tokens
    start = len(seq) - len(plain.tokens)
    ref = argmax_rows(eng.ctx, seq, None)
    assert block_matchness(eng.ctx, seq, eng.model.skip_flags(), start, ref) == 1.0
    skip = SkipSet.of([], range(1, 29, 2))  # every odd MLP
    blk = block_matchness(eng.ctx, seq, skip.flags(30), start, ref)
    whole = matchness(eng.ctx, seq, skip.flags(30), ref, skip_first=start)
    eng.reset()
    real = eng.generate(prompt, n_predict=32,
                        drafter=LayerSkipDrafter(eng.ctx, skip, max_tokens=3, p_min=0.0, adaptive=False)).stats.alpha
    assert 0.0 <= whole <= blk < 1.0  # a fully masked prefix compounds errors; drafting does not see that
    assert abs(blk - real) < abs(whole - real) + 0.05


def test_single_skip_matchness_masks_only_the_continuation_on_the_full_models_prompt(eng):
    from edgessd.acceptance import block_matchness, single_skip_matchness
    from edgessd.skipset import SKIP_ATTN, SKIP_FFN

    prompt = "The history of the Roman empire begins"
    plain = eng.generate(prompt, n_predict=24, mode="plain")
    seq = eng.tokenize(prompt) + plain.tokens
    start = len(seq) - len(plain.tokens)
    eng.reset()
    m_attn, m_mlp = single_skip_matchness(eng.ctx, seq, start)
    assert m_attn.shape == m_mlp.shape == (30,) and np.all((0 <= m_attn) & (m_attn <= 1))
    assert m_mlp[0] < 0.2 < 0.5 < np.median(m_mlp)  # layer 0's MLP is vital; most single MLPs are not
    for il, flag, got in ((0, SKIP_ATTN, m_attn[0]), (15, SKIP_FFN, m_mlp[15])):
        flags = eng.model.skip_flags()
        flags[il] = flag
        # the same as one masked block over the continuation, decoded on the full model's prefix
        assert got == pytest.approx(block_matchness(eng.ctx, seq, flags, start - 1, block=len(seq)))
    eng.reset()
