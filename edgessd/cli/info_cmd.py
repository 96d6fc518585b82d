"""``edgessd info [MODEL]``: what a model is, and what edgessd has cached for it on this device."""
from __future__ import annotations

import json
import math
import mmap
import struct
from collections import Counter
from pathlib import Path

import click

from .options import model_argument

# struct formats of GGUF's scalar value types, by GGUFValueType (8 STRING and 9 ARRAY are variable)
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


class _Header:
    """A forward reader over a GGUF file's header (metadata and tensor infos, not the weights)."""

    def __init__(self, buf) -> None:
        self.buf = buf
        self.off = 0

    def take(self, fmt: str):
        value = struct.unpack_from(fmt, self.buf, self.off)[0]
        self.off += struct.calcsize(fmt)
        return value

    def string(self) -> bytes:
        n = self.take("<Q")
        self.off += n
        return bytes(self.buf[self.off - n:self.off])

    def value(self, vtype: int):
        """A scalar or string value; an array is skipped (None): the tokenizer's are large."""
        if vtype == 8:
            return self.string().decode("utf-8", "replace")
        if vtype != 9:
            return self.take(_SCALARS[vtype])
        item, count = self.take("<I"), self.take("<Q")
        if item in (8, 9):
            for _ in range(count):
                self.value(item)
        else:
            self.off += count * struct.calcsize(_SCALARS[item])
        return None


def read_gguf_header(path: Path) -> tuple[dict, list[tuple[int, int]]]:
    """The scalar and string metadata of a GGUF (v2/v3), and its tensors as (ggml type, elements).

    Walks the header of the memory-mapped file only; about 100x faster than gguf.GGUFReader,
    which builds every tokenizer array element.
    """
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        h = _Header(buf)
        if h.take("<4s") != b"GGUF" or h.take("<I") not in (2, 3):
            raise ValueError("not a GGUF v2/v3 file")
        n_tensors, n_kv = h.take("<Q"), h.take("<Q")
        meta = {}
        for _ in range(n_kv):
            key = h.string().decode("utf-8", "replace")
            meta[key] = h.value(h.take("<I"))
        tensors = []
        for _ in range(n_tensors):
            h.string()
            dims = [h.take("<Q") for _ in range(h.take("<I"))]
            ggml_type = h.take("<I")
            h.take("<Q")  # data offset
            tensors.append((ggml_type, math.prod(dims)))
    return meta, tensors


def gguf_facts(path: Path) -> dict:
    """What the GGUF header says: name, architecture, layers, embedding, context_train,
    file_type (e.g. "Q4_1"), tensor_bytes ({tensor type: bytes}, largest first), parameters,
    size_bytes, chat_template."""
    import gguf

    from ..errors import ModelError

    try:
        meta, tensors = read_gguf_header(path)
        by_type: Counter[str] = Counter()
        for ggml_type, n in tensors:
            qtype = gguf.GGMLQuantizationType(ggml_type)
            block, size = gguf.GGML_QUANT_SIZES[qtype]
            by_type[qtype.name] += n // block * size
    except (ValueError, KeyError, struct.error, OSError, OverflowError) as e:  # Overflow: a count of 2**62
        raise ModelError(f"cannot read the GGUF header of {path}: it is truncated or corrupt ({str(e)[:120]})") from e
    arch = meta.get("general.architecture") or "unknown"
    file_type = meta.get("general.file_type")
    try:
        file_type = gguf.LlamaFileType(file_type).name.removeprefix("MOSTLY_") if file_type is not None else None
    except ValueError:
        file_type = f"unknown ({file_type})"
    return {"name": meta.get("general.name"), "architecture": arch, "layers": meta.get(f"{arch}.block_count"),
            "embedding": meta.get(f"{arch}.embedding_length"), "context_train": meta.get(f"{arch}.context_length"),
            "file_type": file_type, "tensor_bytes": dict(by_type.most_common()),
            "parameters": sum(n for _, n in tensors), "size_bytes": path.stat().st_size,
            "chat_template": meta.get("tokenizer.chat_template")}


def profile_summary(sha256: str, n_threads: int) -> dict:
    """This device's cached profile for the model at ``n_threads``: found, path, and if found
    t1_ms (one-token decode at the shortest context measured) and verify4_steps (V(4) / t(1));
    else the reason. ``others`` lists the model's profiles for other thread counts or backends."""
    from .. import device
    from ..profiler import ProfileError, load_profile, profile_path

    path = profile_path(sha256, n_threads)
    others = sorted(str(p) for p in path.parent.glob(f"{sha256[:16]}-*.json") if p != path)
    try:
        prof = load_profile(path, model_sha256=sha256, fingerprint=device.fingerprint(n_threads))
    except ProfileError as e:
        return {"found": False, "path": str(path), "reason": str(e), "others": others}
    c = prof.ctx[0]
    return {"found": True, "path": str(path), "threads": n_threads, "t1_ms": prof.t1(c),
            "verify4_steps": prof.verify(min(4, prof.k_max), c) / prof.t1(c), "ctx": prof.ctx, "others": others}


def domain_index(sha256: str) -> dict | None:
    """The model's KNN domain index: the user's (cache) if there is one, else the shipped one.

    Returns {"path", "found", "domains", "anchors", "learned", "ood_distance"} or, for a
    broken index, {"path", "found": False, "reason"}; None when neither exists.
    """
    from ..domains import IndexFileError, index_dir, load_index, shipped_index_dir

    for folder in (index_dir(sha256), shipped_index_dir(sha256)):
        if not folder.is_dir():
            continue
        try:
            idx = load_index(folder, model_sha256=sha256)
        except IndexFileError as e:
            return {"path": str(folder), "found": False, "reason": str(e)}
        return {"path": str(folder), "found": True, "anchors": len(idx.anchors), "learned": len(idx.learned),
                "domains": sorted(d for d in idx.domains if d not in idx.learned),
                "ood_distance": idx.ood_distance}
    return None


def model_info(model: str | None, n_threads: int | None) -> dict:
    """Everything ``edgessd info`` shows, as one JSON-ready dict."""
    from .. import device, registry
    from .._capi import Model, check_gguf_header
    from ..engine import default_threads

    path = registry.resolve(model, fetch=False)  # a 1 GB download is `models pull`'s job, not info's
    check_gguf_header(path)
    threads = n_threads or default_threads()
    facts = gguf_facts(path)
    loaded = Model(path)
    try:
        skip = loaded.skip_supported
    finally:
        loaded.close()
    sha = registry.model_sha256(path)
    template = (facts.pop("chat_template") or "").strip()
    return {"model": model or registry.default_model_name(), "path": str(path), "sha256": sha, **facts,
            "chat_template": {"present": bool(template), "first_line": template.splitlines()[0] if template else None},
            "layer_skip": skip, "profile": profile_summary(sha, threads), "domain_index": domain_index(sha),
            "device": device.fingerprint(threads), "cpu_kernels": kernel_coverage(facts["tensor_bytes"])}


def kernel_coverage(tensor_bytes: dict[str, int]) -> dict:
    """Which of the model's weight types (by bytes) edgessd's bit-exact CPU kernels take."""
    import gguf

    from .._capi import cpu_kernels, cpu_kernels_cover

    total = sum(v for t, v in tensor_bytes.items() if t != "F32") or 1
    covered = {t: cpu_kernels_cover(gguf.GGMLQuantizationType[t].value) for t in tensor_bytes
               if t in gguf.GGMLQuantizationType.__members__ and t != "F32"}  # F32: norms, not matmuls
    share = sum(tensor_bytes[t] for t, ok in covered.items() if ok) / total
    return {"kernels": cpu_kernels(), "covered": sorted(t for t, ok in covered.items() if ok),
            "not_covered": sorted(t for t, ok in covered.items() if not ok), "covered_bytes": share}


def kernels_line(k: dict) -> str:
    if k["kernels"] == "stock":
        return "stock (ggml's own; batched logits may differ from one-token decoding at near-ties)"
    left = f"; stock for {', '.join(k['not_covered'])}" if k["not_covered"] else ""
    return (f"edgessd {k['kernels']} (matmuls, F16-KV attention), "
            f"bit-exact batches for {', '.join(k['covered']) or 'none'} "
            f"({100 * k['covered_bytes']:.0f}% of the bytes){left} (EDGESSD_CPU_KERNELS=stock for ggml's)")


def format_info(info: dict) -> str:
    """The text form: one aligned "key  value" line per fact."""
    total = sum(info["tensor_bytes"].values()) or 1
    shares = ", ".join(f"{k} {100 * v / total:.0f}%" for k, v in info["tensor_bytes"].items())
    tmpl = info["chat_template"]
    prof = info["profile"]
    if prof["found"]:
        prof_line = (f"{prof['threads']} threads: t(1) {prof['t1_ms']:.1f} ms, V(4) = {prof['verify4_steps']:.1f} t(1) "
                     f"({prof['path']})")
    else:
        threads = info["device"].get("threads")
        prof_line = f"none for {threads} threads (`edgessd profile {info['model']} -t {threads}` measures one)"
    idx = info["domain_index"]
    dev = info["device"]
    rows = [
        ("model", info["model"]), ("path", info["path"]), ("name", info["name"] or "-"),
        ("architecture", f"{info['architecture']}: {info['layers']} layers, embedding {info['embedding']}, "
                         f"trained context {info['context_train']}"),
        ("parameters", f"{info['parameters'] / 1e6:.1f} M ({info['size_bytes'] / 2**20:.1f} MiB on disk)"),
        ("quantization", f"{info['file_type']} (bytes by tensor type: {shares})"),
        ("chat template", f"yes: {tmpl['first_line'][:80]}" if tmpl["present"] else "none"),
        ("layer skip", "supported" if info["layer_skip"] else f"not supported for {info['architecture']}"),
        ("cpu kernels", kernels_line(info["cpu_kernels"])),
        ("profile", prof_line), *[("", f"also: {p}") for p in prof["others"]],
        ("domain index", "none" if idx is None else
         f"broken, ignored: {idx['reason']}" if not idx["found"] else
         f"{', '.join(idx['domains'])}: {idx['anchors']} anchors ({idx['learned']} learned) ({idx['path']})"),
        ("device", f"{dev['cpu']}, {dev['machine']} {dev['os']}, {dev['cores_physical']} cores / "
                   f"{dev['cores_logical']} threads, {dev['memory_gb']} GB, backend {dev['backend']}, "
                   f"GPU {dev['gpu'] or 'none'}"),
        ("sha256", info["sha256"]),
    ]
    return "\n".join(f"{k:<14}{v}" for k, v in rows)


@click.command("info")
@model_argument
@click.option("-t", "--threads", "n_threads", type=click.IntRange(min=1), envvar="EDGESSD_THREADS", default=None,
              help="Thread count whose profile to look up [default: physical cores].")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def info(model, n_threads, as_json) -> None:
    """Show what MODEL (a GGUF path or registry name) is, and what edgessd has cached for it.

    Architecture, layers, embedding size, quantization, parameters, chat template,
    layer-skip support, this device's profile, the domain index, and the device.

    \b
    Examples:
      edgessd info
      edgessd info qwen2.5-coder-0.5b --json
    """
    data = model_info(model, n_threads)
    click.echo(json.dumps(data) if as_json else format_info(data))
