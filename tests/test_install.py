"""edgessd as a package: its wheel, installed into a fresh venv outside the repo, sets itself
up with `edgessd setup` and then runs from any directory, writing nothing into the package.

Uses pip as a user would (PyPI and pip's cache for the dependencies). The patched
llama-cpp-python comes from edgessd's wheel cache, which `make test` has filled.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import REPO


def sh(*cmd, cwd: Path, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=cwd, timeout=timeout,
                       env=dict(os.environ, **(env or {})))
    assert r.returncode == 0, f"{cmd} failed ({r.returncode}):\n{r.stdout[-1500:]}\n{r.stderr[-1500:]}"
    return r


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if "__pycache__" not in p.parts}


def test_a_wheel_in_a_fresh_venv_sets_up_and_runs_from_anywhere(tmp_path):
    dist, venv, elsewhere = tmp_path / "dist", tmp_path / "venv", tmp_path / "elsewhere"
    elsewhere.mkdir()
    sh(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", dist, REPO, cwd=tmp_path)
    (wheel,) = dist.glob("edgessd-*.whl")
    sh(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    py, exe = venv / "bin" / "python", venv / "bin" / "edgessd"
    pip = [py, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    # edgessd first without its dependencies: PyPI's llama-cpp-python is unpatched (and would
    # compile for minutes); `edgessd setup` installs the patched build in its place
    sh(*pip, "--no-deps", wheel, "click>=8.1", cwd=elsewhere)
    setup = sh(exe, "setup", cwd=elsewhere)
    assert "installed patched llama-cpp-python" in setup.stdout + setup.stderr
    sh(*pip, wheel, cwd=elsewhere)  # the other dependencies; llama-cpp-python is satisfied
    site = Path(sh(py, "-c", "import edgessd, pathlib; print(pathlib.Path(edgessd.__file__).parent)",
                   cwd=elsewhere).stdout.strip())
    assert REPO not in site.parents, f"imported edgessd from the checkout: {site}"
    assert (site / "models" / "registry.json").is_file() and (site / "patches" / "build.py").is_file()
    before = files_under(site)

    info = sh(exe, "info", "smollm2-135m", cwd=elsewhere)
    assert "domain index" in info.stdout and str(site) in info.stdout  # the index shipped in the wheel
    gen = sh(exe, "generate", "smollm2-135m", "-p", "The capital of France is", "-n", "8", "--temp", "0",
             cwd=elsewhere)
    assert gen.stdout.strip(), gen.stderr
    assert files_under(site) == before, "edgessd wrote into its installed package"
    assert not list(elsewhere.iterdir()), "edgessd wrote into the working directory"
