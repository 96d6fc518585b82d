#!/usr/bin/env python3
"""Build llama.cpp's own tools for ``edgessd bench``'s peers, from the same patched source.

    python bench/peers.py build [--force]    # llama-completion, llama-speculative-simple
    python bench/peers.py check [MODEL]      # which peers can run here, and why not

The build reuses patches/build.py: the pinned llama-cpp-python sdist (checked by sha256),
edgessd's patches applied in order, the same backend and CMake arguments, and the same
cache key. So the tools and the installed libllama come from one source tree with the same
patches and flags. It extracts into ``<cache>/llama-tools/<key>/src``, configures the
vendored llama.cpp with CMake (shared libraries, Release, tools and examples on, server,
curl and OpenSSL off) into ``<key>/build``, builds only the two tools, and records what it
built in ``<key>/tools.json``. A second call with the same key reuses them.

On this project's 2-core machine the build takes about 8 minutes. Then:

    edgessd bench qwen2.5-coder-1.5b --prompts bench/prompts/bench.jsonl --methods all
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "patches"))
sys.path.insert(0, str(REPO))
import build  # noqa: E402  (patches/build.py)

from edgessd.benchmark.peers import TOOLS  # noqa: E402
from edgessd.fsutil import cache_dir, file_lock, sha256_file, write_json_atomic  # noqa: E402

TOOL_ARGS = ["-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=ON", "-DLLAMA_BUILD_COMMON=ON",
             "-DLLAMA_BUILD_TOOLS=ON", "-DLLAMA_BUILD_EXAMPLES=ON", "-DLLAMA_BUILD_TESTS=OFF",
             "-DLLAMA_BUILD_SERVER=OFF", "-DLLAMA_BUILD_APP=OFF", "-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF"]


def tools_root(key: str) -> Path:
    return cache_dir() / "llama-tools" / key


def _run_logged(cmd: list[str], log: Path, what: str) -> None:
    with open(log, "a") as f:
        f.write(f"$ {' '.join(cmd)}\n")
        f.flush()
        rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-25:])
        raise build.BuildError(f"{what} failed (exit {rc}); last lines of {log}:\n{tail}")


def build_tools(*, force: bool = False) -> Path:
    """Build (or reuse) the peers' llama.cpp tools; returns the directory holding them."""
    backend = build.choose_backend()
    args = build.cmake_args(backend)
    key = build.build_key(backend, args)
    root = tools_root(key)
    bin_dir = root / "build" / "bin"
    (cache_dir() / "locks").mkdir(parents=True, exist_ok=True)
    with file_lock(cache_dir() / "locks" / f"tools-{key}.lock"):
        if not force and (root / "tools.json").exists() and all((bin_dir / t).is_file() for t in TOOLS):
            print(f"edgessd: reusing llama.cpp tools in {bin_dir}", flush=True)
            return bin_dir
        t0 = time.monotonic()
        sdist = build.fetch_sdist(cache_dir() / "sdist")
        shutil.rmtree(root, ignore_errors=True)
        (root / "src").mkdir(parents=True)
        with tarfile.open(sdist) as tar:
            tar.extractall(root / "src", filter="data")
        src = root / "src" / f"llama_cpp_python-{build.VERSION}"
        build.apply_patches(src)
        log = cache_dir() / "logs" / f"tools-{key}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("")
        llama_args = [a for a in args if not a.startswith("-DLLAVA_")]  # llama-cpp-python's own option
        gen = ["-G", "Ninja"] if shutil.which("ninja") else []
        print(f"edgessd: building {', '.join(TOOLS)} ({' '.join(llama_args)}); log: {log}", flush=True)
        _run_logged(["cmake", "-S", str(src / "vendor" / "llama.cpp"), "-B", str(root / "build"), *gen, *TOOL_ARGS,
                     *llama_args], log, "cmake configure")
        _run_logged(["cmake", "--build", str(root / "build"), "--target", *TOOLS, "-j", str(os.cpu_count() or 2)],
                    log, "cmake build")
        missing = [t for t in TOOLS if not (bin_dir / t).is_file()]
        if missing:
            raise build.BuildError(f"the build finished but {', '.join(missing)} is missing in {bin_dir}")
        write_json_atomic(root / "tools.json", {
            "key": key, "version": build.VERSION, "backend": backend, "cmake_args": TOOL_ARGS + llama_args,
            "patches": {p.name: sha256_file(p) for p in build.patch_files()}, "tools": list(TOOLS),
            "build_s": round(time.monotonic() - t0, 1)})
        print(f"edgessd: built llama.cpp tools in {time.monotonic() - t0:.0f}s: {bin_dir}", flush=True)
        return bin_dir


def check(model: str | None) -> int:
    """Print each peer and whether it can run here."""
    from edgessd import device, registry
    from edgessd.benchmark import peers as P

    path = registry.resolve(model)
    sha = registry.model_sha256(path)
    name = next((n for n, s in registry.load_registry().items() if s.sha256 == sha), None)
    draft = P.DRAFT_FOR.get(name or "")
    setup = P.PeerSetup(model_path=path, model_name=name, tools_dir=P.default_tools_dir(), n_threads=2, n_ctx=2048,
                        n_gpu_layers=0, backend=device.backend(),
                        draft_path=registry.model_path(draft) if draft else None)
    print(f"tools: {setup.tools_dir} {json.dumps(P.tools_info(setup.tools_dir))}")
    for peer in P.PEERS:
        why = P.why_unavailable(peer, setup)
        print(f"{peer:<26} {'ok' if why is None else 'n/a: ' + why}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build (or reuse) llama-completion and llama-speculative-simple")
    b.add_argument("--force", action="store_true", help="build again even if cached")
    c = sub.add_parser("check", help="which peers can run here")
    c.add_argument("model", nargs="?", default=None)
    ns = ap.parse_args(argv)
    try:
        if ns.cmd == "build":
            print(build_tools(force=ns.force))
            return 0
        return check(ns.model)
    except build.BuildError as e:
        print(f"edgessd build error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
