"""``edgessd generate MODEL -p PROMPT``: one completion, streamed or as JSON."""
from __future__ import annotations

import json
import sys
import threading

import click

from ..server.stops import StopCut
from .options import (
    engine_options,
    learn_option,
    model_argument,
    read_text,
    sampling_options,
    template_options,
)


@click.command("generate")
@model_argument
@click.option("-p", "--prompt", default=None, help="Prompt text ('-' reads standard input).")
@click.option("-f", "--file", "prompt_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Read the prompt from FILE (as llama.cpp's -f).")
@click.option("-r", "--reverse-prompt", "--stop", "stops", multiple=True, metavar="TEXT",
              help="Stop when the reply reaches TEXT, which is not printed (repeatable; llama.cpp's -r).")
@click.option("--chat", is_flag=True, help="Wrap the prompt as a user message in the model's chat template.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object: text, tokens, mode, layer_set, stats.")
@click.option("--json-schema", "json_schema", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Reply with JSON valid against the JSON schema in FILE.")
@click.option("--grammar", "grammar", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Reply following the grammar in FILE (llguidance Lark, or llama.cpp GBNF).")
@sampling_options
@engine_options
@template_options
@learn_option
def generate(model, prompt, prompt_file, stops, chat, as_json, json_schema, grammar, n_predict, temperature,
             sampling, seed, mode, skip, draft_max, n_threads, n_ctx, n_gpu_layers, chat_template, learn) -> None:
    """Generate a completion of PROMPT with MODEL (a GGUF path or registry name).

    \b
    Examples:
      edgessd generate smollm2-135m -p "The capital of France is" -n 32
      edgessd generate qwen2.5-coder-0.5b --chat -p "Write fizzbuzz in Python" --mode lookup --json
      edgessd generate model.gguf -p "Once upon" --mode layerskip --skip 'attn:3-9;mlp:4,8'
      edgessd generate qwen2.5-coder-0.5b --chat -p "A user as JSON" --json-schema user.schema.json
    """
    from ..engine import Engine

    if (prompt is None) == (prompt_file is None):
        from ..errors import InvalidArgumentError

        raise InvalidArgumentError("give the prompt with -p TEXT or -f FILE (one of them)")
    if prompt_file is not None:
        prompt = read_text(prompt_file)
    elif prompt == "-":
        prompt = sys.stdin.read()
    if seed is not None and seed < 0:
        seed = None  # llama.cpp's convention, as in `edgessd serve`: a negative seed asks for a random one
    eng = Engine(model, n_ctx=n_ctx, n_threads=n_threads, n_gpu_layers=n_gpu_layers,
                 learn=learn, chat_template=chat_template)
    request = [{"role": "user", "content": prompt}] if chat else prompt
    kwargs = dict(n_predict=n_predict, temperature=temperature, **sampling, seed=seed, mode=mode, skip=skip,
                  draft_max=draft_max, json_schema=read_text(json_schema), grammar=read_text(grammar))
    cancel = threading.Event()
    cut = StopCut(stops, cancel)
    text = []
    for piece, _ in cut.pieces(eng.stream(request, cancel=cancel, **kwargs)):
        if as_json:
            text.append(piece)
        else:
            click.echo(piece, nl=False)
    result = cut.result
    if as_json:
        out = result.to_json()
        if stops:
            out["text"] = "".join(text)
            if cut.stopped:
                out["stop_reason"] = "stop"
        click.echo(json.dumps(out))
        return
    click.echo()
    s = result.stats
    click.secho(f"[{s.n_generated} tokens | prompt {s.prompt_tok_s:.1f} t/s | gen {s.gen_tok_s:.1f} t/s | "
                f"{result.mode} | accept {100 * s.acceptance_rate:.0f}% | mean_accepted {s.mean_accepted:.2f}]",
                dim=True, err=True)
