#!/usr/bin/env python3
"""Write the build record of a CUDA build of the patched llama.cpp, from patches/build.py's cache.

    EDGESSD_BACKEND=cuda CMAKE_CUDA_ARCHITECTURES="87;90" python bench/cuda_build_record.py \\
        --out bench/results/cuda-build-87-90.json

The build itself: the same environment with ``python patches/build.py --build-only`` (it
needs nvcc; cuBLAS comes from patches/cuda_sdk.py). The record holds nvcc's version, the
architectures, the CMake arguments, the build time and parallelism, the size of every
shared library in the wheel, the GPU code generated (from the build log's --generate-code
flags), and the exported symbols (``nm -D --defined-only``) of libllama: the record fails
unless the patch's llama_set_layer_skip* and llama_draft_greedy are among them.

A build still running (or stopped) is recorded as such with ``--partial``: the objects
compiled so far out of the total, from the log, and the time since the log began.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
REQUIRED = ("llama_set_layer_skip", "llama_set_layer_skip_all", "llama_draft_greedy")
PROGRESS = re.compile(r"^\s*\[(\d+)/(\d+)\]\s+(.*)$")


def load_patch_build():
    spec = importlib.util.spec_from_file_location("edgessd_patch_build", REPO / "patches" / "build.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def exported(lib: Path) -> list[str]:
    out = subprocess.run(["nm", "-D", "--defined-only", str(lib)], capture_output=True, text=True, check=True).stdout
    return sorted({line.split()[-1] for line in out.splitlines() if line.split()[1:2] and line.split()[1] in "TtWBDR"})


def gencode(log_text: str) -> list[str]:
    """The GPU code nvcc was asked for, e.g. ``compute_90:compute_90,sm_90`` (PTX and machine code)."""
    found = re.findall(r"--generate-code=arch=(compute_\d+),code=\[([^\]]+)\]", log_text)
    return sorted({f"{arch}:{code}" for arch, code in found})


def progress(log_text: str) -> dict:
    steps = [m for m in (PROGRESS.match(line) for line in log_text.splitlines()) if m]
    if not steps:
        return {"done": 0, "total": None, "cuda_objects_done": 0}
    done, total = int(steps[-1].group(1)), int(steps[-1].group(2))
    cu = [re.search(r"-c \S+/(ggml-cuda/\S+\.cu)\b", m.group(3)) for m in steps]
    return {"done": done, "total": total, "cuda_objects_done": sum(1 for c in cu if c),
            "last": re.sub(r".*-o (\S+).*", r"\1", steps[-1].group(3))[-160:]}


def nvcc_version() -> str:
    out = subprocess.run(["nvcc", "--version"], capture_output=True, text=True).stdout
    m = re.search(r"release ([\d.]+), V([\d.]+)", out)
    return m.group(2) if m else out.strip()[-80:]


def record(pb, partial: bool) -> dict:
    backend = pb.choose_backend()
    if backend != "cuda":
        raise SystemExit("cuda_build_record: set EDGESSD_BACKEND=cuda (and CMAKE_CUDA_ARCHITECTURES)")
    args = pb.cmake_args(backend)
    key = pb.build_key(backend, args)
    root = pb.cache_dir()
    log = root / "logs" / f"build-{key}.log"
    text = log.read_text(errors="replace") if log.exists() else ""
    rec = {"schema": 1, "key": key, "nvcc": nvcc_version(), "archs": os.environ.get("CMAKE_CUDA_ARCHITECTURES"),
           "cmake_args": args, "gencode": gencode(text), "patches": {p.name: pb.sha256_file(p) for p in pb.patch_files()},
           "machine": {"cpus": os.cpu_count(), "load_avg": os.getloadavg()}}
    wheel_dir = root / "wheels" / key
    wheels = list(wheel_dir.glob("llama_cpp_python-*.whl"))
    if not wheels:
        if not partial:
            raise SystemExit(f"cuda_build_record: no finished build for key {key} (log: {log}); --partial records progress")
        rec["state"] = "unfinished"
        rec["progress"] = progress(text)
        staging = sorted((root / "wheels").glob(f".{key}-*"), key=lambda p: p.stat().st_mtime)
        rec["seconds_so_far"] = round(time.time() - staging[0].stat().st_mtime) if staging else None
        return rec
    meta = json.loads((wheel_dir / "build.json").read_text())
    rec.update(state="built", wheel=wheels[0].name, wheel_bytes=wheels[0].stat().st_size,
               build_seconds=meta.get("build_seconds"), build_parallel_level=meta.get("build_parallel_level"),
               progress=progress(text))
    with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(wheels[0]) as z:
        libs = [n for n in z.namelist() if re.search(r"\.so(\.\d+)*$", n)]
        rec["libraries"] = {Path(n).name: z.getinfo(n).file_size for n in libs}
        llama = next(n for n in libs if Path(n).name.startswith("libllama.so"))
        z.extract(llama, tmp)
        syms = exported(Path(tmp) / llama)
    rec["exported_llama_symbols"] = [s for s in syms if s.startswith("llama_")]
    missing = [s for s in REQUIRED if s not in syms]
    rec["patch_symbols_present"] = not missing
    if missing:
        raise SystemExit(f"cuda_build_record: libllama lacks the patch's {', '.join(missing)}")
    return rec


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--partial", action="store_true", help="record an unfinished build's progress")
    ns = ap.parse_args(argv)
    rec = record(load_patch_build(), ns.partial)
    tmp = ns.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(rec, indent=2) + "\n")
    os.replace(tmp, ns.out)
    print(f"{ns.out}: {rec['state']}, key {rec['key']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
