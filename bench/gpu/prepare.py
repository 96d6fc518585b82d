#!/usr/bin/env python3
"""Prepare what the two GPU calls carry: ``.gpu/call1/`` and ``.gpu/call2/`` (both git-ignored).

    .venv/bin/python bench/gpu/prepare.py

The GPU machine reaches no registry and takes at most 64 MiB of working tree per call
(tracked files plus carried folders), so this runs here, once, and packs:

call 1 (``.gpu/call1/``)
  llama-src.tar.xz    the pinned llama-cpp-python sdist with edgessd's patches applied, trimmed
                      to what a CUDA build needs (no models, docs, tests, tools, other backends)
  wheels/             what the GPU image lacks: gguf, diskcache (wheels), hnswlib (sdist: it has
                      no wheels; it compiles there against the image's numpy, with the carried pybind11)
  smollm2-135m.gguf.part1   the first half of the default model
  standins/           the GGUF headers (metadata, tokenizer, tensor infos) of smollm2-135m and
                      qwen2.5-coder-0.5b/1.5b, from which standin.py writes same-shape files with
                      random weights on the GPU machine
  records/            plain greedy outputs recorded here on the CPU (bench/replay.py's record), that
                      replay.py replays with the GPU's costs
  manifest.json       sizes and sha256 of all of it
call 2 (``.gpu/call2/``)
  smollm2-135m.gguf.part2   the second half

Everything is checked against the limit before it is written out; re-running reuses the
sdist, the records and the wheels already downloaded.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import lzma
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from edgessd import registry  # noqa: E402
from edgessd.cli.info_cmd import _Header  # noqa: E402
from edgessd.fsutil import cache_dir, sha256_file  # noqa: E402

GPU = REPO / ".gpu"
CALL1, CALL2, RECORDS = GPU / "call1", GPU / "call2", GPU / "records"
LIMIT = 64 * 2**20        # the working tree that travels per call
MARGIN = 2 * 2**20        # left free for files written here before the call
MODEL = "smollm2-135m"
STANDINS = ("smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b")
WHEELS = ("gguf==0.19.0", "diskcache==5.6.3", "pybind11==3.1.0", "wheel==0.48.0")  # hnswlib builds with these
SDISTS = ("hnswlib==0.8.0",)
PROMPTS = REPO / "bench" / "prompts" / "bench.jsonl"
PER_CATEGORY, N_PREDICT = 2, 64   # the bench and the replays use the same prompts and lengths

# kept from the patched sdist; everything else in vendor/llama.cpp is left out
KEEP_LLAMA = ("CMakeLists.txt", "LICENSE", "cmake", "common", "ggml", "include", "licenses", "src", "vendor")
DROP_GGML = ("ggml-blas", "ggml-cann", "ggml-et", "ggml-hexagon", "ggml-hip", "ggml-metal", "ggml-musa",
             "ggml-opencl", "ggml-openvino", "ggml-rpc", "ggml-sycl", "ggml-virtgpu", "ggml-vulkan",
             "ggml-webgpu", "ggml-zdnn", "ggml-zendnn")
KEEP_TOP = ("CMakeLists.txt", "LICENSE.md", "README.md", "pyproject.toml", "llama_cpp", "vendor")


def load_patch_build():
    """patches/build.py as a module (its name would clash with PyPA's ``build``)."""
    spec = importlib.util.spec_from_file_location("edgessd_patch_build", REPO / "patches" / "build.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def trim(src: Path) -> None:
    for p in src.iterdir():
        if p.name not in KEEP_TOP:
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    llama = src / "vendor" / "llama.cpp"
    for p in llama.iterdir():
        if p.name not in KEEP_LLAMA:
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    for name in DROP_GGML:
        shutil.rmtree(llama / "ggml" / "src" / name, ignore_errors=True)


def pack_source(out: Path) -> dict:
    """The patched, trimmed sdist as ``out`` (tar.xz), unpacking to ``llama_cpp_python-<version>/``."""
    pb = load_patch_build()
    sdist = pb.fetch_sdist(cache_dir() / "sdist")
    with tempfile.TemporaryDirectory(prefix="edgessd-gpu-src-") as tmp:
        with tarfile.open(sdist) as tar:
            tar.extractall(tmp, filter="data")
        src = Path(tmp) / f"llama_cpp_python-{pb.VERSION}"
        pb.apply_patches(src)
        trim(src)
        with tarfile.open(out, "w:xz", preset=6) as tar:
            tar.add(src, arcname=src.name)
    return {"version": pb.VERSION, "sdist_sha256": pb.SDIST_SHA256,
            "patches": {p.name: sha256_file(p) for p in pb.patch_files() + pb.kernel_files()}}


def fetch_wheels(out: Path) -> list[str]:
    out.mkdir(parents=True, exist_ok=True)
    for spec in WHEELS:
        run_pip(["download", "--no-deps", "--only-binary", ":all:", "-d", str(out), spec])
    for spec in SDISTS:
        run_pip(["download", "--no-deps", "--no-binary", spec.split("==")[0], "-d", str(out), spec])
    return sorted(p.name for p in out.iterdir())


def run_pip(args: list[str]) -> None:
    r = subprocess.run([sys.executable, "-m", "pip", "-q", *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"prepare: pip {' '.join(args)} failed:\n{r.stderr.strip()[-600:]}")


def gguf_data_offset(path: Path) -> int:
    """Where a GGUF's tensor data begins: after the header, aligned to general.alignment."""
    import mmap

    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        h = _Header(buf)
        h.take("<4s"), h.take("<I")
        n_tensors, n_kv = h.take("<Q"), h.take("<Q")
        align = 32
        for _ in range(n_kv):
            key = h.string().decode("utf-8", "replace")
            value = h.value(h.take("<I"))
            if key == "general.alignment":
                align = int(value)
        for _ in range(n_tensors):
            h.string()
            n_dims = h.take("<I")
            h.off += 8 * n_dims + 4 + 8  # dims, type, offset
        return (h.off + align - 1) // align * align


def standin_header(name: str, out_dir: Path) -> dict:
    """The header of registry model ``name`` (xz) and the size of the data that follows it."""
    path = registry.resolve(name)
    start = gguf_data_offset(path)
    with open(path, "rb") as f:
        head = f.read(start)
    out = out_dir / f"{name}.head.xz"
    out.write_bytes(lzma.compress(head, preset=9))
    return {"file": out.name, "header_bytes": start, "data_bytes": path.stat().st_size - start,
            "model_sha256": registry.model_sha256(path)}


def pick_prompts(per_category: int) -> list:
    """The first ``per_category`` prompts of each category, in file order (as bench --per-category)."""
    from edgessd.prompts import load_prompts

    seen: dict[str, int] = {}
    out = []
    for p in load_prompts(PROMPTS):
        if seen.get(p.category, 0) < per_category:
            seen[p.category] = seen.get(p.category, 0) + 1
            out.append(p)
    return out


def make_records(names: tuple[str, ...], out_dir: Path, threads: int) -> list[str]:
    """Plain greedy outputs on this CPU, kept in .gpu/records/ and reused while their key matches."""
    from replay import record

    RECORDS.mkdir(parents=True, exist_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    prompts = pick_prompts(PER_CATEGORY)
    for name in names:
        path = registry.resolve(name)
        keep = RECORDS / f"{name}.json"
        record(name, registry.model_sha256(path), prompts, N_PREDICT, threads, keep)
        shutil.copy2(keep, out_dir / keep.name)
    return [f"{n}.json" for n in names]


def split_model(name: str) -> dict:
    path = registry.resolve(name)
    size = path.stat().st_size
    half = size // 2
    with open(path, "rb") as f:
        (CALL1 / f"{name}.gguf.part1").write_bytes(f.read(half))
        (CALL2 / f"{name}.gguf.part2").write_bytes(f.read())
    return {"name": name, "bytes": size, "sha256": registry.spec(name).sha256, "split_at": half}


def tree_bytes() -> int:
    """What travels besides the carried folders: tracked and untracked, not ignored, files."""
    names = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    return sum((REPO / n).stat().st_size for n in names if n and (REPO / n).is_file())


def folder_bytes(d: Path) -> int:
    return sum(p.stat().st_size for p in d.rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-t", "--threads", type=int, default=2, help="CPU threads for the greedy records")
    ns = ap.parse_args(argv)
    for d in (CALL1, CALL2):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
    manifest = {"source": pack_source(CALL1 / "llama-src.tar.xz"),
                "wheels": fetch_wheels(CALL1 / "wheels"),
                "model": split_model(MODEL)}
    (CALL1 / "standins").mkdir()
    manifest["standins"] = {n: standin_header(n, CALL1 / "standins") for n in STANDINS}
    manifest["records"] = make_records(STANDINS, CALL1 / "records", ns.threads)
    manifest["bench"] = {"prompts": str(PROMPTS.relative_to(REPO)), "per_category": PER_CATEGORY,
                         "n_predict": N_PREDICT}
    (CALL1 / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    tree = tree_bytes()
    sizes = {"tree": tree, "call1": folder_bytes(CALL1), "call2": folder_bytes(CALL2)}
    for call in ("call1", "call2"):
        total = tree + sizes[call]
        print(f"{call}: {sizes[call] / 2**20:6.1f} MiB carried + {tree / 2**20:.1f} MiB tree = "
              f"{total / 2**20:.1f} MiB of {LIMIT / 2**20:.0f}")
        if total > LIMIT - MARGIN:
            print(f"prepare: {call} would carry {total / 2**20:.1f} MiB, over the limit", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
