"""``edgessd chat [MODEL]``: an interactive chat in the terminal."""
from __future__ import annotations

import os
import signal
import threading

import click

from ..errors import EdgessdError
from .options import engine_options, learn_option, model_argument, sampler_options, template_options

PROMPT = "> "


def read_message() -> str:
    """One message from the user; a line of three double quotes starts and ends a multi-line one."""
    line = input(PROMPT)
    if line.strip() != '"""':
        return line
    lines = []
    while True:
        more = input("... ")
        if more.strip() == '"""':
            return "\n".join(lines)
        lines.append(more)


def stream_reply(items) -> None:
    """Print a reply as it streams; Ctrl-C stops it (the generation ends after its current cycle)."""
    cancel = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: cancel.set())
    try:
        for item in items(cancel):
            if isinstance(item, str):
                click.echo(item, nl=False)
    finally:
        signal.signal(signal.SIGINT, previous)
    click.echo()


@click.command("chat")
@model_argument
@click.option("--system", default=None, help="System prompt.")
@click.option("-n", "--n-predict", "n_predict", type=click.IntRange(min=1), default=512, show_default=True,
              help="Tokens per reply at most.")
@click.option("--temp", "temperature", type=click.FloatRange(min=0), default=0.7, show_default=True,
              help="Sampling temperature; 0 is greedy.")
@sampler_options
@click.option("--verbose", is_flag=True, help="Show llama.cpp's log.")
@engine_options
@template_options
@learn_option
def chat(model, system, n_predict, temperature, sampling, seed, mode, skip, draft_max, verbose, n_threads, n_ctx,
         n_gpu_layers, chat_template, learn) -> None:
    """Chat with MODEL (a GGUF path or registry name; default smollm2-135m, fetched on first use).

    \b
    Type /help for commands. Ctrl-C stops a reply, Ctrl-D leaves.
    Examples:
      edgessd chat
      edgessd chat qwen2.5-coder-0.5b --system "You are a terse coding assistant." --temp 0
    """
    if verbose:
        os.environ["EDGESSD_VERBOSE"] = "1"
    from ..chat import HELP, ChatSession, ChatSettings
    from ..engine import Engine

    if seed is not None and seed < 0:
        seed = None  # llama.cpp's convention: a negative seed asks for a random one
    eng = Engine(model, n_ctx=n_ctx, n_threads=n_threads, n_gpu_layers=n_gpu_layers,
                 learn=learn, chat_template=chat_template)
    settings = ChatSettings(n_predict=n_predict, temperature=temperature, **sampling, seed=seed, mode=mode,
                            skip=skip, draft_max=draft_max)
    session = ChatSession(eng, settings, system=system)
    m = eng.model
    click.secho(f"edgessd chat: {eng.model_path.name} ({m.arch}, {m.n_layer} layers, "
                f"{eng.ctx.n_threads} threads, ctx {eng.ctx.n_ctx}). /help for commands, Ctrl-D to leave.",
                dim=True)
    while True:
        try:
            text = read_message()
        except EOFError:
            click.echo()
            break
        except KeyboardInterrupt:
            click.echo()
            continue
        if not text.strip():
            continue
        try:
            if text.startswith("/"):
                if handle_command(session, text, HELP):
                    break
                continue
            dropped = session.fit_context_for(text)
            if dropped:
                click.secho(f"[context full: dropped the {dropped} oldest messages]", dim=True)
            stream_reply(lambda cancel, text=text: session.ask(text, cancel))
            if settings.show_stats:
                click.secho(session.status_line(), dim=True)
        except EdgessdError as e:
            click.secho(f"error: {e}", fg="red", err=True)
        except KeyboardInterrupt:  # Ctrl-C before the reply streams (while its prompt is prepared)
            click.echo()


def handle_command(session, text: str, help_text: str) -> bool:
    """Run a slash command; returns True to leave."""
    cmd, _, arg = text.strip().partition(" ")
    arg = arg.strip()
    if cmd in ("/exit", "/quit"):
        return True
    if cmd == "/help":
        click.echo(help_text)
    elif cmd == "/clear":
        session.clear()
        click.secho("[conversation cleared]", dim=True)
    elif cmd == "/regen":
        stream_reply(lambda cancel: session.regen(cancel))
        if session.settings.show_stats:
            click.secho(session.status_line(), dim=True)
    elif cmd == "/system":
        session.system = arg or None
        session.clear()
        click.secho("[system prompt set; conversation cleared]" if arg else "[system prompt removed]", dim=True)
    elif cmd == "/set":
        key, _, value = arg.partition(" ")
        if not value.strip():
            click.secho("usage: /set temp|top_k|top_p|n|mode|seed VALUE", err=True)
        else:
            click.secho(f"[{session.settings.set(key, value.strip())}]", dim=True)
    elif cmd == "/stats":
        if arg in ("on", "off"):
            session.settings.show_stats = arg == "on"
            click.secho(f"[status line {arg}]", dim=True)
        else:
            click.echo(session.stats_report())
    else:
        click.secho(f"unknown command {cmd}; /help lists them", err=True)
    return False
