"""The learning switch: with learn off, an out-of-domain prompt leaves the cache byte for byte as
it was; with learn on, the same prompt adds a learned anchor to the model's index on disk.

Every test runs in a private EDGESSD_CACHE_DIR holding an index (built here on the real model)
where every prompt is out of domain (threshold 0) and the nearest domain's set is useless while
the other's is good: exactly the case where an online search learns an anchor. The Python API runs for real, both
ways; the CLI flags are tested in test_crash_safety.py.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from edgessd import Engine, registry
from edgessd.domains import DomainIndex, DomainSet, index_dir, load_index
from edgessd.features import FeatureSpec
from edgessd.skipset import SkipSet

SMOL = "smollm2-135m"
PROMPT = "Write a Python function that multiplies two numbers."
RUN = ("-n", "16", "--mode", "layerskip", "--temp", "0", "-t", "1", "-c", "512")


@pytest.fixture(scope="module")
def smol_path() -> Path:
    return registry.resolve(SMOL)


@pytest.fixture(scope="module")
def template(smol_path, tmp_path_factory) -> Path:
    """A cache directory holding only the out-of-domain index for smollm2 (and its hash memo)."""
    root = tmp_path_factory.mktemp("template") / "cache"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGESSD_CACHE_DIR", str(root))
        sha = registry.model_sha256(smol_path)
        spec = FeatureSpec(last_layers=4)
        with Engine(smol_path, n_ctx=512, n_threads=1, learn="off") as eng:
            near = eng.prompt_feature("Write a Python function that adds two numbers.", spec)
        DomainIndex(sha, spec, len(near), np.stack([near, -near]), ["near", "far"],
                    {"near": [DomainSet(SkipSet.of(range(30), range(30)), 0.1, 0.05, 4)],
                     "far": [DomainSet(SkipSet.of([], [20]), 2.0, 0.8, 4)]},
                    ood_distance=0.0, k=1).save(index_dir(sha))
    return root


@pytest.fixture
def cache(template, tmp_path, monkeypatch) -> Path:
    """A fresh copy of the template cache, set as EDGESSD_CACHE_DIR for this process and its CLIs."""
    root = tmp_path / "cache"
    shutil.copytree(template, root)
    monkeypatch.setenv("EDGESSD_CACHE_DIR", str(root))
    return root


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root``, by relative path, with its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def learned(root: Path) -> list[str]:
    sha = registry.spec(SMOL).sha256
    return load_index(root / "index" / sha[:16], model_sha256=sha).learned


@pytest.mark.parametrize("learn", ["off", "on"])
def test_engine_learn_switch(smol_path, cache, learn):
    before = snapshot(cache)
    with Engine(smol_path, n_ctx=512, n_threads=1, learn=learn) as eng:
        r = eng.generate(PROMPT, n_predict=16, mode="layerskip")
    assert r.domain == "near?"  # routed out of domain: the case that learns
    if learn == "off":
        assert snapshot(cache) == before
    else:
        assert len(learned(cache)) == 1 and snapshot(cache) != before


def test_a_plain_call_after_an_out_of_domain_one_learns_nothing(smol_path, cache):
    with Engine(smol_path, n_ctx=512, n_threads=1, learn="on") as eng:
        assert eng.generate(PROMPT, n_predict=4, mode="layerskip").domain == "near?"  # too short to learn from
        before = snapshot(cache)
        eng.generate("Write a Python class for a bank account.", n_predict=16, mode="plain")
    assert snapshot(cache) == before  # plain decoding routes nothing, so it learns nothing

