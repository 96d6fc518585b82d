#!/usr/bin/env python3
"""On the GPU machine: build the carried, patched llama-cpp-python for CUDA and install it
into this interpreter (call 1 of bench/gpu/call1.sh). Offline: no sdist download, no pip index.

    python bench/gpu/device_build.py SRC_DIR --arch 90-real --json OUT.json [--dry-run WHEEL]

The CMake arguments are patches/build.py's for the cuda backend (cuBLAS from the toolkit or
the image's nvidia-cublas wheel, see patches/cuda_sdk.py), with CMAKE_CUDA_ARCHITECTURES
set to ``--arch``. It builds with every core, and records the time and the arguments.
``--dry-run WHEEL`` (the CPU rehearsal): configure the same tree with CMake only, to prove
the trimmed source is complete, then install WHEEL (the cached CPU build) instead.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def load_patch_build():
    spec = importlib.util.spec_from_file_location("edgessd_patch_build", REPO / "patches" / "build.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run_logged(cmd: list[str], log: Path, env: dict | None = None, cwd: Path | None = None) -> float:
    t0 = time.monotonic()
    with open(log, "a") as f:
        rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=cwd).returncode
    if rc != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-25:])
        raise SystemExit(f"device_build: {cmd[0]} {' '.join(cmd[1:3])} failed (exit {rc}); end of {log}:\n{tail}")
    return time.monotonic() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", type=Path)
    ap.add_argument("--arch", default="90-real")
    ap.add_argument("--json", type=Path, required=True)
    ap.add_argument("--log", type=Path, default=None)
    ap.add_argument("--dry-run", type=Path, metavar="WHEEL", default=None)
    ns = ap.parse_args(argv)
    pip = shlex.split(os.environ.get("EDGESSD_GPU_PIP", f"{sys.executable} -m pip"))  # call1.sh sets it
    os.environ.update(EDGESSD_BACKEND="cuda", CMAKE_CUDA_ARCHITECTURES=ns.arch)
    pb = load_patch_build()
    args = pb.cmake_args("cuda")
    jobs = os.cpu_count() or 2
    log = ns.log or ns.json.with_suffix(".log")
    nvcc = subprocess.run(["nvcc", "--version"], capture_output=True, text=True).stdout.strip().splitlines()[-1]
    rec = {"arch": ns.arch, "cmake_args": args, "jobs": jobs, "nvcc": nvcc, "dry_run": ns.dry_run is not None}
    if ns.dry_run is not None:
        with tempfile.TemporaryDirectory(prefix="edgessd-cfg-") as tmp:
            rec["configure_seconds"] = run_logged(["cmake", "-S", str(ns.src), "-B", tmp, "-G", "Ninja",
                                                   "-DCMAKE_BUILD_TYPE=Release", *args], log)
        wheel = ns.dry_run
        backend = "cpu"
    else:
        out = ns.src.parent / "wheel"
        out.mkdir(exist_ok=True)
        env = dict(os.environ, CMAKE_ARGS=" ".join(args), CMAKE_BUILD_PARALLEL_LEVEL=str(jobs), FORCE_CMAKE="1")
        rec["build_seconds"] = run_logged([*pip, "wheel", "--no-deps", "--no-build-isolation",
                                           "--no-index", "-v", "-w", str(out), str(ns.src)], log, env=env)
        wheel = next(out.glob("llama_cpp_python-*.whl"))
        backend = "cuda"
    rec["wheel"], rec["wheel_bytes"] = wheel.name, wheel.stat().st_size
    run_logged([*pip, "install", "-q", "--no-deps", "--no-index", "--force-reinstall",
                str(wheel)], log)
    marker = Path(sys.prefix) / "edgessd-llama-build.json"
    marker.write_text(json.dumps({"key": f"gpu-run-{ns.arch}", "backend": backend, "wheel": str(wheel)}) + "\n")
    ns.json.write_text(json.dumps(rec, indent=2) + "\n")
    print(json.dumps(rec))
    return 0


if __name__ == "__main__":
    sys.exit(main())
