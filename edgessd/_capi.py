"""The one module that touches ctypes and llama.cpp's C API.

It binds edgessd's patched functions (per-layer sublayer skip) from
llama-cpp-python's library handle, and wraps the few llama.cpp calls the engine
needs in two small classes, :class:`Model` and :class:`Context`. Every return
code is checked and turned into a named error; every handle is freed.

Shapes: logits are returned as NumPy *views* of llama.cpp's buffer,
``[n_outputs, n_vocab]`` float32, valid until the next ``decode``.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import time
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import (
    ContextOverflowError,
    InvalidArgumentError,
    LibraryError,
    ModelError,
    SkipUnsupportedError,
)

try:
    import llama_cpp.llama_cpp as C
except (ImportError, OSError) as e:  # pragma: no cover - depends on the install
    raise LibraryError(f"cannot load llama-cpp-python ({e}); "
                       "run `edgessd setup` (in a checkout: `make setup`) to build edgessd's patched llama.cpp") from e

BUILD_HINT = "run `edgessd setup` (in a checkout: `make setup`) to build llama-cpp-python with edgessd's patches"


@dataclass(frozen=True)
class SkipAPI:
    """The functions edgessd's patch adds to libllama."""

    supported: ctypes._CFuncPtr
    set_one: ctypes._CFuncPtr
    set_all: ctypes._CFuncPtr
    get_one: ctypes._CFuncPtr
    draft_greedy: ctypes._CFuncPtr
    kv_v_mean: ctypes._CFuncPtr
    kv_v_dim: ctypes._CFuncPtr


def bind_skip_api(lib: ctypes.CDLL) -> SkipAPI:
    """Bind the layer-skip functions from ``lib``; LibraryError if it is an unpatched build."""
    try:
        supported = lib.llama_layer_skip_supported
        set_one = lib.llama_set_layer_skip
        set_all = lib.llama_set_layer_skip_all
        get_one = lib.llama_get_layer_skip
        draft_greedy = lib.llama_draft_greedy
        kv_v_mean = lib.llama_kv_v_mean
        kv_v_dim = lib.llama_kv_v_dim
    except AttributeError as e:
        name = getattr(lib, "_name", "libllama")
        raise LibraryError(f"{name} lacks {e.args[0].split(':')[-1].strip()} from edgessd's patches "
                           f"(an unpatched or outdated llama.cpp build); {BUILD_HINT}") from e
    supported.argtypes, supported.restype = [ctypes.c_void_p], ctypes.c_bool
    set_one.argtypes, set_one.restype = [ctypes.c_void_p, ctypes.c_int32, ctypes.c_uint8], ctypes.c_int32
    set_all.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint8), ctypes.c_int32]
    set_all.restype = ctypes.c_int32
    get_one.argtypes, get_one.restype = [ctypes.c_void_p, ctypes.c_int32], ctypes.c_int32
    draft_greedy.argtypes = [ctypes.c_void_p, ctypes.c_int32, ctypes.c_int32, ctypes.c_int32, ctypes.c_float,
                             ctypes.POINTER(ctypes.c_int32), ctypes.POINTER(ctypes.c_float)]
    draft_greedy.restype = ctypes.c_int32
    kv_v_mean.argtypes = [ctypes.c_void_p, ctypes.c_int32, ctypes.c_int32, ctypes.c_int32,
                          ctypes.POINTER(ctypes.c_float), ctypes.c_int32]
    kv_v_mean.restype = ctypes.c_int32
    kv_v_dim.argtypes, kv_v_dim.restype = [ctypes.c_void_p, ctypes.c_int32], ctypes.c_int32
    return SkipAPI(supported, set_one, set_all, get_one, draft_greedy, kv_v_mean, kv_v_dim)


_SKIP: SkipAPI | None = None
_LOG_CB = None  # keep the ctypes callback alive


def skip_api() -> SkipAPI:
    global _SKIP
    if _SKIP is None:
        _SKIP = bind_skip_api(C._lib)
    return _SKIP


_GGML_CPU: ctypes.CDLL | None | bool = False  # False: not looked up yet; None: not a patched build


def _edgessd_cpu() -> ctypes.CDLL | None:
    """libggml-cpu with patch 0005's functions bound, or None for a build without them."""
    global _GGML_CPU
    if _GGML_CPU is False:
        try:
            lib = ctypes.CDLL(str(Path(getattr(C._lib, "_name", "")).parent / "libggml-cpu.so"))
            lib.ggml_cpu_edgessd_kernels.argtypes, lib.ggml_cpu_edgessd_kernels.restype = [], ctypes.c_char_p
            lib.ggml_cpu_edgessd_claims.argtypes, lib.ggml_cpu_edgessd_claims.restype = [ctypes.c_int], ctypes.c_bool
        except (OSError, AttributeError):
            lib = None
        _GGML_CPU = lib
    return _GGML_CPU


def cpu_kernels() -> str:
    """The CPU matmul kernels small batches run on: ``avx512``, ``avx2`` or ``ref`` for
    edgessd's bit-exact ones (patch 0005), ``stock`` for ggml's own. ``EDGESSD_CPU_KERNELS``
    (auto|stock|ref|avx2|avx512, read once per process) chooses; a build without the patch
    reports ``stock``."""
    lib = _edgessd_cpu()
    return lib.ggml_cpu_edgessd_kernels().decode() if lib else "stock"


def cpu_kernels_cover(ggml_type: int) -> bool:
    """Whether the kernels in use (:func:`cpu_kernels`) take weights of this ggml type id."""
    lib = _edgessd_cpu()
    return bool(lib and lib.ggml_cpu_edgessd_claims(ggml_type))


def _init_backend() -> None:
    global _LOG_CB
    if _LOG_CB is not None:
        return
    verbose = os.environ.get("EDGESSD_VERBOSE", "") not in ("", "0")

    def _log(level: int, text: bytes, _user: ctypes.c_void_p) -> None:
        if verbose and text:
            os.write(2, text)

    _LOG_CB = C.llama_log_callback(_log)
    C.llama_log_set(_LOG_CB, ctypes.c_void_p(0))
    C.llama_backend_init()


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Send what C code writes straight to file descriptor 2 to /dev/null for the block
    (unless EDGESSD_VERBOSE is set). Only around model loading, before any other thread runs."""
    if os.environ.get("EDGESSD_VERBOSE", "") not in ("", "0"):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def registry_verified(path: Path) -> bool:
    """True if the registry's stamp beside ``path`` records a sha256 check at its current size
    and mtime (see registry.is_verified); reads the stamp only, never hashes."""
    import json

    try:
        st = path.stat()
        stamp = json.loads(path.with_name(path.name + ".verified.json").read_text())
        return stamp.get("size") == st.st_size and stamp.get("mtime_ns") == st.st_mtime_ns
    except (OSError, ValueError, AttributeError, RecursionError):
        return False


def check_gguf_header(path: Path) -> None:
    """ModelError unless ``path`` exists and starts with the GGUF magic."""
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except FileNotFoundError:
        raise ModelError(f"model file not found: {path}") from None
    except OSError as e:
        raise ModelError(f"cannot read model file {path}: {e}") from e
    if magic != b"GGUF":
        raise ModelError(f"{path} is not a GGUF file")


class Model:
    """A loaded GGUF model: vocabulary, metadata, and the handle contexts are made from."""

    def __init__(self, path: str | os.PathLike, *, n_gpu_layers: int = 0) -> None:
        self.path = Path(path)
        check_gguf_header(self.path)
        _init_backend()
        skip = skip_api()
        params = C.llama_model_default_params()
        params.n_gpu_layers = n_gpu_layers
        # GGUF has no checksums: llama.cpp's tensor check (NaN/Inf in the weights, bad quant
        # scales) is the only way to catch damaged weights in a file given by path. A registry
        # model whose sha256 was verified at this size and mtime needs no second look.
        params.check_tensors = not registry_verified(self.path)
        with _quiet_stderr():  # the tensor check prints each bad block to stderr itself
            ptr = C.llama_model_load_from_file(str(self.path).encode(), params)
        if not ptr:
            raise ModelError(f"llama.cpp could not load {self.path}: the file is truncated or corrupt (its header "
                             "or its tensor data), or its architecture is unknown to this llama.cpp")
        self.ptr = ptr
        self._free = weakref.finalize(self, C.llama_model_free, ptr)
        self.vocab = C.llama_model_get_vocab(ptr)
        self.has_vocab: bool = C.llama_vocab_type(self.vocab) != C.LLAMA_VOCAB_TYPE_NONE
        self.n_vocab: int = C.llama_vocab_n_tokens(self.vocab)
        self.n_layer: int = C.llama_model_n_layer(ptr)
        self.n_embd: int = C.llama_model_n_embd(ptr)
        self.n_ctx_train: int = C.llama_model_n_ctx_train(ptr)
        self.arch: str = self.meta("general.architecture") or "unknown"
        self.skip_supported: bool = bool(skip.supported(ptr))
        tmpl = C.llama_model_chat_template(ptr, None)
        self.chat_template: str | None = tmpl.decode("utf-8", "replace") if tmpl else None

    def close(self) -> None:
        self._free()

    def meta(self, key: str) -> str | None:
        """A GGUF metadata value as a string, or None if the key is absent."""
        buf = ctypes.create_string_buffer(4096)
        n = C.llama_model_meta_val_str(self.ptr, key.encode(), buf, len(buf))
        return buf.value.decode("utf-8", "replace") if n >= 0 else None

    def tokenize(self, text: str, *, add_special: bool = True, parse_special: bool = True) -> list[int]:
        if not self.has_vocab:  # llama.cpp would abort the process
            raise ModelError(f"{self.path.name} has no tokenizer (its vocabulary type is 'none'), so it cannot "
                             "read text")
        data = text.encode("utf-8")
        cap = len(data) + 8
        for _ in range(2):
            buf = (C.llama_token * cap)()
            n = C.llama_tokenize(self.vocab, data, len(data), buf, cap, add_special, parse_special)
            if n >= 0:
                return list(buf[:n])
            cap = -n
        raise LibraryError("llama_tokenize failed")

    def token_bytes(self, token: int, *, special: bool = False) -> bytes:
        """The bytes of one token (UTF-8 may be split across tokens)."""
        buf = ctypes.create_string_buffer(64)
        n = C.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = C.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, special)
        return buf.raw[:n]

    def detokenize(self, tokens: Sequence[int]) -> str:
        return b"".join(self.token_bytes(t) for t in tokens).decode("utf-8", "replace")

    def is_eog(self, token: int) -> bool:
        return bool(C.llama_vocab_is_eog(self.vocab, token))

    def is_special(self, token: int) -> bool:
        """Whether ``token`` is a control token (``<|im_end|>``...) or a user-defined ``<...>`` one."""
        attr = C.llama_vocab_get_attr(self.vocab, token)
        if attr & C.LLAMA_TOKEN_ATTR_CONTROL:
            return True
        return bool(attr & C.LLAMA_TOKEN_ATTR_USER_DEFINED) and self.token_bytes(token, special=True)[:1] == b"<" \
            and self.token_bytes(token, special=True)[-1:] == b">"

    def eog_tokens(self) -> list[int]:
        """Every end-of-generation token of the vocabulary (EOS, EOT, <|im_end|>...)."""
        return [t for t in range(self.n_vocab) if self.is_eog(t)]

    def apply_chat_template(self, messages: Sequence[dict], *, add_assistant: bool = True,
                            template: str | None = None) -> str | None:
        """Render chat ``messages`` ({"role", "content"}) with the GGUF's template via llama.cpp,
        or with ``template``: one of :func:`builtin_chat_templates` by name.

        Returns None when there is no template or llama.cpp does not recognise it.
        """
        template = template or self.chat_template
        if not template:
            return None
        keep = [(m["role"].encode(), m["content"].encode()) for m in messages]
        arr = (C.llama_chat_message * len(keep))(*[C.llama_chat_message(r, c) for r, c in keep])
        size = 2 * sum(len(r) + len(c) for r, c in keep) + 256
        for _ in range(2):
            buf = ctypes.create_string_buffer(size)
            n = C.llama_chat_apply_template(template.encode(), arr, len(keep), add_assistant, buf, size)
            if n < 0:
                return None
            if n <= size:
                return buf.raw[:n].decode("utf-8", "replace")
            size = n + 1
        raise LibraryError("llama_chat_apply_template kept growing")

    def eos_text(self) -> str:
        """The end-of-sequence token's text (for Jinja templates' ``eos_token``); "" if none."""
        eos = C.llama_vocab_eos(self.vocab)
        return self.token_bytes(eos, special=True).decode("utf-8", "replace") if eos >= 0 else ""

    def skip_flags(self) -> np.ndarray:
        """An all-zero skip mask for this model: uint8 ``[n_layer]``."""
        return np.zeros(self.n_layer, dtype=np.uint8)


def builtin_chat_templates() -> list[str]:
    """The chat template names llama.cpp renders itself (chatml, llama3, gemma, phi3...)."""
    arr = (ctypes.c_char_p * 256)()
    n = C.llama_chat_builtin_templates(arr, len(arr))
    return [arr[i].decode() for i in range(min(n, len(arr)))]


class Context:
    """One llama.cpp context (one sequence) with explicit KV management and a reusable batch."""

    def __init__(self, model: Model, *, n_ctx: int = 2048, n_batch: int = 512,
                 n_threads: int | None = None, n_threads_batch: int | None = None) -> None:
        if n_ctx <= 0 or n_batch <= 0:
            raise InvalidArgumentError(f"n_ctx and n_batch must be positive (got {n_ctx}, {n_batch})")
        threads = n_threads or os.cpu_count() or 1
        params = C.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = n_batch
        params.n_ubatch = n_batch
        params.n_seq_max = 1
        params.n_threads = threads
        params.n_threads_batch = n_threads_batch or threads
        params.no_perf = False
        ptr = C.llama_init_from_model(model.ptr, params)
        if not ptr:
            raise LibraryError(f"llama.cpp could not create a context (n_ctx={n_ctx}); try a smaller --ctx-size")
        self.model = model
        self.ptr = ptr
        self.n_ctx: int = C.llama_n_ctx(ptr)
        self.n_batch = int(C.llama_n_batch(ptr))  # llama.cpp clamps it to n_ctx
        self.n_threads = threads
        self._mem = C.llama_get_memory(ptr)
        self._batch = C.llama_batch_init(n_batch, 0, 1)
        self._free = weakref.finalize(self, _free_context, ptr, self._batch)
        b = self._batch
        self._tok = np.ctypeslib.as_array(b.token, shape=(n_batch,))
        self._pos = np.ctypeslib.as_array(b.pos, shape=(n_batch,))
        self._out = np.ctypeslib.as_array(b.logits, shape=(n_batch,))
        np.ctypeslib.as_array(b.n_seq_id, shape=(n_batch,))[:] = 1
        for i in range(n_batch):
            b.seq_id[i][0] = 0
        self._skip = model.skip_flags()
        self.n_outputs = 0
        self.t_decode_ms = 0.0  # wall time inside llama_decode, accumulated (for overhead accounting)
        self._view: np.ndarray | None = None
        self._view_key: tuple[int, int] | None = None

    def close(self) -> None:
        self._free()

    # -- decoding ---------------------------------------------------------------------------------
    def decode(self, tokens: Sequence[int], pos0: int, *, all_logits: bool = False) -> int:
        """Decode ``tokens`` at positions ``pos0..``; returns the number of logit rows produced.

        With ``all_logits`` every position gets logits (verification); otherwise only
        the last one. Longer inputs are split into ``n_batch`` chunks; then only the
        last chunk's rows are kept (``all_logits`` needs ``len(tokens) <= n_batch``).
        """
        n = len(tokens)
        if n == 0:
            raise InvalidArgumentError("decode needs at least one token")
        if pos0 + n > self.n_ctx:
            raise ContextOverflowError(f"{pos0 + n} tokens do not fit in the context of {self.n_ctx}")
        if all_logits and n > self.n_batch:
            raise InvalidArgumentError(f"all_logits over {n} tokens exceeds n_batch={self.n_batch}")
        arr = np.asarray(tokens, dtype=np.int32)
        for start in range(0, n, self.n_batch):
            chunk = arr[start:start + self.n_batch]
            k = len(chunk)
            last = start + k == n
            self._tok[:k] = chunk
            self._pos[:k] = np.arange(pos0 + start, pos0 + start + k, dtype=np.int32)
            self._out[:k] = 1 if all_logits else 0
            if last:
                self._out[k - 1] = 1
            self._batch.n_tokens = k
            t0 = time.perf_counter()
            rc = C.llama_decode(self.ptr, self._batch)
            self.t_decode_ms += (time.perf_counter() - t0) * 1e3
            if rc == 1:
                raise ContextOverflowError("llama.cpp found no KV slot for the batch: the context is full")
            if rc != 0:
                raise LibraryError(f"llama_decode failed with code {rc}")
        self.n_outputs = k if all_logits else 1
        return self.n_outputs

    def draft_greedy(self, token: int, pos: int, n_max: int, p_min: float) -> list[int]:
        """Greedy drafts in one C call under the current skip mask (see llama_draft_greedy).

        Decodes ``token`` at ``pos``, then each draft after it; stops early (after the first)
        below top-1 probability ``p_min``. The drafted positions stay in the KV cache.
        """
        if pos + n_max > self.n_ctx:
            raise ContextOverflowError(f"drafting to position {pos + n_max} exceeds the context of {self.n_ctx}")
        out = (ctypes.c_int32 * max(n_max, 1))()
        t0 = time.perf_counter()
        n = skip_api().draft_greedy(self.ptr, token, pos, n_max, p_min, out, None)
        self.t_decode_ms += (time.perf_counter() - t0) * 1e3
        if n == -1:
            raise ContextOverflowError("llama.cpp found no KV slot for a draft: the context is full")
        if n < 0:
            raise LibraryError(f"llama_draft_greedy failed with code {n}")
        self._view_key = None  # the logits buffer was written by llama.cpp
        return list(out[:n])

    def kv_value_mean(self, layer: int, p0: int, p1: int) -> np.ndarray | None:
        """Mean of ``layer``'s cached attention values (V rows) over positions ``p0 <= pos < p1``.

        float32 ``[n_embd_v_gqa]``; costs a read of the cache, no compute (llama_kv_v_mean).
        None when no cached position is in the range. LibraryError if the layer's values
        cannot be read back (a quantized, transposed V cache).
        """
        api = skip_api()
        dim = api.kv_v_dim(self.model.ptr, layer)
        if dim < 0:
            raise InvalidArgumentError(f"layer {layer} is out of range (the model has {self.model.n_layer})")
        out = np.zeros(dim, dtype=np.float32)
        n = api.kv_v_mean(self.ptr, layer, p0, p1, out.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), dim)
        if n < 0:
            raise LibraryError(f"llama_kv_v_mean cannot read layer {layer}'s cached values (code {n})")
        return out if n > 0 else None

    def logits(self) -> np.ndarray:
        """View of the last decode's logits: float32 ``[n_outputs, n_vocab]`` (no copy)."""
        ptr = C.llama_get_logits(self.ptr)
        if not ptr:
            raise LibraryError("llama_get_logits returned NULL")
        addr = ctypes.addressof(ptr.contents)
        if self._view_key != (addr, self.n_outputs):  # the buffer rarely moves: reuse the view
            self._view = np.ctypeslib.as_array(ptr, shape=(self.n_outputs, self.model.n_vocab))
            self._view_key = (addr, self.n_outputs)
        return self._view

    # -- KV cache ---------------------------------------------------------------------------------
    def kv_remove(self, p0: int, p1: int = -1) -> None:
        """Forget positions ``[p0, p1)`` of the sequence (``p1 = -1``: to the end)."""
        if not C.llama_memory_seq_rm(self._mem, 0, p0, p1):
            raise LibraryError(f"llama_memory_seq_rm({p0}, {p1}) failed")

    def kv_clear(self) -> None:
        C.llama_memory_clear(self._mem, True)

    def kv_pos_max(self) -> int:
        """The largest position held in the KV cache, or -1 when empty."""
        return int(C.llama_memory_seq_pos_max(self._mem, 0))

    # -- layer skip -------------------------------------------------------------------------------
    @property
    def skip(self) -> np.ndarray:
        """The current skip mask (a copy): uint8 ``[n_layer]`` of SKIP_ATTN | SKIP_FFN flags."""
        return self._skip.copy()

    def set_skip(self, flags: np.ndarray | None) -> None:
        """Set the skip mask for the following decodes; None or all-zero clears it."""
        n_layer = self.model.n_layer
        mask = np.zeros(n_layer, np.uint8) if flags is None else np.ascontiguousarray(flags, dtype=np.uint8)
        if mask.shape != (n_layer,):
            raise InvalidArgumentError(f"skip mask has shape {mask.shape}, expected ({n_layer},)")
        if np.array_equal(mask, self._skip):
            return
        rc = skip_api().set_all(self.ptr, mask.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8)), n_layer)
        _check_skip_rc(rc, self.model)
        self._skip = mask.copy()

    def set_layer_skip(self, il: int, flags: int) -> None:
        """Set one layer's flags (the C API's per-layer call)."""
        rc = skip_api().set_one(self.ptr, il, flags)
        _check_skip_rc(rc, self.model, il)
        self._skip[il] = flags

    @contextlib.contextmanager
    def skipping(self, flags: np.ndarray | None) -> Iterator[None]:
        """Use ``flags`` as the skip mask inside the block; the previous mask is restored after."""
        previous = self._skip.copy()
        self.set_skip(flags)
        try:
            yield
        finally:
            self.set_skip(previous)

    def perf(self) -> dict[str, float]:
        """llama.cpp's counters: eval counts and times, and how often a graph was reused."""
        d = C.llama_perf_context(self.ptr)
        return {"n_eval": d.n_eval, "n_p_eval": d.n_p_eval, "n_reused": d.n_reused,
                "t_eval_ms": d.t_eval_ms, "t_p_eval_ms": d.t_p_eval_ms}


def _check_skip_rc(rc: int, model: Model, il: int | None = None) -> None:
    if rc == 0:
        return
    if rc == -1:
        raise SkipUnsupportedError(f"layer skip is not supported for architecture {model.arch!r} "
                                   "(supported: llama, qwen2, qwen3, gemma3)")
    if rc == -2:
        raise InvalidArgumentError(f"layer {il} is out of range (the model has {model.n_layer} layers)")
    if rc == -3:
        raise InvalidArgumentError("unknown skip flag bits")
    raise LibraryError(f"llama_set_layer_skip returned {rc}")


def _free_context(ptr: object, batch: object) -> None:
    C.llama_batch_free(batch)
    C.llama_free(ptr)
