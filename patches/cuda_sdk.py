#!/usr/bin/env python3
"""What a CUDA build needs beyond nvcc: cuBLAS from PyPI's NVIDIA wheel, and CMake's pointers to it.

    python patches/cuda_sdk.py            # fetch (or reuse) cuBLAS for this nvcc; print the CMake arguments

A machine with nvcc and cudart but no cuBLAS (this project's CPU machine) can still compile
ggml-cuda: the ``nvidia-cublas`` wheel of nvcc's CUDA release holds the headers and the
shared libraries. It is downloaded with pip (no dependencies), its sha256 checked, and
unpacked under ``<cache>/cuda-sdk/cublas-<version>/`` with the unversioned ``.so`` links
the linker looks for; the directory appears by an atomic rename, so a half-unpacked one
is never used.

A toolkit that has cuBLAS already needs nothing here, and :func:`cmake_args` returns only
what that toolkit lacks; an ``nvidia-cublas`` wheel already installed in the interpreter (a
CUDA image with PyTorch, which reaches no registry) is used before any download. Where no ``libcuda.so`` exists
(no driver, no stub), ggml-cuda is built with ``GGML_CUDA_NO_VMM=ON``: its virtual-memory
pool is the only code that links the driver library. Standard library only.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from edgessd.fsutil import cache_dir, file_lock, sha256_file  # noqa: E402  (stdlib-only module)

# nvcc release -> the cuBLAS wheel of that release (pinned by version and sha256)
CUBLAS_WHEELS: dict[str, tuple[str, str, str]] = {
    "13.0": ("13.0.2.14", "nvidia_cublas-13.0.2.14-py3-none-manylinux_2_27_x86_64.whl",
             "0cf238ffdbe46c00cb9aa98e7bca745c223a5ca5a53e686ac8b3e5a08fe80d6c"),
}
WHEEL_PREFIX = "nvidia/cu13/"


class SdkError(Exception):
    """cuBLAS could not be provided; the message says why and what to do."""


def nvcc_path() -> Path:
    nvcc = shutil.which("nvcc")
    if not nvcc:
        raise SdkError("nvcc is not on PATH: install the CUDA toolkit")
    return Path(nvcc).resolve()


def nvcc_version() -> str:
    """nvcc's full version, e.g. ``13.0.88``."""
    out = subprocess.run([str(nvcc_path()), "--version"], capture_output=True, text=True).stdout
    m = re.search(r"release [\d.]+, V(\d+\.\d+\.\d+)", out)
    if not m:
        raise SdkError(f"cannot read nvcc's version from: {out.strip()[-200:]}")
    return m.group(1)


def toolkit_root() -> Path:
    """The toolkit nvcc belongs to (``bin/nvcc`` under it)."""
    return nvcc_path().parent.parent


def toolkit_dirs(root: Path) -> tuple[list[Path], list[Path]]:
    """(include dirs, library dirs) where this toolkit keeps its headers and libraries."""
    target = root / "targets" / "x86_64-linux"
    incs = [root / "include", target / "include"]
    libs = [root / "lib64", root / "lib", target / "lib"]
    return [p for p in incs if p.is_dir()], [p for p in libs if p.is_dir()]


def toolkit_has_cublas(root: Path) -> bool:
    incs, libs = toolkit_dirs(root)
    return (any((d / "cublas_v2.h").exists() for d in incs)
            and any((d / "libcublas.so").exists() for d in libs))


def driver_library_present(root: Path) -> bool:
    """A libcuda.so to link against: the driver's, or the toolkit's stub."""
    _, libs = toolkit_dirs(root)
    candidates = [d / "stubs" / "libcuda.so" for d in libs] + [d / "libcuda.so" for d in libs]
    candidates += [Path(p) / "libcuda.so" for p in ("/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib/wsl/lib",
                                                      "/usr/local/nvidia/lib64", "/usr/local/nvidia/lib")]
    return any(p.exists() for p in candidates)


def installed_cublas() -> Path | None:
    """An ``nvidia-cublas`` wheel already installed in this interpreter (``nvidia/cu13``), or None.

    A CUDA image with PyTorch has one, so a machine that reaches no registry builds with it.
    """
    for entry in sys.path:
        sdk = Path(entry or ".") / WHEEL_PREFIX.rstrip("/")
        if (sdk / "include" / "cublas_v2.h").exists() and (sdk / "lib" / "libcublas.so.13").exists():
            return sdk
    return None


def unpack_cublas(wheel: Path, dest: Path) -> None:
    """Headers to ``dest/include``, libraries to ``dest/lib`` with their unversioned links."""
    with zipfile.ZipFile(wheel) as z:
        for name in z.namelist():
            if not name.startswith(WHEEL_PREFIX) or name.endswith("/"):
                continue
            rel = Path(name[len(WHEEL_PREFIX):])
            if rel.parts[0] not in ("include", "lib"):
                continue
            out = dest / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            with z.open(name) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
    for so in (dest / "lib").glob("*.so.*"):
        link = so.parent / so.name.split(".so.")[0]
        link = link.with_name(link.name + ".so")
        if not link.exists():
            link.symlink_to(so.name)


def fetch_cublas(release: str) -> Path:
    """The unpacked cuBLAS of this CUDA release, downloading it once into the cache."""
    if release not in CUBLAS_WHEELS:
        raise SdkError(f"no cuBLAS wheel pinned for CUDA {release} (pinned: {', '.join(CUBLAS_WHEELS)}); "
                       f"install cuBLAS with the toolkit or add a pin to patches/cuda_sdk.py")
    version, wheel_name, digest = CUBLAS_WHEELS[release]
    root = cache_dir() / "cuda-sdk"
    dest = root / f"cublas-{version}"
    root.mkdir(parents=True, exist_ok=True)
    with file_lock(cache_dir() / "locks" / f"cublas-{version}.lock"):
        if (dest / "include" / "cublas_v2.h").exists():
            return dest
        with tempfile.TemporaryDirectory(prefix=f".cublas-{version}-", dir=root) as tmp:
            print(f"edgessd: downloading nvidia-cublas {version} (about 420 MB)", flush=True)
            r = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q",
                                "--only-binary", ":all:", "--platform", "manylinux_2_27_x86_64",
                                "-d", tmp, f"nvidia-cublas=={version}"], capture_output=True, text=True)
            wheel = Path(tmp) / wheel_name
            if not wheel.exists():
                raise SdkError(f"could not download nvidia-cublas=={version}:\n{r.stderr.strip()[-800:]}")
            got = sha256_file(wheel)
            if got != digest:
                raise SdkError(f"{wheel_name}: sha256 {got} does not match the pinned {digest}")
            staging = Path(tmp) / "sdk"
            unpack_cublas(wheel, staging)
            os.replace(staging, dest)
    return dest


def shared_library(lib: Path, name: str) -> Path:
    """``lib/lib<name>.so`` where the link exists (an unpacked download), else ``.so.13`` (an installed wheel)."""
    plain = lib / f"lib{name}.so"
    return plain if plain.exists() else lib / f"lib{name}.so.13"


def cmake_args() -> list[str]:
    """CMake arguments that give ggml-cuda cuBLAS (and, without libcuda, no VMM pool)."""
    root = toolkit_root()
    args: list[str] = []
    if not toolkit_has_cublas(root):
        sdk = installed_cublas() or fetch_cublas(".".join(nvcc_version().split(".")[:2]))
        inc, lib = sdk / "include", sdk / "lib"
        args += [f"-DCUDA_cublas_LIBRARY={shared_library(lib, 'cublas')}",
                 f"-DCUDA_cublasLt_LIBRARY={shared_library(lib, 'cublasLt')}",
                 f"-DCMAKE_CUDA_FLAGS=-I{inc}", f"-DCMAKE_CXX_FLAGS=-I{inc}",
                 f"-DCMAKE_SHARED_LINKER_FLAGS=-Wl,-rpath-link,{lib}"]
    if not driver_library_present(root):
        args += ["-DGGML_CUDA_NO_VMM=ON"]
    return args


def main() -> int:
    try:
        print(" ".join(cmake_args()))
        return 0
    except SdkError as e:
        print(f"edgessd cuda-sdk error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
