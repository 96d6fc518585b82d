#!/usr/bin/env python3
"""Build and install llama-cpp-python with edgessd's llama.cpp patches.

    python patches/build.py            # build (or reuse) the wheel and install it
    python patches/build.py --print-key  # show the cache key and exit

Steps: download the pinned sdist with pip, check its sha256, copy edgessd's CPU
kernels (``patches/cpu-kernels/``) into ggml-cpu, apply every ``patches/*.patch``
in name order (a hunk that does not apply stops the build and names the file),
build a wheel without the multimodal library, cache it under the user cache
directory keyed by everything that changes it, install it.

A CPU that reports AMX but faults on its first tile instruction (seen in VMs)
builds with ``-DEDGESSD_NO_AMX=ON``, so ggml's AMX path is left out instead of
crashing every batch.

Backend, from ``EDGESSD_BACKEND`` (cpu | cuda | metal | auto, default auto):
auto picks metal on macOS arm64, cuda when nvcc is on PATH *and* an NVIDIA GPU
is visible (a CUDA toolkit alone does not make a GPU), else cpu.
``CMAKE_CUDA_ARCHITECTURES`` overrides the CUDA target (87 for Jetson Orin);
``EDGESSD_CMAKE_ARGS`` appends CMake arguments. Only the standard library is
used, plus scikit-build-core in the running interpreter (the Makefile installs
it): the build runs without pip's build isolation, so it needs no download.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

VERSION = "0.3.36"
SDIST_NAME = f"llama_cpp_python-{VERSION}.tar.gz"
SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
PATCH_DIR = Path(__file__).resolve().parent
KERNEL_DIR = PATCH_DIR / "cpu-kernels"          # copied to ggml/src/ggml-cpu/edgessd/
KERNEL_DEST = Path("vendor/llama.cpp/ggml/src/ggml-cpu/edgessd")
sys.path.insert(0, str(PATCH_DIR.parent))
from edgessd.fsutil import cache_dir, file_lock, sha256_file  # noqa: E402  (stdlib-only module)
sys.path.insert(0, str(PATCH_DIR))
import cuda_sdk  # noqa: E402  (stdlib-only, beside this file)

BASE_CMAKE_ARGS = ["-DLLAVA_BUILD=OFF"]  # no multimodal library


class BuildError(Exception):
    """A build step failed; the message says which and what to do."""


def nvidia_gpu_present() -> bool:
    if Path("/etc/nv_tegra_release").exists():  # Jetson
        return True
    if Path("/dev/nvidia0").exists():
        return True
    smi = shutil.which("nvidia-smi")
    if smi:
        r = subprocess.run([smi, "-L"], capture_output=True, text=True)
        return r.returncode == 0 and "GPU" in r.stdout
    return False


def choose_backend() -> str:
    backend = os.environ.get("EDGESSD_BACKEND", "auto").lower()
    if backend not in ("auto", "cpu", "cuda", "metal"):
        raise BuildError(f"EDGESSD_BACKEND={backend!r}: use cpu, cuda, metal or auto")
    if backend != "auto":
        return backend
    if sys.platform == "darwin" and platform.machine() == "arm64":
        return "metal"
    if shutil.which("nvcc") and nvidia_gpu_present():
        return "cuda"
    return "cpu"


AMX_PROBE = r"""
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>
int main(void) {
    if (syscall(SYS_arch_prctl, 0x1023, 18)) return 2;  /* ARCH_REQ_XCOMP_PERM, XTILEDATA */
    unsigned char cfg[64] = {0};
    cfg[0] = 1; cfg[16] = 64; cfg[48] = 16;               /* palette 1, tile 0: 16 x 64 bytes */
    _tile_loadconfig(cfg);
    _tile_zero(0);
    _tile_release();
    return 0;
}
"""


def amx_unusable() -> bool:
    """True where the CPU reports AMX but a tile instruction faults (so ggml's AMX would crash)."""
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
        return False
    if "amx_tile" not in cpu_fingerprint().split():
        return False
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if not cc:
        return False
    with tempfile.TemporaryDirectory(prefix="edgessd-amx-") as tmp:
        src, exe = Path(tmp) / "amx.c", Path(tmp) / "amx"
        src.write_text(AMX_PROBE)
        if run([cc, "-O1", "-mamx-tile", "-o", str(exe), str(src)], capture_output=True).returncode != 0:
            return False  # a compiler without AMX support does not build ggml's AMX path either
        return run([str(exe)], capture_output=True).returncode != 0


def cmake_args(backend: str) -> list[str]:
    args = list(BASE_CMAKE_ARGS)
    if backend == "cuda":
        if not shutil.which("nvcc"):
            raise BuildError("EDGESSD_BACKEND=cuda but nvcc is not on PATH: install the CUDA toolkit")
        archs = os.environ.get("CMAKE_CUDA_ARCHITECTURES", "native")
        args += ["-DGGML_CUDA=ON", f"-DCMAKE_CUDA_ARCHITECTURES={archs}"]
        try:
            args += cuda_sdk.cmake_args()  # cuBLAS from PyPI where the toolkit lacks it
        except cuda_sdk.SdkError as e:
            raise BuildError(str(e)) from e
    elif backend == "metal":
        args += ["-DGGML_METAL=ON", "-DGGML_METAL_EMBED_LIBRARY=ON"]
    else:
        args += ["-DGGML_CUDA=OFF", "-DGGML_METAL=OFF"]
    if backend != "metal" and amx_unusable():
        args += ["-DEDGESSD_NO_AMX=ON"]
    args += shlex.split(os.environ.get("EDGESSD_CMAKE_ARGS", ""))
    return args


def cpu_fingerprint() -> str:
    """GGML_NATIVE builds for this CPU: the key must change with the CPU's features."""
    try:
        text = Path("/proc/cpuinfo").read_text()
        flags = re.search(r"^(flags|Features)\s*:\s*(.*)$", text, re.M)
        return flags.group(2) if flags else platform.processor()
    except OSError:
        return platform.processor() or platform.machine()


def patch_files() -> list[Path]:
    return sorted(PATCH_DIR.glob("*.patch"))


def kernel_files() -> list[Path]:
    return sorted(p for p in KERNEL_DIR.iterdir() if p.suffix in (".c", ".h"))


def build_key(backend: str, args: list[str]) -> str:
    h = hashlib.sha256()
    parts = [VERSION, SDIST_SHA256, backend, json.dumps(args), sys.platform, platform.machine(), cpu_fingerprint()]
    for p in parts:
        h.update(p.encode() + b"\0")
    for p in patch_files() + kernel_files():
        h.update(p.name.encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=False, **kw)


def fetch_sdist(dest: Path) -> Path:
    path = dest / SDIST_NAME
    if path.exists() and sha256_file(path) == SDIST_SHA256:
        return path
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest) as tmp:
        print(f"edgessd: downloading llama-cpp-python {VERSION} sdist", flush=True)
        r = run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                 "--no-build-isolation", "-q", "-d", tmp, f"llama-cpp-python=={VERSION}"],
                capture_output=True, text=True)
        got = Path(tmp) / SDIST_NAME
        if not got.exists():
            raise BuildError(f"could not download llama-cpp-python=={VERSION} from PyPI:\n{r.stderr.strip()[-800:]}")
        digest = sha256_file(got)
        if digest != SDIST_SHA256:
            raise BuildError(f"{SDIST_NAME}: sha256 {digest} does not match the pinned {SDIST_SHA256}")
        os.replace(got, path)
    return path


def copy_kernels(src: Path) -> None:
    dest = src / KERNEL_DEST
    dest.mkdir(parents=True, exist_ok=True)
    for f in kernel_files():
        shutil.copy2(f, dest / f.name)
    print(f"edgessd: copied {len(kernel_files())} kernel sources to {KERNEL_DEST}", flush=True)


def apply_patches(src: Path) -> None:
    copy_kernels(src)
    for patch in patch_files():
        check = run(["patch", "-p1", "--forward", "--batch", "--dry-run", "-i", str(patch)],
                    cwd=src, capture_output=True, text=True)
        if check.returncode != 0:
            failed = re.findall(r"^patching file (\S+)\n(?:.*\n)*?.*FAILED", check.stdout, re.M)
            where = ", ".join(sorted(set(failed))) or "see output"
            raise BuildError(f"{patch.name} does not apply to llama-cpp-python {VERSION} ({where}):\n"
                             f"{check.stdout.strip()[-1500:]}")
        if run(["patch", "-p1", "--forward", "--batch", "--quiet", "-i", str(patch)], cwd=src).returncode != 0:
            raise BuildError(f"{patch.name} passed its dry run but failed to apply")
        print(f"edgessd: applied {patch.name}", flush=True)


def build_wheel(sdist: Path, args: list[str], out: Path, log: Path) -> tuple[Path, float]:
    with tempfile.TemporaryDirectory(prefix="edgessd-build-") as tmp:
        with tarfile.open(sdist) as tar:
            tar.extractall(tmp, filter="data")
        src = Path(tmp) / f"llama_cpp_python-{VERSION}"
        apply_patches(src)
        env = dict(os.environ, CMAKE_ARGS=" ".join(args),
                   CMAKE_BUILD_PARALLEL_LEVEL=os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 2)),
                   FORCE_CMAKE="1")
        cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-v",
               "-w", str(out), str(src)]
        print(f"edgessd: building llama.cpp ({' '.join(args)}); log: {log}", flush=True)
        t0 = time.monotonic()
        with open(log, "w") as logf:
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            assert proc.stdout is not None
            for line in proc.stdout:
                logf.write(line)
                m = re.search(r"\[\s*(\d+)/(\d+)\]|\[\s*(\d+)%\]", line)
                if m and sys.stdout.isatty():
                    done = f"{m.group(1)}/{m.group(2)}" if m.group(1) else f"{m.group(3)}%"
                    print(f"\r  compiling {done}  ({time.monotonic() - t0:.0f}s)   ", end="", flush=True)
            rc = proc.wait()
        if sys.stdout.isatty():
            print()
        if rc != 0:
            tail = "".join(log.read_text().splitlines(keepends=True)[-30:])
            raise BuildError(f"wheel build failed (exit {rc}); last lines of {log}:\n{tail}")
        seconds = time.monotonic() - t0
        print(f"edgessd: built in {seconds:.0f}s", flush=True)
        wheels = list(out.glob("llama_cpp_python-*.whl"))
        if len(wheels) != 1:
            raise BuildError(f"expected one wheel in {out}, found {len(wheels)}")
        return wheels[0], seconds


def cached_wheel(key: str, backend: str, args: list[str]) -> Path:
    root = cache_dir()
    wheel_dir = root / "wheels" / key
    with file_lock(root / "locks" / f"wheel-{key}.lock"):
        found = list(wheel_dir.glob("llama_cpp_python-*.whl"))
        if found:
            print(f"edgessd: reusing cached wheel {found[0]}", flush=True)
            return found[0]
        sdist = fetch_sdist(root / "sdist")
        (root / "logs").mkdir(parents=True, exist_ok=True)
        (root / "wheels").mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=root / "wheels"))
        try:
            wheel, seconds = build_wheel(sdist, args, staging, root / "logs" / f"build-{key}.log")
            meta = {"key": key, "version": VERSION, "backend": backend, "cmake_args": args,
                    "build_seconds": round(seconds, 1),
                    "build_parallel_level": os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 2)),
                    "patches": {p.name: sha256_file(p) for p in patch_files() + kernel_files()}}
            (staging / "build.json").write_text(json.dumps(meta, indent=2) + "\n")
            os.replace(staging, wheel_dir)  # atomic: a half-built wheel is never seen
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return wheel_dir / wheel.name


def installed_key(marker: Path) -> str | None:
    try:
        return json.loads(marker.read_text()).get("key")
    except (OSError, ValueError):
        return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--print-key", action="store_true", help="print the cache key and exit")
    ap.add_argument("--force", action="store_true", help="reinstall even if this build is installed")
    ap.add_argument("--build-only", action="store_true",
                    help="build (or reuse) the cached wheel and print its path; install nothing")
    ns = ap.parse_args(argv)
    try:
        backend = choose_backend()
        args = cmake_args(backend)
        key = build_key(backend, args)
        if ns.print_key:
            print(key)
            return 0
        if ns.build_only:
            print(cached_wheel(key, backend, args))
            return 0
        marker = Path(sys.prefix) / "edgessd-llama-build.json"
        if not ns.force and installed_key(marker) == key:
            print(f"edgessd: patched llama-cpp-python {VERSION} ({backend}, {key}) already installed", flush=True)
            return 0
        wheel = cached_wheel(key, backend, args)
        r = run([sys.executable, "-m", "pip", "install", "-q", "--force-reinstall", "--no-deps", str(wheel)])
        if r.returncode != 0:
            raise BuildError(f"pip could not install {wheel}")
        tmp = marker.with_suffix(".tmp")
        tmp.write_text(json.dumps({"key": key, "backend": backend, "wheel": str(wheel)}) + "\n")
        os.replace(tmp, marker)
        print(f"edgessd: installed patched llama-cpp-python {VERSION} ({backend})", flush=True)
        return 0
    except BuildError as e:
        print(f"edgessd build error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
