"""`edgessd info` on real GGUF files: the text form, --json, the cache lookups, and clean errors."""
from __future__ import annotations

import json

import pytest
from conftest import run_cli

from edgessd import registry
from edgessd.profiler import ProfileError, load_profile, profile_path


@pytest.fixture(scope="module")
def smol_path():
    return registry.resolve("smollm2-135m")


def test_info_text_describes_smollm2():
    r = run_cli("info", "smollm2-135m", "-t", "2")
    assert r.returncode == 0, r.stderr
    rows = {line[:14].strip(): line[14:] for line in r.stdout.splitlines() if line[:14].strip()}  # "key  value"
    assert rows["model"] == "smollm2-135m"
    assert rows["architecture"] == "llama: 30 layers, embedding 576, trained context 8192"
    assert rows["quantization"].startswith("Q4_1 (bytes by tensor type: Q4_1 ")
    assert rows["parameters"].startswith("134.5 M")
    assert rows["chat template"].startswith("yes: {% for message in messages %}")
    assert rows["layer skip"] == "supported"
    assert rows["domain index"].startswith("chat, code, math, qa, summarization, translation: 24 anchors")
    assert rows["sha256"] == registry.model_sha256(registry.resolve("smollm2-135m"))
    assert "backend" in rows["device"]


def test_info_json_agrees_with_the_profile_lookup(smol_path):
    r = run_cli("info", "smollm2-135m", "-t", "2", "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert (info["architecture"], info["layers"], info["embedding"]) == ("llama", 30, 576)
    assert info["file_type"] == "Q4_1" and max(info["tensor_bytes"], key=info["tensor_bytes"].get) == "Q4_1"
    assert info["parameters"] == 134_515_008 and info["size_bytes"] == smol_path.stat().st_size
    assert info["layer_skip"] is True and info["chat_template"]["present"] is True
    assert info["device"]["threads"] == 2
    path = profile_path(info["sha256"], 2)
    assert info["profile"]["path"] == str(path)
    try:
        load_profile(path, model_sha256=info["sha256"], fingerprint=info["device"])
        usable = True
    except ProfileError:
        usable = False
    assert info["profile"]["found"] is usable
    if usable:
        assert info["profile"]["t1_ms"] > 0 and info["profile"]["verify4_steps"] > 0


def test_info_shows_the_shipped_index_and_a_broken_cached_one(tmp_path, smol_path):
    from edgessd.domains import shipped_index_dir

    env = {"EDGESSD_CACHE_DIR": str(tmp_path)}
    first = json.loads(run_cli("info", str(smol_path), "-t", "1", "--json", env=env).stdout)
    assert first["profile"]["found"] is False
    assert first["model"] == str(smol_path) and first["profile"]["others"] == []
    shipped = first["domain_index"]
    assert shipped["found"] and shipped["path"] == str(shipped_index_dir(first["sha256"]))
    assert len(shipped["domains"]) == 6 and shipped["anchors"] >= 6 and shipped["learned"] == 0
    index = tmp_path / "index" / first["sha256"][:16]  # the user's index comes first ...
    index.mkdir(parents=True)
    (index / "index.json").write_text('{"schema": 1, "model_sha256": "')  # ... but this one is broken
    info = json.loads(run_cli("info", str(smol_path), "-t", "1", "--json", env=env).stdout)
    assert info["domain_index"]["found"] is False and info["domain_index"]["path"] == str(index)
    assert "unreadable" in info["domain_index"]["reason"]
    text = run_cli("info", str(smol_path), "-t", "1", env=env).stdout
    assert "domain index  broken, ignored:" in text


def test_info_on_an_architecture_without_layer_skip(tiny_gpt2):
    r = run_cli("info", str(tiny_gpt2), "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["architecture"] == "gpt2" and info["layer_skip"] is False
    assert info["file_type"] == "ALL_F32" and set(info["tensor_bytes"]) == {"F32"}
    assert info["chat_template"] == {"present": False, "first_line": None}
    text = run_cli("info", str(tiny_gpt2)).stdout
    assert "not supported for gpt2" in text and "chat template none" in text


@pytest.mark.parametrize("make,needle", [
    (lambda tmp: tmp / "missing.gguf", "model file not found"),
    (lambda tmp: (tmp / "notes.gguf", (tmp / "notes.gguf").write_text("not a model"))[0], "is not a GGUF file"),
])
def test_info_errors_are_one_line_with_exit_code_2(tmp_path, make, needle):
    r = run_cli("info", str(make(tmp_path)))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgessd: error: ") and needle in lines[0], r.stderr
