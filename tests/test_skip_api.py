"""The patched C API: per-layer attention/FFN skip, on real models of every claimed architecture."""
from __future__ import annotations

import ctypes
import ctypes.util

import numpy as np
import pytest
from conftest import ARCH_MODELS, load_model

from edgessd._capi import Context, Model, bind_skip_api, skip_api
from edgessd.errors import InvalidArgumentError, LibraryError, SkipUnsupportedError
from edgessd.skipset import SKIP_ATTN, SKIP_FFN

PROMPT = "The quick brown fox jumps over the lazy dog. Then it ran into the forest, where"


def full_logits(ctx: Context, tokens: list[int], flags: np.ndarray | None = None, *, all_logits=True) -> np.ndarray:
    """Fresh decode of ``tokens`` from position 0 under ``flags``; a copy of the logits."""
    ctx.kv_clear()
    with ctx.skipping(flags):
        ctx.decode(tokens, 0, all_logits=all_logits)
        return ctx.logits().copy()


def one_layer(model: Model, il: int, flag: int) -> np.ndarray:
    f = model.skip_flags()
    f[il] = flag
    return f


@pytest.fixture(scope="module", params=[name for name, _ in ARCH_MODELS] + ["tiny-qwen3"],
                ids=[a for _, a in ARCH_MODELS] + ["qwen3-synthetic"])
def arch_ctx(request, tmp_path_factory):
    if request.param == "tiny-qwen3":
        # no small Qwen3 model is reachable: a random-weight one runs the real qwen3 graph code
        from tinygguf import write_tiny_qwen3

        model = Model(write_tiny_qwen3(tmp_path_factory.mktemp("gguf") / "tiny-qwen3.gguf"))
        tokens = [int(t) for t in np.random.default_rng(3).integers(0, model.n_vocab, 24)]
    else:
        model = load_model(request.param)
        tokens = model.tokenize(PROMPT)
    ctx = Context(model, n_ctx=256, n_batch=64, n_threads=2)
    yield model, ctx, tokens
    ctx.close()


def test_architecture_is_supported(arch_ctx):
    model, _, _ = arch_ctx
    assert model.skip_supported
    assert model.arch in {"llama", "qwen2", "gemma3", "qwen3"}


def test_zero_mask_is_bitwise_equal_to_no_mask(arch_ctx):
    model, ctx, toks = arch_ctx
    ref = full_logits(ctx, toks)
    for il in range(model.n_layer):  # through the per-layer C call, not just the cached mask
        ctx.set_layer_skip(il, 0)
    ctx.kv_clear()
    ctx.decode(toks, 0, all_logits=True)
    assert np.array_equal(ctx.logits(), ref)
    assert np.array_equal(full_logits(ctx, toks, model.skip_flags()), ref)


@pytest.mark.parametrize("flag", [SKIP_ATTN, SKIP_FFN, SKIP_ATTN | SKIP_FFN], ids=["attn", "ffn", "both"])
@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_skipping_one_sublayer_changes_logits(arch_ctx, flag, where):
    model, ctx, toks = arch_ctx
    il = {"first": 0, "middle": model.n_layer // 2, "last": model.n_layer - 1}[where]
    ref = full_logits(ctx, toks)
    got = full_logits(ctx, toks, one_layer(model, il, flag))
    assert got.shape == ref.shape
    assert np.isfinite(got).all()
    assert np.abs(got - ref).max() > 1e-3, f"skipping layer {il} flag {flag} left the logits unchanged"
    # the mask is scoped: afterwards the full model is back, bit for bit
    assert np.array_equal(full_logits(ctx, toks), ref)


def test_last_layer_skip_with_output_row_selection(arch_ctx):
    """Only the last row requested: the last layer's inp_out_ids row selection must still be right."""
    model, ctx, toks = arch_ctx
    for flag in (SKIP_ATTN, SKIP_FFN):
        mask = one_layer(model, model.n_layer - 1, flag)
        rows = full_logits(ctx, toks, mask, all_logits=True)
        last = full_logits(ctx, toks, mask, all_logits=False)
        np.testing.assert_allclose(last[0], rows[-1], rtol=0, atol=2e-3)


def test_every_attention_skipped_still_runs(arch_ctx):
    """With no attention left the position and mask inputs are unused; decode must not crash."""
    model, ctx, toks = arch_ctx
    got = full_logits(ctx, toks, np.full(model.n_layer, SKIP_ATTN, np.uint8))
    assert np.isfinite(got).all()


def test_mask_is_part_of_graph_reuse(arch_ctx):
    """Same-shape decodes with different masks must not reuse a stale graph (FINDINGS §4)."""
    model, ctx, toks = arch_ctx
    n = len(toks)
    ctx.kv_clear()
    ctx.decode(toks, 0)
    nxt = int(np.argmax(ctx.logits()[0]))
    mask = one_layer(model, model.n_layer // 2, SKIP_ATTN | SKIP_FFN)

    def step(flags):
        with ctx.skipping(flags):
            ctx.decode([nxt], n)
            out = ctx.logits()[0].copy()
        ctx.kv_remove(n)
        return out

    plain = step(None)
    reused_before = ctx.perf()["n_reused"]
    plain_again = step(None)
    assert ctx.perf()["n_reused"] > reused_before, "same shape and mask should reuse the graph"
    skipped = step(mask)
    plain_after = step(None)
    assert np.array_equal(plain, plain_again)
    assert np.abs(skipped - plain).max() > 1e-3
    assert np.array_equal(plain_after, plain)


def test_draft_remove_verify_equals_fresh_decode(arch_ctx):
    """Draft with skips, drop the draft positions, verify with the full model: same logits as a fresh decode."""
    model, ctx, toks = arch_ctx
    n = len(toks)
    mask = model.skip_flags()
    mask[1:-1:2] = SKIP_ATTN | SKIP_FFN  # every odd layer, as a drafter would
    ctx.kv_clear()
    ctx.decode(toks, 0)
    x0 = int(np.argmax(ctx.logits()[0]))
    drafted = [x0]
    with ctx.skipping(mask):
        for i in range(3):
            ctx.decode([drafted[-1]], n + i)
            drafted.append(int(np.argmax(ctx.logits()[0])))
    ctx.kv_remove(n)
    assert ctx.kv_pos_max() == n - 1
    ctx.decode(drafted, n, all_logits=True)
    verified = ctx.logits().copy()

    ctx.kv_clear()
    ctx.decode(toks, 0)
    ctx.decode(drafted, n, all_logits=True)
    fresh = ctx.logits().copy()
    assert verified.shape == (4, model.n_vocab)
    assert np.array_equal(verified, fresh)


def test_unsupported_architecture_returns_error_code(tiny_gpt2):
    model = Model(tiny_gpt2)
    assert model.arch == "gpt2"
    assert not model.skip_supported
    ctx = Context(model, n_ctx=64, n_batch=16, n_threads=1)
    api = skip_api()
    assert api.set_one(ctx.ptr, 0, SKIP_ATTN) == -1
    assert api.set_one(ctx.ptr, 0, 0) == 0  # clearing is not a skip request
    with pytest.raises(SkipUnsupportedError, match="gpt2"):
        ctx.set_layer_skip(0, SKIP_FFN)
    with pytest.raises(SkipUnsupportedError):
        ctx.set_skip(np.array([SKIP_ATTN, 0], np.uint8))
    ctx.decode([1, 2, 3], 0)  # plain decoding still works
    assert np.isfinite(ctx.logits()).all()
    ctx.close()


def test_bad_layer_and_flags_give_error_codes(smol):
    ctx = Context(smol, n_ctx=64, n_batch=16, n_threads=1)
    api = skip_api()
    assert api.set_one(ctx.ptr, smol.n_layer, SKIP_ATTN) == -2
    assert api.set_one(ctx.ptr, -1, SKIP_ATTN) == -2
    assert api.set_one(ctx.ptr, 0, 4) == -3
    assert api.get_one(ctx.ptr, smol.n_layer) == -2
    with pytest.raises(InvalidArgumentError):
        ctx.set_layer_skip(smol.n_layer, SKIP_ATTN)
    with pytest.raises(InvalidArgumentError):
        ctx.set_skip(np.zeros(smol.n_layer + 1, np.uint8))
    ctx.set_layer_skip(3, SKIP_FFN)
    assert api.get_one(ctx.ptr, 3) == SKIP_FFN
    ctx.close()


def test_unpatched_library_gives_clear_error():
    libc = ctypes.CDLL(ctypes.util.find_library("c"))  # a real library without the patch's functions
    with pytest.raises(LibraryError, match="make setup"):
        bind_skip_api(libc)


def test_draft_greedy_in_c_equals_a_python_draft_loop(smol):
    """llama_draft_greedy (patch 0003) drafts what one-token masked decodes + argmax would."""
    ctx = Context(smol, n_ctx=256, n_batch=64, n_threads=2)
    toks = smol.tokenize(PROMPT)
    n = len(toks)
    mask = smol.skip_flags()
    mask[3:27:4] = SKIP_ATTN | SKIP_FFN
    ctx.decode(toks[:-1], 0)
    expected, tok = [], toks[-1]
    with ctx.skipping(mask):
        for i in range(5):
            ctx.decode([tok], n - 1 + i)
            tok = int(np.argmax(ctx.logits()[0]))
            expected.append(tok)
        ctx.kv_remove(n - 1)
        got = ctx.draft_greedy(toks[-1], n - 1, 5, 0.0)
        ctx.kv_remove(n - 1)
        first_only = ctx.draft_greedy(toks[-1], n - 1, 5, 1.01)  # no probability reaches 1.01
        ctx.kv_remove(n - 1)
    assert got == expected
    assert first_only == expected[:1]  # the first draft is always kept
    assert ctx.kv_pos_max() == n - 2
    ctx.close()
