"""Constrained decoding stays lossless under speculation: with a JSON schema, greedy output
under plain, lookup, layerskip and auto is the same, token for token, and valid JSON of the
schema; logprobs are the same under every mode.

smollm2-135m runs 3 schemas; qwen2.5-coder-0.5b (slow) runs 8 of different shapes: nested
objects, arrays, enums, numbers. The prompt repeats the schema, so lookup drafts copy its keys.
Equality is asserted where the batch kernels are exact (conftest.batches_exact).
"""
from __future__ import annotations

import json

import pytest
from conftest import batches_exact

from edgessd.engine import Engine

MODES = ("plain", "lookup", "layerskip", "auto")
OBJ = "object"
SCHEMAS = {
    "flat": {"type": OBJ, "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
             "required": ["name", "age"]},
    "enum": {"type": OBJ, "properties": {"color": {"enum": ["red", "green", "blue"]},
                                         "size": {"enum": ["S", "M", "L"]}}, "required": ["color", "size"]},
    "array": {"type": OBJ, "properties": {"primes": {"type": "array", "items": {"type": "integer"},
                                                     "minItems": 3, "maxItems": 6}}, "required": ["primes"]},
    "numbers": {"type": OBJ, "properties": {"lat": {"type": "number"}, "lon": {"type": "number"},
                                            "elevation_m": {"type": "integer", "minimum": 0}},
                "required": ["lat", "lon", "elevation_m"]},
    "nested": {"type": OBJ, "properties": {
        "user": {"type": OBJ, "properties": {"id": {"type": "integer"},
                                             "address": {"type": OBJ, "properties": {
                                                 "city": {"type": "string"}, "zip": {"type": "string"}},
                                                 "required": ["city", "zip"]}},
                 "required": ["id", "address"]}}, "required": ["user"]},
    "array_of_objects": {"type": OBJ, "properties": {"items": {"type": "array", "maxItems": 3, "items": {
        "type": OBJ, "properties": {"sku": {"type": "string"}, "qty": {"type": "integer"}},
        "required": ["sku", "qty"]}}}, "required": ["items"]},
    "boolean_and_null": {"type": OBJ, "properties": {"done": {"type": "boolean"},
                                                     "note": {"type": ["string", "null"]}},
                         "required": ["done", "note"]},
    "string_array_enum": {"type": OBJ, "properties": {
        "title": {"type": "string", "maxLength": 40},
        "tags": {"type": "array", "items": {"enum": ["news", "sport", "tech", "art"]}, "maxItems": 4},
        "score": {"type": "number"}}, "required": ["title", "tags", "score"]},
}
SMALL = ("flat", "enum", "nested")


def prompt(name: str) -> list[dict]:
    schema = json.dumps(SCHEMAS[name])
    return [{"role": "user", "content": f"Reply with one JSON object for this schema ({name}): {schema}"}]


def check_valid(name: str, text: str) -> None:
    doc = json.loads(text)
    assert set(SCHEMAS[name]["required"]) <= set(doc), text


def run_all_modes(eng: Engine, name: str, n: int) -> dict:
    out = {mode: eng.generate(prompt(name), n_predict=n, mode=mode, json_schema=SCHEMAS[name], logprobs=1)
           for mode in MODES}
    for r in out.values():
        if r.stop_reason == "eos":
            check_valid(name, r.text)
    return out


def assert_same(out: dict, model_path) -> None:
    plain = out["plain"]
    if not batches_exact(model_path):
        pytest.skip("batched verification is not bit-exact with these kernels")
    for mode, r in out.items():
        assert r.tokens == plain.tokens, f"{mode} parted from plain"
        assert [x.logprob for x in r.logprobs] == [x.logprob for x in plain.logprobs], mode


@pytest.fixture(scope="module")
def smol_eng():
    e = Engine("smollm2-135m", n_ctx=1024, n_threads=2)
    yield e
    e.close()


@pytest.mark.parametrize("name", SMALL)
def test_smollm2_modes_agree_under_a_schema(smol_eng, name):
    out = run_all_modes(smol_eng, name, 48)
    assert out["plain"].stop_reason == "eos", out["plain"].text
    assert out["layerskip"].stats.n_drafted > 0
    assert_same(out, smol_eng.model_path)


def test_sampled_constrained_output_is_valid(smol_eng):
    # closed, so that a valid object is at most ~15 tokens: an open one lets a sampled
    # generation add properties past any n_predict (seed 2 did, on a Zen 4 host)
    closed = {**SCHEMAS["enum"], "additionalProperties": False}
    for mode in ("plain", "lookup", "layerskip"):
        for seed in range(6):
            r = smol_eng.generate(prompt("enum"), n_predict=40, mode=mode, json_schema=closed,
                                  temperature=1.0, seed=seed)
            assert r.stop_reason == "eos"
            doc = json.loads(r.text)
            assert set(doc) == {"color", "size"}, r.text
            assert doc["color"] in ("red", "green", "blue") and doc["size"] in ("S", "M", "L")


def test_a_grammar_constrains_every_mode(smol_eng):
    for mode in MODES:
        r = smol_eng.generate("Is the sky blue? Answer:", n_predict=8, mode=mode, grammar='start: " yes" | " no"')
        assert r.text in (" yes", " no") and r.stop_reason == "eos"


@pytest.fixture(scope="module")
def qwen_eng():
    e = Engine("qwen2.5-coder-0.5b", n_ctx=1024, n_threads=2)
    yield e
    e.close()


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SCHEMAS))
def test_qwen_modes_agree_on_eight_schemas(qwen_eng, name):
    out = run_all_modes(qwen_eng, name, 64)
    assert out["plain"].stop_reason in ("eos", "length")
    assert_same(out, qwen_eng.model_path)
