"""``edgessd setup``: build (or reuse) the patched llama-cpp-python and install it here."""
from __future__ import annotations

import importlib.util
import subprocess
import sys

import click

from ..errors import EdgessdError
from ..registry import shipped_dir

# what patches/build.py needs to compile llama.cpp (a cached wheel needs neither); the
# Makefile pins the same versions
BUILD_TOOLS = ("scikit-build-core==1.1.2", "ninja")


@click.command()
@click.option("--force", is_flag=True, help="Reinstall even if this build is already installed.")
@click.option("--print-key", is_flag=True, help="Print the build's cache key and exit.")
@click.option("--peer-tools", is_flag=True,
              help="Also build llama.cpp's own llama-completion and llama-speculative-simple from the same "
                   "patched source, which `edgessd bench` runs as peers (3-8 minutes, then cached).")
def setup(force: bool, print_key: bool, peer_tools: bool) -> None:
    """Build llama-cpp-python with edgessd's patches and install it into this Python.

    The wheel is cached under the user cache directory, keyed by everything that changes it,
    so a second environment reuses it in seconds. Run this once after `pip install edgessd`;
    in a checkout, `make setup` does the same.

    \b
    Examples:
      edgessd setup                  # build or reuse the patched llama-cpp-python, install it here
      edgessd setup --peer-tools     # also llama.cpp's own tools, for `edgessd bench`'s peers
      edgessd setup --print-key      # the cache key of this machine's build
    """
    build = shipped_dir("patches") / "build.py"
    if not build.is_file():
        raise EdgessdError(f"edgessd's llama.cpp patches are missing ({build}); reinstall edgessd")
    if not print_key and importlib.util.find_spec("scikit_build_core") is None:
        key = subprocess.run([sys.executable, str(build), "--print-key"], capture_output=True, text=True)
        if key.returncode != 0 or not _cached(key.stdout.strip()):
            click.echo(f"edgessd: installing build tools ({', '.join(BUILD_TOOLS)})", err=True)
            if subprocess.run([sys.executable, "-m", "pip", "install", "-q", *BUILD_TOOLS]).returncode != 0:
                raise EdgessdError("could not install the build tools with pip")
    args = [a for a, on in (("--force", force), ("--print-key", print_key)) if on]
    rc = subprocess.run([sys.executable, str(build), *args]).returncode
    if rc != 0:
        raise EdgessdError(f"building the patched llama.cpp failed (exit {rc}); its log is named above")
    if peer_tools and not print_key:
        from ..benchmark.peer_tools import build_tools

        click.echo(f"edgessd: llama.cpp tools for the bench's peers: {build_tools(force=force)}")


def _cached(key: str) -> bool:
    from ..fsutil import cache_dir

    return any((cache_dir() / "wheels" / key).glob("llama_cpp_python-*.whl")) if key else False
