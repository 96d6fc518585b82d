"""What machine this is: the device fingerprint stored with every profile and report."""
from __future__ import annotations

import json
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

import psutil


def cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
        m = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
        if m:
            return m.group(1).strip()
    except OSError:
        pass
    if sys.platform == "darwin":
        r = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True)
        if r.returncode == 0 and r.stdout.strip():
            return r.stdout.strip()
    return platform.processor() or platform.machine()


def gpu_name() -> str | None:
    smi = shutil.which("nvidia-smi")
    if smi:
        r = subprocess.run([smi, "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True)
        if r.returncode == 0 and r.stdout.strip():
            return r.stdout.strip().splitlines()[0]
    if Path("/etc/nv_tegra_release").exists():
        return "NVIDIA Jetson"
    if sys.platform == "darwin" and platform.machine() == "arm64":
        return "Apple GPU (Metal)"
    return None


def build_record() -> dict:
    """What patches/build.py recorded of the installed patched llama.cpp (key, backend, wheel); {} if nothing."""
    try:
        rec = json.loads((Path(sys.prefix) / "edgessd-llama-build.json").read_text())
    except (OSError, ValueError):
        return {}
    return rec if isinstance(rec, dict) else {}


def backend(record: dict | None = None) -> str:
    """The backend the installed llama.cpp was built for (of ``record``, else read now)."""
    return str((build_record() if record is None else record).get("backend", "unknown"))


def build_key(record: dict | None = None) -> str | None:
    """The key of the installed build, a hash of the llama.cpp source, the patches and the kernels
    (of ``record``, else read now)."""
    key = (build_record() if record is None else record).get("key")
    return str(key) if key else None


def cpu_kernels() -> str:
    """The CPU matmul kernels that small batches run on (see edgessd._capi.cpu_kernels)."""
    from ._capi import cpu_kernels as kernels

    return kernels()


def gpu_slug(name: str | None) -> str:
    """A GPU's name as a file-name part: ``NVIDIA H200`` -> ``nvidia-h200``."""
    return re.sub(r"[^a-z0-9]+", "-", (name or "no-gpu").lower()).strip("-") or "no-gpu"


def fingerprint(n_threads: int | None = None, n_gpu_layers: int = 0) -> dict:
    """CPU, cores, memory, backend and build, GPU, CPU kernels, offload: what a profile's timings
    depend on. The build key changes with any patch or kernel, so a rebuilt llama.cpp is measured
    again rather than planned with the old one's costs.

    ``n_gpu_layers`` (the -ngl the model is loaded with) is recorded only when it offloads
    something, so a CPU profile keeps the fingerprint it had before offload was keyed.
    """
    build = build_record()
    fp = {
        "cpu": cpu_model(),
        "machine": platform.machine(),
        "os": platform.system(),
        "cores_physical": psutil.cpu_count(logical=False),
        "cores_logical": psutil.cpu_count(logical=True),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "backend": backend(build),
        "build": build_key(build),
        "gpu": gpu_name(),
        "cpu_kernels": cpu_kernels(),
    }
    if n_threads is not None:
        fp["threads"] = n_threads
    if n_gpu_layers > 0:
        fp["n_gpu_layers"] = n_gpu_layers
    return fp
