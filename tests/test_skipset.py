"""The skip-set spec: parse, print, round-trip, and clean errors."""
from __future__ import annotations

import numpy as np
import pytest

from edgessd.errors import InvalidArgumentError
from edgessd.skipset import SKIP_ATTN, SKIP_FFN, SkipSet, parse_skip_spec


def test_parse_example_from_the_docs():
    s = parse_skip_spec("attn:3,5,7;mlp:4-9")
    assert s.attn == (3, 5, 7) and s.mlp == (4, 5, 6, 7, 8, 9)
    assert s.spec() == "attn:3,5,7;mlp:4-9"
    assert parse_skip_spec("ffn:1; attention: 2-3") == SkipSet((2, 3), (1,))


@pytest.mark.parametrize("spec", ["", "none", "attn:0", "mlp:1,2", "attn:1-3,7;mlp:2,4-6,9", "attn:0,1;mlp:0,1"])
def test_round_trip(spec):
    s = parse_skip_spec(spec)
    assert parse_skip_spec(s.spec()) == s


@pytest.mark.parametrize("bad", ["attn", "attn:", "foo:1", "attn:a", "attn:3-1", "mlp:1,,2", "attn:1;x:2", "attn:-1"])
def test_malformed_specs_are_clean_errors(bad):
    with pytest.raises(InvalidArgumentError, match="malformed skip spec"):
        parse_skip_spec(bad)


def test_flags_and_back():
    s = parse_skip_spec("attn:1,3;mlp:3,4")
    f = s.flags(6)
    np.testing.assert_array_equal(f, [0, SKIP_ATTN, 0, SKIP_ATTN | SKIP_FFN, SKIP_FFN, 0])
    assert SkipSet.from_flags(f) == s
    assert s.n_skipped == 4
    with pytest.raises(InvalidArgumentError, match="layers 0-3"):
        s.flags(4)
