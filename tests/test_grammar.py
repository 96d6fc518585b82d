"""edgessd.grammar on a real vocabulary (smollm2-135m): compile errors name what is wrong,
and a matcher's mask, consume, rollback and end of generation agree with each other."""
from __future__ import annotations

import json

import numpy as np
import pytest

from edgessd.errors import GrammarError
from edgessd.grammar import Vocab, compile_grammar, compile_json_schema

SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"enum": ["x", "y"]}},
          "required": ["a", "b"]}


@pytest.fixture(scope="module")
def vocab(smol):
    return Vocab.of(smol)


def tokens(model, text):
    return model.tokenize(text, add_special=False, parse_special=False)


def test_a_valid_document_walks_to_the_end_and_eos_is_allowed_only_there(smol, vocab):
    m = compile_json_schema(SCHEMA, vocab).matcher()
    doc = tokens(smol, json.dumps({"a": 12, "b": "y"}))
    eog = vocab.eog[0]
    for tok in doc:
        mask = m.mask()
        assert mask[tok]
        assert not mask[eog] and not m.is_accepting
        m.consume(tok)
    assert m.is_accepting and m.mask()[eog]
    m.consume(eog)
    assert set(np.flatnonzero(m.mask())) == set(vocab.eog)  # after the end, only the end


def test_consume_refuses_a_disallowed_token_and_keeps_the_state(smol, vocab):
    m = compile_json_schema(SCHEMA, vocab).matcher()
    bad = tokens(smol, "hello")[0]
    assert not m.mask()[bad]
    with pytest.raises(GrammarError, match="not allowed"):
        m.consume(bad)
    assert m.n_consumed == 0 and m.count_allowed(tokens(smol, '{"a": 1'))


def test_rollback_restores_the_earlier_masks(smol, vocab):
    m = compile_json_schema(SCHEMA, vocab).matcher()
    doc = tokens(smol, json.dumps({"a": 12, "b": "y"}))
    before = [m.mask()]
    for tok in doc:
        m.consume(tok)
        before.append(m.mask())
    m.consume(vocab.eog[0])
    m.rollback(4)  # the end of generation and three tokens
    assert np.array_equal(m.mask(), before[len(doc) - 3])
    assert m.count_allowed(doc[-3:]) == 3


def test_count_allowed_stops_at_the_first_disallowed_token(smol, vocab):
    m = compile_json_schema(SCHEMA, vocab).matcher()
    good = tokens(smol, '{"a": 7')
    assert m.count_allowed(good + tokens(smol, "zzz")) == len(good)
    assert m.n_consumed == 0


@pytest.mark.parametrize("schema,words", [
    ('{"type": ', "not valid JSON"),
    ([1, 2], "must be an object"),
    ({"type": "objectx"}, "objectx"),
    ({"type": "string", "format": "not-a-format"}, "not-a-format"),
    ({"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}, "required": ["a"]}, "missing"),
])
def test_bad_schemas_are_named(vocab, schema, words):
    with pytest.raises(GrammarError, match=words):
        compile_json_schema(schema, vocab)


def test_grammars_lark_and_gbnf(smol, vocab):
    for text in ('start: "yes" | "no"', 'root ::= "yes" | "no"'):
        m = compile_grammar(text, vocab).matcher()
        for tok in tokens(smol, "yes"):
            m.consume(tok)
        assert m.is_accepting
    with pytest.raises(GrammarError, match="unknown name"):
        compile_grammar("start: foo", vocab)
    with pytest.raises(GrammarError, match="empty"):
        compile_grammar("  ", vocab)
