"""Fuzzing the readers of files and specs: whatever the input, the result is a valid object or
the module's own EdgessdError subclass, never another exception.

- the domain index sidecar (domains.load_index), with a real hnswlib anchors file beside it;
- the device profile (profiler.load_profile), with and without a matching checksum, and the
  loaded profile must then work in the planner;
- Spec-Bench prompt JSONL (prompts.parse_prompt_line, prompts.load_prompts);
- the skip spec (skipset.parse_skip_spec).

Inputs are small and the example counts fixed, so the whole file runs in well under a minute.
"""
from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from edgessd import device
from edgessd.domains import DomainIndex, DomainSet, IndexFileError, load_index
from edgessd.errors import InvalidArgumentError
from edgessd.features import FeatureSpec
from edgessd.planner import plan_layerskip
from edgessd.profiler import SCHEMA, Profile, ProfileError, content_sha256, format_table, load_profile, save_profile
from edgessd.prompts import Prompt, PromptFileError, load_prompts, parse_prompt_line
from edgessd.skipset import SkipSet, parse_skip_spec

FUZZ = settings(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def fuzz(n: int) -> settings:
    """``n`` examples; no deadline (a loaded machine must not fail a test), no example database."""
    return settings(FUZZ, max_examples=n)

json_scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=12))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=8)
DELETE = object()


def mutate(obj, path: tuple, value):
    """A deep copy of ``obj`` with the item at ``path`` replaced by ``value`` (or deleted)."""
    out = copy.deepcopy(obj)
    node = out
    for key in path[:-1]:
        node = node[key]
    if value is DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return out


# -- the domain index sidecar --------------------------------------------------------------------------
DIM = 8


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory) -> tuple[Path, dict]:
    rng = np.random.default_rng(0)
    anchors = rng.standard_normal((4, DIM)).astype(np.float32)
    anchors /= np.linalg.norm(anchors, axis=1, keepdims=True)
    domains = {"code": [DomainSet(SkipSet.of([3, 5], [4]), 1.4, 0.6, 4), DomainSet(SkipSet.of([], [2]), 1.1, 0.5, 3)],
               "chat": [DomainSet(SkipSet.of([7]), 0.9, 0.4, 4)],
               "learned-1": [DomainSet(SkipSet.of([1], [1]), 1.0, 0.5, 4)]}
    idx = DomainIndex("ab" * 32, FeatureSpec(last_layers=2), DIM, anchors, ["code", "code", "chat", "learned-1"],
                      domains, ood_distance=0.4, k=2, learned=["learned-1"], meta={"seconds": 1.0})
    d = tmp_path_factory.mktemp("fuzz-index")
    idx.save(d)
    return d, json.loads((d / "index.json").read_text())


def sidecar_paths(side: dict) -> list[tuple]:
    """Every place in a sidecar a mutation may hit: top-level fields and the nested ones."""
    paths = [(k,) for k in side] + [("feature", "kind"), ("feature", "last_layers"), ("anchors", 0), ("learned", 0)]
    for dom, sets in side["domains"].items():
        paths.append(("domains", dom))
        for i, s in enumerate(sets):
            paths += [("domains", dom, i)] + [("domains", dom, i, f) for f in s]
    return paths


@fuzz(1500)
@given(data=st.data())
def test_index_sidecar_fuzz(index_dir, data):
    d, good = index_dir
    side = good
    for _ in range(data.draw(st.integers(1, 3))):
        paths = sidecar_paths(good)
        path = data.draw(st.sampled_from(paths))
        value = data.draw(json_values | st.just(DELETE))
        try:
            side = mutate(side, path, value)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed the parent
    (d / "index.json").write_text(json.dumps(side))
    try:
        idx = load_index(d, model_sha256=data.draw(st.sampled_from([None, "ab" * 32])))
    except IndexFileError:
        return
    # what loads must work
    route = idx.route(np.ones(idx.dim, np.float32) / math.sqrt(idx.dim))
    assert route.domain in idx.domains and isinstance(idx.best_set(route.domain).skip, SkipSet)


@fuzz(500)
@given(raw=st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_index_sidecar_bytes_fuzz(index_dir, raw):
    d, _ = index_dir
    (d / "index.json").write_bytes(raw)
    with pytest.raises(IndexFileError):
        load_index(d)


def test_the_fuzzed_index_is_intact_afterwards(index_dir):
    d, good = index_dir
    (d / "index.json").write_text(json.dumps(good))
    assert load_index(d, model_sha256="ab" * 32).anchor_domains == ["code", "code", "chat", "learned-1"]


def test_an_infinite_draft_len_is_an_index_file_error(index_dir):
    d, good = index_dir
    (d / "index.json").write_text(json.dumps(mutate(good, ("domains", "chat", 0, "draft_len"), math.inf)))
    with pytest.raises(IndexFileError):
        load_index(d)


def test_an_anchor_list_shorter_than_the_anchors_file_is_an_index_file_error(index_dir):
    d, good = index_dir
    (d / "index.json").write_text(json.dumps(mutate(good, ("anchors",), good["anchors"][:3])))
    try:
        idx = load_index(d)
    except IndexFileError:
        return
    for seed in range(20):  # every anchor is someone's nearest
        v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
        idx.route(v / np.linalg.norm(v))


# -- the device profile --------------------------------------------------------------------------------
def good_profile(n_layer: int = 4) -> dict:
    p = Profile(schema=SCHEMA, model_sha256="cd" * 32, model_name="m.gguf", device=device.fingerprint(1),
                n_layer=n_layer, ctx=[64, 256], t1_ms=[5.0, 6.0], attn_ms=[0.2, 0.3], mlp_ms=[0.4, 0.4],
                base_ms=[1.0, 1.1], verify_ms=[[5.0, 8.0, 10.0, 12.0], [6.0, 9.0, 11.0, 13.0]], rebuild_ms=0.5,
                attn_fit={"a": 0.1, "b": 7e-4, "rmse_ms": 0.01}, mlp_fit={"mean": 0.4, "rmse_ms": 0.0},
                match_attn=[0.9, 0.7, 0.8, 0.5], match_mlp=[0.6, 0.9, 0.95, 0.3], seconds=2.0)
    return p.to_json()


PROFILE = good_profile()
PROFILE_PATHS = [(k,) for k in PROFILE] + [
    ("ctx", 0), ("ctx", 1), ("t1_ms", 0), ("attn_ms", 1), ("verify_ms", 0), ("verify_ms", 1, 2), ("attn_fit", "a"),
    ("attn_fit", "b"), ("mlp_fit", "mean"), ("match_attn", 0), ("match_mlp", 3), ("device", "threads")]
number_like = (st.floats() | st.integers(-(2**70), 2**70) | st.booleans() | st.none() | st.text(max_size=4)
               | st.lists(st.floats(), max_size=3))


@fuzz(1500)
@given(edits=st.lists(st.tuples(st.sampled_from(PROFILE_PATHS), json_values | number_like | st.just(DELETE)),
                      min_size=1, max_size=3),
       reseal=st.booleans())
def test_profile_fuzz(tmp_path_factory, edits, reseal):
    data = PROFILE
    for path, value in edits:
        try:
            data = mutate(data, path, value)
        except (KeyError, IndexError, TypeError):
            continue
    data = json.loads(json.dumps(data))  # as a file holds it (keys are strings)
    if reseal and isinstance(data, dict):  # a checksum that matches: the field checks must catch it alone
        data = {**data, "sha256": content_sha256({k: v for k, v in data.items() if k != "sha256"})}
    elif isinstance(data, dict):
        data = {**data, "sha256": content_sha256(PROFILE)}
    path = tmp_path_factory.getbasetemp() / "fuzz-profile.json"
    path.write_text(json.dumps(data))
    try:
        prof = load_profile(path, model_sha256=data.get("model_sha256") if isinstance(data, dict) else None)
    except ProfileError:
        return
    # what loads must work in the planner and the table
    for ctx in (1, 100, 10_000):
        cost = prof.cost_at(ctx)
        assert np.all(np.isfinite(cost.verify)) and cost.t1 > 0
    plan_layerskip(prof.cost_at(128), np.array(prof.match_attn), np.array(prof.match_mlp))
    assert "profile of" in format_table(prof)


@fuzz(500)
@given(raw=st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_profile_bytes_fuzz(tmp_path_factory, raw):
    path = tmp_path_factory.getbasetemp() / "fuzz-profile-bytes.json"
    path.write_bytes(raw)
    with pytest.raises(ProfileError):
        load_profile(path)


def test_a_saved_profile_round_trips(tmp_path):
    prof = Profile(**good_profile())
    save_profile(prof, tmp_path / "p.json")
    assert load_profile(tmp_path / "p.json", model_sha256="cd" * 32, fingerprint=device.fingerprint(1)) == prof


# -- prompt JSONL -----------------------------------------------------------------------------------------
prompt_fields = st.fixed_dictionaries({}, optional={"question_id": json_values, "category": json_values,
                                                    "turns": json_values | st.lists(st.text(max_size=8), max_size=3)})


@fuzz(1000)
@given(line=st.text(max_size=200) | prompt_fields.map(json.dumps) | json_values.map(json.dumps))
def test_prompt_line_fuzz(line):
    try:
        p = parse_prompt_line(line, "fuzz:1")
    except PromptFileError as e:
        assert str(e).startswith("fuzz:1: ")
        return
    assert isinstance(p, Prompt) and p.question_id and p.category and p.turns and all(p.turns)


@fuzz(500)
@given(raw=st.binary(max_size=400) | st.lists(st.text(max_size=60), max_size=6).map(lambda ls: "\n".join(ls).encode()))
def test_prompt_file_fuzz(tmp_path_factory, raw):
    path = tmp_path_factory.getbasetemp() / "fuzz-prompts.jsonl"
    path.write_bytes(raw)
    try:
        prompts = load_prompts(path)
    except PromptFileError:
        return
    assert prompts and len({p.question_id for p in prompts}) == len(prompts)


good_prompts = st.lists(st.builds(Prompt, question_id=st.text(min_size=1, max_size=8),
                                  category=st.text(min_size=1, max_size=8),
                                  turns=st.lists(st.text(min_size=1, max_size=20), min_size=1, max_size=3).map(tuple)),
                        min_size=1, max_size=5, unique_by=lambda p: p.question_id)


@fuzz(500)
@given(prompts=good_prompts)
def test_prompt_files_round_trip(tmp_path_factory, prompts):
    """What json.dumps writes (ASCII-escaped, as Spec-Bench's files are) loads back unchanged."""
    path = tmp_path_factory.getbasetemp() / "fuzz-roundtrip.jsonl"
    path.write_text("".join(json.dumps({"question_id": p.question_id, "category": p.category, "turns": list(p.turns)})
                            + "\n" for p in prompts), encoding="utf-8")
    assert load_prompts(path) == prompts


@pytest.mark.parametrize("char", ["\u2028", "\u2029", "\u0085"])
def test_a_prompt_with_a_unicode_line_separator_loads(tmp_path, char):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"question_id": "q1", "category": "poetry", "turns": [f"line one{char}line two"]},
                               ensure_ascii=False) + "\n", encoding="utf-8")
    assert load_prompts(path)[0].turns == (f"line one{char}line two",)


# -- skip specs -------------------------------------------------------------------------------------------
spec_text = st.text(alphabet=st.sampled_from(list("attnmlpffnAT:;,- 0123456789\t\n")), max_size=40)
well_formed_group = st.builds(lambda kind, lo, hi: f"{kind}:{lo}" + ("" if hi is None else f"-{hi}"),
                              st.sampled_from(["attn", "mlp", "ffn"]), st.integers(0, 10**12),
                              st.none() | st.integers(0, 10**12))  # st.from_regex is 4x slower


@fuzz(2000)
@given(text=spec_text | st.text(max_size=40) | well_formed_group)
@example("attn:" + "9" * 5000)
@example("mlp:٣")
def test_skip_spec_fuzz(text):
    try:
        s = parse_skip_spec(text)
    except InvalidArgumentError:
        return
    assert isinstance(s, SkipSet) and parse_skip_spec(s.spec()) == s
    try:
        flags = s.flags(30)
    except InvalidArgumentError:
        assert max(s.attn + s.mlp) >= 30
        return
    assert SkipSet.from_flags(flags) == s


@fuzz(1000)
@given(attn=st.sets(st.integers(0, 63), max_size=20), mlp=st.sets(st.integers(0, 63), max_size=20))
def test_skip_specs_round_trip(attn, mlp):
    s = SkipSet.of(attn, mlp)
    assert parse_skip_spec(s.spec()) == s
    assert s.empty or parse_skip_spec(f" {s.spec().upper()}; ") == s  # case, spaces and a stray ';' are fine
