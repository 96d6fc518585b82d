"""llama.cpp's own tools for ``edgessd bench``'s peers, built from the same patched source.

``edgessd setup --peer-tools`` builds them (about 8 minutes on a 2-core machine, then cached).
The build reuses edgessd's shipped ``patches/build.py``: the pinned llama-cpp-python sdist
(checked by sha256), edgessd's patches applied in order, the same backend and CMake
arguments, and the same cache key, so the tools and the installed libllama come from one
source tree with the same patches and flags. It extracts into
``<cache>/llama-tools/<key>/src``, configures the vendored llama.cpp with CMake (shared
libraries, Release, tools and examples on; server, curl and OpenSSL off) into
``<key>/build``, builds only the tools the peers run, and records what it built in
``<key>/tools.json``. A second call with the same key reuses them.
"""
from __future__ import annotations

import functools
import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from types import ModuleType

from ..errors import EdgessdError
from ..fsutil import cache_dir, file_lock, sha256_file, write_json_atomic
from ..registry import shipped_dir
from .peers import TOOLS


@functools.cache
def _build_module() -> ModuleType:
    """edgessd's patches/build.py (shipped as package data), loaded as a module."""
    path = shipped_dir("patches") / "build.py"
    sys.path.insert(0, str(path.parent))  # its cuda_sdk.py sits beside it
    spec = importlib.util.spec_from_file_location("edgessd_patches_build", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
        raise EdgessdError(f"{what} failed (exit {rc}); last lines of {log}:\n{tail}")


def build_tools(*, force: bool = False) -> Path:
    """Build (or reuse) the peers' llama.cpp tools; returns the directory holding them."""
    build = _build_module()
    backend = build.choose_backend()
    args = build.cmake_args(backend)
    key = build.build_key(backend, args)
    root = tools_root(key)
    bin_dir = root / "build" / "bin"
    try:
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
                raise EdgessdError(f"the build finished but {', '.join(missing)} is missing in {bin_dir}")
            write_json_atomic(root / "tools.json", {
                "key": key, "version": build.VERSION, "backend": backend, "cmake_args": TOOL_ARGS + llama_args,
                "patches": {p.name: sha256_file(p) for p in build.patch_files()}, "tools": list(TOOLS),
                "build_s": round(time.monotonic() - t0, 1)})
            print(f"edgessd: built llama.cpp tools in {time.monotonic() - t0:.0f}s: {bin_dir}", flush=True)
            return bin_dir
    except build.BuildError as e:
        raise EdgessdError(str(e)) from None
