"""Shared fixtures: real GGUF models from the registry (fetched into the user cache once)."""
from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EDGESSD = [sys.executable, "-m", "edgessd.cli.main"]

# (registry name, architecture) with a real model for every architecture the patch claims.
ARCH_MODELS = [("smollm2-135m", "llama"), ("qwen2.5-coder-0.5b", "qwen2"), ("gemma3-270m", "gemma3")]

_models: dict[str, object] = {}

# V(k) / t(1), k = 1..10, of qwen2.5-coder-1.5b on this project's 2-core CPU, from an earlier
# profile (fastest runs, V(9) and V(10) interpolated): a compute-bound cost model for unit tests
CPU_15B_V = (1.0, 1.72, 2.44, 3.32, 3.80, 4.54, 6.45, 8.37, 8.6, 8.8)


def cpu_15b(k_max: int):
    """A CostModel with t(1) = 10 ms and CPU_15B_V up to V(k_max)."""
    import numpy as np

    from edgessd.planner import CostModel

    return CostModel(t1=10.0, verify=10.0 * np.array(CPU_15B_V[:k_max]), attn=np.ones(4), mlp=np.ones(4))


@functools.cache
def batches_exact(path) -> bool:
    """Whether a k-token batch gives exactly the logits of k one-token decodes for this model
    here: edgessd's CPU kernels are in use and cover every matmul weight type of the file."""
    from edgessd.cli.info_cmd import gguf_facts, kernel_coverage

    k = kernel_coverage(gguf_facts(Path(path))["tensor_bytes"])
    return k["kernels"] != "stock" and not k["not_covered"]


def load_model(name: str):
    """A session-wide loaded Model for registry name ``name``."""
    from edgessd import registry
    from edgessd._capi import Model

    if name not in _models:
        _models[name] = Model(registry.resolve(name))
    return _models[name]


@pytest.fixture(scope="session")
def smol():
    return load_model("smollm2-135m")


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory):
    from tinygguf import write_tiny_gpt2

    return write_tiny_gpt2(tmp_path_factory.mktemp("gguf") / "tiny-gpt2.gguf")


def run_cli(*args: str, env: dict | None = None, timeout: float = 300, input: str | None = None):
    """Run the real ``edgessd`` CLI in a subprocess; returns CompletedProcess (text)."""
    full_env = dict(os.environ, **(env or {}))
    full_env.pop("EDGESSD_DEBUG", None)
    return subprocess.run(EDGESSD + list(args), capture_output=True, text=True, env=full_env,
                          timeout=timeout, cwd=REPO, input=input)
