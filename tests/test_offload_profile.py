"""Profiles are keyed by offload: auto plans from the costs of the engine's own -ngl.

On a CPU build -ngl offloads nothing, so both profiles here measure the CPU; what is
checked is which file each engine reads, which is what decides on a GPU build.
"""
from __future__ import annotations

import json

import pytest
from conftest import run_cli

from edgessd import device, registry
from edgessd.engine import Engine
from edgessd.profiler import load_profile, profile_model, profile_path

SMOL = "smollm2-135m"
QUICK = dict(n_ctx=256, k_max=3, reps=1, ctx_lengths=[32])


@pytest.fixture(scope="module")
def two_profiles(tmp_path_factory):
    """smollm2 profiled with -ngl 0 (the API) and -ngl 1 (the CLI) in a private cache."""
    cache = tmp_path_factory.mktemp("cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("EDGESSD_CACHE_DIR", str(cache))
    path = registry.resolve(SMOL)
    prof0, where0, _ = profile_model(path, n_threads=2, **QUICK)
    r = run_cli("profile", SMOL, "-t", "2", "-c", "256", "--k-max", "3", "--reps", "1", "-ngl", "1", "--json",
                env={"EDGESSD_CACHE_DIR": str(cache)})
    assert r.returncode == 0, r.stderr
    prof1 = json.loads(r.stdout)
    yield prof0, where0, prof1, path
    mp.undo()


def test_the_offload_and_gpu_are_in_the_key_and_the_fingerprint(two_profiles):
    prof0, where0, prof1, path = two_profiles
    sha = registry.model_sha256(path)
    where1 = profile_path(sha, 2, 1)
    assert where0 == profile_path(sha, 2) and where1 != where0 and where1.exists()
    assert f"-ngl1-{device.gpu_slug(device.gpu_name())}.json" in where1.name and "-ngl" not in where0.name
    assert "n_gpu_layers" not in prof0.device  # a CPU profile keeps its old fingerprint
    assert prof1["device"]["n_gpu_layers"] == 1 and prof1["device"]["gpu"] == device.gpu_name()
    assert load_profile(where1, model_sha256=sha, fingerprint=device.fingerprint(2, 1)).device == prof1["device"]


def test_auto_reads_the_profile_of_the_engines_own_offload(two_profiles):
    prof0, _, prof1, path = two_profiles
    with Engine(path, n_ctx=256, n_threads=2) as eng:
        assert eng.device_profile() == prof0
    with Engine(path, n_ctx=256, n_threads=2, n_gpu_layers=1) as eng:
        got = eng.device_profile()
        assert got is not None and got.device == prof1["device"] and got.t1_ms == prof1["t1_ms"]
    with Engine(path, n_ctx=256, n_threads=2, n_gpu_layers=2) as eng:
        assert eng.device_profile() is None  # no profile for this offload: no plan from another one's costs


def test_gpu_slug_names_files_safely():
    assert device.gpu_slug("NVIDIA H200") == "nvidia-h200"
    assert device.gpu_slug("NVIDIA GeForce RTX 4090 (24 GB)") == "nvidia-geforce-rtx-4090-24-gb"
    assert device.gpu_slug(None) == "no-gpu"
