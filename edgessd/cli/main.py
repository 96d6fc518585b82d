"""The ``edgessd`` click group. Subcommands live one per module and load lazily."""
from __future__ import annotations

import importlib
import sys
import traceback

import click

from ..errors import EdgessdError

# name -> (module, attribute, one-line help shown in `edgessd --help` without importing the module)
COMMANDS = {
    "chat": ("edgessd.cli.chat_cmd", "chat", "Chat with a model in the terminal (default smollm2-135m)."),
    "generate": ("edgessd.cli.generate_cmd", "generate", "Generate a completion of a prompt (streamed, or --json)."),
    "profile": ("edgessd.cli.profile_cmd", "profile", "Measure sublayer costs and V(k) on this device."),
    "calibrate": ("edgessd.cli.calibrate_cmd", "calibrate",
                  "Find each domain's best skip sets by real acceptance; build the KNN index."),
    "models": ("edgessd.cli.models_cmd", "models", "List, fetch and locate the registry's GGUF models."),
    "serve": ("edgessd.cli.serve_cmd", "serve", "Serve a model over a local OpenAI-compatible HTTP API."),
    "info": ("edgessd.cli.info_cmd", "info", "Show a model's architecture, quantization, skip support, profile."),
    "bench": ("edgessd.cli.bench_cmd", "bench", "Benchmark decoding methods and peers on a Spec-Bench prompt file."),
    "setup": ("edgessd.cli.setup_cmd", "setup", "Build (or reuse) the patched llama.cpp and install it here."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attr, _ = COMMANDS[name]
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, help_) for name, (_, _, help_) in COMMANDS.items()])

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except EdgessdError as e:
            if ctx.obj and ctx.obj.get("debug"):
                traceback.print_exc()  # the traceback asked for, but still exit 2 as for any error
            click.echo(f"edgessd: error: {e}", err=True)
            sys.exit(2)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, envvar="EDGESSD_DEBUG", help="Show tracebacks for errors.")
@click.version_option(package_name="edgessd")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """edgessd: faster local LLM inference, same output.

    \b
    Examples:
      edgessd chat                      # the default model, fetched on first use
      edgessd chat qwen2.5-coder-0.5b --temp 0
      edgessd generate smollm2-135m -p "The capital of France is" -n 32
      edgessd profile qwen2.5-coder-1.5b
      edgessd calibrate smollm2-135m
      edgessd models list
      edgessd models pull smollm2-135m
      edgessd models path qwen2.5-coder-0.5b
      edgessd serve smollm2-135m --port 8080     # OpenAI API on http://127.0.0.1:8080/v1
      edgessd info qwen2.5-coder-0.5b --json
      edgessd bench smollm2-135m --prompts bench/prompts/bench.jsonl -n 64 --repeat 2
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


def main() -> None:
    """Entry point: usage errors and library errors are one line on stderr, exit code 2."""
    try:
        rc = cli.main(prog_name="edgessd", standalone_mode=False)
    except click.UsageError as e:
        cmd = e.ctx.command_path if e.ctx else "edgessd"
        click.echo(f"edgessd: error: {e.format_message()} (see '{cmd} --help')", err=True)
        sys.exit(2)
    except click.Abort:
        click.echo("edgessd: aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        click.echo(f"edgessd: error: {e.format_message()}", err=True)
        sys.exit(e.exit_code)
    sys.exit(rc if isinstance(rc, int) else 0)


if __name__ == "__main__":
    main()
