"""bench/replay.py replays drafters over a recorded greedy output: its counts must be a real run's."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
from conftest import cpu_15b

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import replay  # noqa: E402

from edgessd.drafters import NoDrafter  # noqa: E402
from edgessd.drafters.auto import AutoDrafter  # noqa: E402
from edgessd.drafters.lookup import LookupDrafter  # noqa: E402
from edgessd.engine import Engine  # noqa: E402

CPU = cpu_15b(10)
PROMPT = [{"role": "user", "content": "Copy this list exactly, one item per line: apple, banana, cherry, date, "
                                      "elderberry, fig, grape, kiwi, lemon, mango, nectarine, orange."}]


@pytest.fixture(scope="module")
def eng():
    e = Engine("smollm2-135m", n_ctx=1024, n_threads=2)
    yield e
    e.close()


@pytest.mark.parametrize("n_predict", [48, 20])  # the model stops by itself at 48; at 20 the budget stops it
def test_replay_counts_exactly_what_a_real_generation_accepts(eng, n_predict):
    eng.reset()
    prompt, output = replay.greedy_output(eng, PROMPT, n_predict)
    for make in (lambda: LookupDrafter(max_tokens=4), lambda: AutoDrafter(lambda _pos: CPU)):
        eng.reset()
        real = eng.generate(PROMPT, n_predict=n_predict, drafter=make())
        assert real.tokens == output[:len(real.tokens)]
        _, mean_accepted = replay.replay(make(), prompt, output, lambda _pos: CPU, n_predict)
        assert real.stats.n_accepted > 0
        assert mean_accepted == pytest.approx(real.stats.mean_accepted)


def test_the_oracle_bounds_every_policy_that_drafts_from_the_same_proposals(eng):
    eng.reset()
    prompt, output = replay.greedy_output(eng, PROMPT, 48)
    cost_at = lambda _pos: CPU  # noqa: E731
    best, _ = replay.oracle(prompt, output, cost_at, 48)
    for drafter in (LookupDrafter(n_max=12, max_tokens=4), LookupDrafter(n_max=12, max_tokens=1),
                    LookupDrafter(n_max=12, max_tokens=9), AutoDrafter(cost_at)):
        speedup, _ = replay.replay(drafter, prompt, output, cost_at, 48)
        assert speedup <= best + 1e-9
    assert best > 1.2  # the list is copied: drafts known to be accepted pay even at this V(k)
    nothing, _ = replay.replay(NoDrafter(), prompt, output, cost_at, 48)
    assert nothing == pytest.approx(1.0)  # plain steps cost plain's time
