"""The generation rate counts what llama.cpp's eval rate counts, so `edgessd bench` compares like for like.

llama-completion's prefill decodes the whole prompt; its ``eval time`` covers the passes
after it, one per sampled token, the end-of-generation token included. edgessd's prefill
leaves the last prompt token for the first cycle, so each of its plain passes samples one
token too: plain decoding's rate must be full passes per second, whether it stopped at an
end-of-generation token (sampled in a pass of its own, not emitted) or at -n.
"""
from __future__ import annotations

import pytest

from edgessd.engine import Engine


@pytest.fixture(scope="module")
def eng():
    with Engine("smollm2-135m", n_ctx=512, n_threads=2) as e:
        yield e


def test_an_end_of_generation_stop_counts_its_pass(eng):
    r = eng.generate([{"role": "user", "content": "Say hi."}], n_predict=64, mode="plain")
    s = r.stats
    assert r.stop_reason == "eos" and 0 < s.n_generated < 64
    assert s.n_eog == 1 and s.n_cycles == s.n_generated + 1
    assert s.gen_tok_s == pytest.approx(1e3 * s.n_cycles / s.t_gen_ms)
    assert s.to_json()["n_eog"] == 1


def test_a_length_stop_has_one_pass_per_emitted_token(eng):
    r = eng.generate([{"role": "user", "content": "Write a long story about a dragon."}], n_predict=12, mode="plain")
    s = r.stats
    assert r.stop_reason == "length" and s.n_generated == 12
    assert s.n_eog == 0 and s.n_cycles == 12
    assert s.gen_tok_s == pytest.approx(1e3 * s.n_cycles / s.t_gen_ms)


def test_a_speculative_stop_counts_the_end_token_once(eng):
    r = eng.generate([{"role": "user", "content": "Say hi."}], n_predict=64, mode="lookup")
    s = r.stats
    assert r.stop_reason == "eos" and s.n_eog == 1
    assert s.gen_tok_s == pytest.approx(1e3 * (s.n_generated + 1) / s.t_gen_ms)
