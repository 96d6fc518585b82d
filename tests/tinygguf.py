"""Tiny, real GGUF files for architectures no registry model has.

- GPT-2: an architecture the layer-skip patch does not cover (the "unsupported" tests).
- Qwen3: covered by the patch, but no small Qwen3 model is reachable here.

Random weights and a dummy vocabulary: llama.cpp loads and runs them through the
architecture's real graph code; the output is noise, which is all these tests need.
"""
from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np


def _writer(path: Path, arch: str, *, n_layer: int, n_embd: int, n_ff: int, n_head: int, n_vocab: int,
            n_ctx: int) -> gguf.GGUFWriter:
    """A writer with the hyperparameters every tiny model shares, and a dummy vocabulary."""
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name(f"tiny-{arch}-test")
    writer.add_context_length(n_ctx)
    writer.add_embedding_length(n_embd)
    writer.add_feed_forward_length(n_ff)
    writer.add_block_count(n_layer)
    writer.add_head_count(n_head)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("none")
    writer.add_vocab_size(n_vocab)
    return writer


def _finish(writer: gguf.GGUFWriter, path: Path) -> Path:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def write_tiny_gpt2(path: Path, *, n_layer: int = 2, n_embd: int = 64, n_vocab: int = 64, n_ctx: int = 128) -> Path:
    rng = np.random.default_rng(0)

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    writer = _writer(path, "gpt2", n_layer=n_layer, n_embd=n_embd, n_ff=4 * n_embd, n_head=4, n_vocab=n_vocab,
                     n_ctx=n_ctx)
    writer.add_layer_norm_eps(1e-5)
    # numpy shapes are reversed relative to ggml's {ne0, ne1}
    writer.add_tensor("token_embd.weight", w(n_vocab, n_embd))
    writer.add_tensor("position_embd.weight", w(n_ctx, n_embd))
    writer.add_tensor("output_norm.weight", np.ones(n_embd, np.float32))
    writer.add_tensor("output_norm.bias", np.zeros(n_embd, np.float32))
    for i in range(n_layer):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(n_embd, np.float32))
        writer.add_tensor(f"blk.{i}.attn_norm.bias", np.zeros(n_embd, np.float32))
        writer.add_tensor(f"blk.{i}.attn_qkv.weight", w(3 * n_embd, n_embd))
        writer.add_tensor(f"blk.{i}.attn_qkv.bias", np.zeros(3 * n_embd, np.float32))
        writer.add_tensor(f"blk.{i}.attn_output.weight", w(n_embd, n_embd))
        writer.add_tensor(f"blk.{i}.attn_output.bias", np.zeros(n_embd, np.float32))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(n_embd, np.float32))
        writer.add_tensor(f"blk.{i}.ffn_norm.bias", np.zeros(n_embd, np.float32))
        writer.add_tensor(f"blk.{i}.ffn_up.weight", w(4 * n_embd, n_embd))
        writer.add_tensor(f"blk.{i}.ffn_up.bias", np.zeros(4 * n_embd, np.float32))
        writer.add_tensor(f"blk.{i}.ffn_down.weight", w(n_embd, 4 * n_embd))
        writer.add_tensor(f"blk.{i}.ffn_down.bias", np.zeros(n_embd, np.float32))
    return _finish(writer, path)


def write_tiny_qwen3(path: Path, *, n_layer: int = 4, n_embd: int = 64, n_head: int = 4, n_head_kv: int = 2,
                     n_vocab: int = 96, n_ctx: int = 256) -> Path:
    rng = np.random.default_rng(1)
    head = n_embd // n_head

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.2).astype(np.float32)

    writer = _writer(path, "qwen3", n_layer=n_layer, n_embd=n_embd, n_ff=2 * n_embd, n_head=n_head,
                     n_vocab=n_vocab, n_ctx=n_ctx)
    writer.add_head_count_kv(n_head_kv)
    writer.add_key_length(head)
    writer.add_value_length(head)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_tensor("token_embd.weight", w(n_vocab, n_embd))
    writer.add_tensor("output_norm.weight", np.ones(n_embd, np.float32))
    for i in range(n_layer):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(n_embd, np.float32))
        writer.add_tensor(f"blk.{i}.attn_q.weight", w(n_head * head, n_embd))
        writer.add_tensor(f"blk.{i}.attn_k.weight", w(n_head_kv * head, n_embd))
        writer.add_tensor(f"blk.{i}.attn_v.weight", w(n_head_kv * head, n_embd))
        writer.add_tensor(f"blk.{i}.attn_output.weight", w(n_embd, n_head * head))
        writer.add_tensor(f"blk.{i}.attn_q_norm.weight", np.ones(head, np.float32))
        writer.add_tensor(f"blk.{i}.attn_k_norm.weight", np.ones(head, np.float32))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(n_embd, np.float32))
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", w(2 * n_embd, n_embd))
        writer.add_tensor(f"blk.{i}.ffn_up.weight", w(2 * n_embd, n_embd))
        writer.add_tensor(f"blk.{i}.ffn_down.weight", w(n_embd, 2 * n_embd))
    return _finish(writer, path)


def write_tiny_llama(path: Path, *, n_layer: int = 2, n_embd: int = 256, n_head: int = 4, n_head_kv: int = 2,
                     n_ff: int = 512, n_vocab: int = 512, n_ctx: int = 256, seed: int = 2) -> Path:
    """Llama with every width a multiple of 256, so that each quantized type (K-quants too) can
    hold every matmul weight: the input for tests that quantize it with llama.cpp."""
    rng = np.random.default_rng(seed)
    head = n_embd // n_head

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.1).astype(np.float32)

    writer = _writer(path, "llama", n_layer=n_layer, n_embd=n_embd, n_ff=n_ff, n_head=n_head,
                     n_vocab=n_vocab, n_ctx=n_ctx)
    writer.add_head_count_kv(n_head_kv)
    writer.add_rope_dimension_count(head)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_tensor("token_embd.weight", w(n_vocab, n_embd))
    writer.add_tensor("output_norm.weight", np.ones(n_embd, np.float32))
    writer.add_tensor("output.weight", w(n_vocab, n_embd))
    for i in range(n_layer):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(n_embd, np.float32))
        writer.add_tensor(f"blk.{i}.attn_q.weight", w(n_head * head, n_embd))
        writer.add_tensor(f"blk.{i}.attn_k.weight", w(n_head_kv * head, n_embd))
        writer.add_tensor(f"blk.{i}.attn_v.weight", w(n_head_kv * head, n_embd))
        writer.add_tensor(f"blk.{i}.attn_output.weight", w(n_embd, n_head * head))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(n_embd, np.float32))
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", w(n_ff, n_embd))
        writer.add_tensor(f"blk.{i}.ffn_up.weight", w(n_ff, n_embd))
        writer.add_tensor(f"blk.{i}.ffn_down.weight", w(n_embd, n_ff))
    return _finish(writer, path)
