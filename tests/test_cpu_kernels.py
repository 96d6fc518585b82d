"""edgessd's CPU batch kernels (patch 0005, patches/cpu-kernels/): bit-exact by construction.

- Each SIMD variant this CPU runs equals the C specification bit for bit on random inputs
  (tests/c/check_cpu_kernels.c for the matmuls, tests/c/check_fa_kernels.c for attention,
  compiled here from the same sources the build uses).
- A k-token batch's logits are *equal* (not close) to k one-token decodes, k = 2..16, on
  every registry model and on tiny models that llama.cpp quantizes here to each covered type.
- ``EDGESSD_CPU_KERNELS`` switches kernels per process; ``stock`` gives ggml's own.
"""
from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest
from conftest import REPO, load_model

KERNELS = REPO / "patches" / "cpu-kernels"
KS = range(2, 17)
PROMPT = "The quick brown fox jumps over the lazy dog. In the beginning was the word, and the word was with"
CONT = " God, and the word was God. He was in the beginning with God; all things were made through him."

# llama_ftype of a pure quantization to each covered type
FTYPES = {"Q4_0": 2, "Q4_1": 3, "Q8_0": 7, "Q5_0": 8, "Q4_K": 15, "Q5_K": 17, "Q6_K": 18}


def cpu_flags() -> set[str]:
    try:
        m = re.search(r"^flags\s*:\s*(.*)$", Path("/proc/cpuinfo").read_text(), re.M)
        return set(m.group(1).split()) if m else set()
    except OSError:
        return set()


def x86_simd() -> bool:
    return {"avx2", "fma", "f16c"} <= cpu_flags()


needs_kernels = pytest.mark.skipif(not x86_simd(), reason="edgessd's batch kernels are x86 AVX2/AVX-512 only; "
                                                          "elsewhere ggml's stock kernels run")


def run_checker(name: str, tmp_path: Path) -> tuple[list[str], int]:
    """Build tests/c/<name>.c against the kernel sources the build uses, run it; the ISAs it
    checked and how many checks passed (it must report no failure)."""
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    assert cc, "a C compiler is needed to build llama.cpp, and so to check its kernels"
    exe = tmp_path / name
    srcs = [str(REPO / "tests" / "c" / f"{name}.c")] + [str(p) for p in sorted(KERNELS.glob("*.c"))]
    build = subprocess.run([cc, "-O3", "-std=gnu11", "-Wall", "-Werror", "-I", str(KERNELS), "-o", str(exe),
                            *srcs, "-lm"], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    r = subprocess.run([str(exe)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:]
    isas = r.stdout.splitlines()[0].split(":")[1].split()
    assert "ref" in isas
    if x86_simd():
        assert "avx2" in isas
    if {"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_vnni"} <= cpu_flags():
        assert "avx512" in isas
    m = re.search(r"^(\d+) passed, (\d+) failed$", r.stdout, re.M)
    assert m and m.group(2) == "0", r.stdout[-2000:]
    return isas, int(m.group(1))


def test_every_simd_variant_equals_the_c_specification(tmp_path):
    _, passed = run_checker("check_cpu_kernels", tmp_path)
    assert passed > 1000


def test_every_attention_variant_equals_its_c_specification(tmp_path):
    _, passed = run_checker("check_fa_kernels", tmp_path)
    assert passed > 5000


def assert_batches_equal_single_steps(model, prompt: list[int], cont: list[int], *, n_ctx: int = 256) -> None:
    """Decode ``prompt``, then for each k: cont[:k] as one batch with every row's logits, against
    the same k tokens decoded one at a time; the logits must match bit for bit."""
    from edgessd._capi import Context
    from edgessd.batchcheck import batch_and_single_logits, differing_rows

    ctx = Context(model, n_ctx=n_ctx, n_batch=512, n_threads=2)
    try:
        ctx.decode(prompt, 0)
        p = len(prompt)
        for k in KS:
            toks = cont[:k]
            assert len(toks) == k
            batch, single = batch_and_single_logits(ctx, p, toks)
            differ = differing_rows(batch, single)
            assert not differ, (f"k={k}: rows {differ} differ from one-token decodes, "
                                f"by up to {np.abs(batch - single).max():.3g}")
    finally:
        ctx.close()


@needs_kernels
@pytest.mark.parametrize("name", ["smollm2-135m", pytest.param("qwen2.5-coder-0.5b", marks=pytest.mark.slow),
                                  pytest.param("gemma3-270m", marks=pytest.mark.slow),
                                  pytest.param("qwen2.5-coder-1.5b", marks=pytest.mark.slow)])
def test_a_batch_gives_the_logits_of_one_token_decodes_on_every_registry_model(name):
    from edgessd._capi import cpu_kernels

    assert cpu_kernels() in ("avx2", "avx512"), f"kernels {cpu_kernels()!r} on an AVX2 CPU"
    model = load_model(name)
    prompt = model.tokenize(PROMPT)
    cont = model.tokenize(CONT, add_special=False)
    assert_batches_equal_single_steps(model, prompt, cont)


@needs_kernels
def test_a_batch_is_exact_at_a_long_context_too(smol):
    """Past 512 cached tokens ggml splits one query's attention over the KV range across threads
    (split-KV flash attention), which rounds unlike a batch's rows; with the kernels on, patch
    0005 runs edgessd's attention kernel, whose rows do not depend on the batch or the view."""
    rng = np.random.default_rng(4)
    toks = [int(t) for t in rng.integers(100, smol.n_vocab, size=700)]
    assert_batches_equal_single_steps(smol, toks[:680], toks[680:], n_ctx=1024)


def quantize(src: Path, dst: Path, ftype: int) -> Path:
    import llama_cpp.llama_cpp as C

    params = C.llama_model_quantize_default_params()
    params.ftype = ftype
    params.pure = True
    params.nthread = 2
    rc = C.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    assert rc == 0, f"llama_model_quantize failed ({rc})"
    return dst


@pytest.fixture(scope="module")
def tiny_llama_f32(tmp_path_factory):
    from tinygguf import write_tiny_llama

    return write_tiny_llama(tmp_path_factory.mktemp("gguf") / "tiny-llama-f32.gguf")


@needs_kernels
@pytest.mark.parametrize("qtype", sorted(FTYPES))
def test_a_batch_is_exact_for_each_covered_type_on_a_model_quantized_here(tiny_llama_f32, tmp_path, qtype):
    from edgessd._capi import Model, cpu_kernels_cover

    path = quantize(tiny_llama_f32, tmp_path / f"tiny-llama-{qtype}.gguf", FTYPES[qtype])
    weights = {t.tensor_type.name for t in gguf.GGUFReader(str(path)).tensors if len(t.shape) == 2}
    assert weights == {qtype}, f"expected every matmul weight in {qtype}, got {weights}"
    assert cpu_kernels_cover(gguf.GGMLQuantizationType[qtype].value)
    model = Model(path)
    rng = np.random.default_rng(3)
    toks = [int(t) for t in rng.integers(0, model.n_vocab, size=40)]
    assert_batches_equal_single_steps(model, toks[:24], toks[24:])


LAST_LOGITS = """
import sys
import numpy as np
from edgessd._capi import Context, Model

def last_logits(path):
    model = Model(path)
    ctx = Context(model, n_ctx=64, n_batch=64, n_threads=2)
    try:
        ctx.decode([5, 17, 99, 3, 250], 0)
        ctx.decode([41], 5)
        return np.array(ctx.logits()[-1])
    finally:
        ctx.close()
        model.close()

for path, out in zip(sys.argv[1::2], sys.argv[2::2]):
    np.save(out, last_logits(path))
"""


@needs_kernels
@pytest.mark.parametrize("qtype", ["Q4_K", "Q6_K"])
def test_a_model_loaded_after_a_freed_one_computes_from_its_own_weights(tmp_path, qtype):
    """Q4_K and Q6_K weights are re-laid out by their first use into a copy found by the weight's
    address (patch 0005, edgessd-x16.h), and the copy goes when its buffer is freed. Two models
    of one shape load one after the other, most likely at the same addresses: the second must
    give, in the same process, the logits it gives in a process of its own."""
    from tinygguf import write_tiny_llama

    a, b = (quantize(write_tiny_llama(tmp_path / f"{n}-f32.gguf", seed=s), tmp_path / f"{n}.gguf", FTYPES[qtype])
            for n, s in (("a", 2), ("b", 3)))
    run = [sys.executable, "-c", LAST_LOGITS]
    alone = subprocess.run([*run, str(b), str(tmp_path / "b-alone.npy")], cwd=REPO, capture_output=True, text=True,
                           timeout=300)
    assert alone.returncode == 0, alone.stderr
    after = subprocess.run([*run, str(a), str(tmp_path / "a.npy"), str(b), str(tmp_path / "b-after-a.npy")],
                           cwd=REPO, capture_output=True, text=True, timeout=300)
    assert after.returncode == 0, after.stderr
    la, lb, lb_after = (np.load(tmp_path / f) for f in ("a.npy", "b-alone.npy", "b-after-a.npy"))
    assert la.tobytes() != lb.tobytes()
    assert lb_after.tobytes() == lb.tobytes()


RESIDENT_AFTER_DECODE = """
import sys
from edgessd._capi import Context, Model

model = Model(sys.argv[1])
ctx = Context(model, n_ctx=64, n_batch=64, n_threads=2)
ctx.decode([5, 17, 99], 0)
ctx.decode([41], 3)
with open("/proc/self/status") as f:
    print(next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) // 1024)
"""


def on_tmpfs(path: Path) -> bool:
    mounts = [line.split() for line in Path("/proc/mounts").read_text().splitlines()]
    best = max((m for m in mounts if str(path.resolve()).startswith(m[1])), key=lambda m: len(m[1]))
    return best[2] == "tmpfs"


@needs_kernels
def test_the_q6_k_copy_takes_the_place_of_its_weights_in_memory(tmp_path):
    """Q6_K's 16-row copy serves batches of every size, and the pages of the weights it was made
    from are given back (MADV_PAGEOUT), so a Q6_K model's process stays the size it is with
    stock kernels, which keep Q6_K as it is. Without the give-back it grows by the copy."""
    from tinygguf import write_tiny_llama

    if not Path("/proc/self/status").exists():
        pytest.skip("reads the resident set from /proc (Linux)")
    if on_tmpfs(tmp_path):
        pytest.skip("the model file is on tmpfs: without swap its pages cannot be given back")
    f32 = write_tiny_llama(tmp_path / "m-f32.gguf", n_layer=2, n_embd=1024, n_head=8, n_head_kv=4, n_ff=3072,
                           n_vocab=8192)
    path = quantize(f32, tmp_path / "m-q6_k.gguf", FTYPES["Q6_K"])
    with open(path, "rb") as f:
        os.fsync(f.fileno())  # a page still to be written is not given back at once
    copy_mb = sum(int(t.n_bytes) for t in gguf.GGUFReader(str(path)).tensors
                  if len(t.shape) == 2 and t.name != "token_embd.weight") / 2**20
    assert copy_mb > 20
    resident = {}
    for mode in ("stock", "auto"):
        r = subprocess.run([sys.executable, "-c", RESIDENT_AFTER_DECODE, str(path)], cwd=REPO, capture_output=True,
                           text=True, timeout=300, env=dict(os.environ, EDGESSD_CPU_KERNELS=mode))
        assert r.returncode == 0, r.stderr
        resident[mode] = int(r.stdout.split()[-1])
    assert resident["auto"] - resident["stock"] < 0.25 * copy_mb, (resident, copy_mb)


def kernels_in(env_value: str) -> subprocess.CompletedProcess:
    code = "from edgessd._capi import cpu_kernels; print(cpu_kernels())"
    env = dict(os.environ, EDGESSD_CPU_KERNELS=env_value)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO,
                          timeout=120)


@needs_kernels
def test_edgessd_cpu_kernels_chooses_per_process():
    assert kernels_in("stock").stdout.strip() == "stock"
    assert kernels_in("ref").stdout.strip() == "ref"
    assert kernels_in("avx2").stdout.strip() == "avx2"
    assert kernels_in("").stdout.strip() in ("avx2", "avx512")
    bad = kernels_in("fastest")
    assert bad.stdout.strip() == "stock"
    assert "EDGESSD_CPU_KERNELS=fastest" in bad.stderr and "auto, stock, ref, avx2 or avx512" in bad.stderr
