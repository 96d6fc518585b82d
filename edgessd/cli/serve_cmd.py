"""``edgessd serve [MODEL]``: a local OpenAI-compatible HTTP server over one Engine."""
from __future__ import annotations

import os
from pathlib import Path

import click

from .options import (
    engine_options,
    learn_option,
    model_argument,
    n_predict_value,
    nonempty,
    sampling_options,
    template_options,
)


def model_id(model: str | None, path: Path) -> str:
    """The name the API reports: the registry name, or the file's name for a path."""
    from ..registry import default_model_name

    name = model or default_model_name()
    return path.name if name.endswith(".gguf") or os.sep in name or Path(name).exists() else name


@click.command("serve")
@model_argument
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; 0.0.0.0 opens the server to the network.")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True,
              help="Port to listen on; 0 picks a free one.")
@click.option("--queue-size", type=click.IntRange(min=0), default=16, show_default=True,
              help="Requests that may wait while one runs; more are answered 503.")
@click.option("--max-body", type=click.IntRange(min=1024), default=1 << 20, show_default=True,
              help="Largest request body in bytes; larger is answered 413.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=0), default=300.0, show_default=True,
              help="Seconds one generation may run before it ends with finish_reason 'length'; 0: no limit.")
@click.option("--client-timeout", "client_timeout_s", type=click.FloatRange(min=0, min_open=True), default=30.0,
              show_default=True, help="Seconds a client may take to send a request's headers (else the "
                                      "connection is closed) and its body (else a 408).")
@click.option("--api-key", envvar="EDGESSD_API_KEY", show_envvar=True, metavar="KEY[,KEY...]",
              help="Require one of these keys on every /v1/* request, as 'Authorization: Bearer KEY' or "
                   "'X-Api-Key: KEY' (else a 401); /health and CORS preflights stay open.")
@click.option("--api-key-file", type=click.Path(exists=True, dir_okay=False), default=None, metavar="FILE",
              help="Read API keys from FILE, one per line (with --api-key, either kind is accepted).")
@click.option("--cors-origin", "cors_origins", multiple=True, metavar="ORIGIN",
              help="Let browser pages from ORIGIN (e.g. http://localhost:3000) call the API; repeatable. "
                   "Without it no CORS headers are sent.")
@click.option("-a", "--alias", metavar="NAME",
              callback=nonempty("the alias is empty; give a model name or leave --alias out"),
              help="Model name to report in /v1/models and in responses' \"model\" field "
                   "(default: the registry name or the file's name).")
@sampling_options
@engine_options
@template_options
@learn_option
def serve(model, host, port, queue_size, max_body, timeout_s, client_timeout_s, api_key, api_key_file, cors_origins,
          alias, n_predict, temperature, sampling, seed, mode, skip, draft_max, n_threads, n_ctx, n_gpu_layers,
          chat_template, learn) -> None:
    """Serve MODEL (a GGUF path or registry name) over an OpenAI-compatible HTTP API.

    Routes: POST /v1/chat/completions, POST /v1/completions (both stream with
    "stream": true), GET /v1/models, GET /health. One generation runs at a time; the
    sampling flags are the defaults for requests that leave those fields out, and a
    request may also pick "mode" and llama-server's "top_k", "min_p", "repeat_penalty"
    and "repeat_last_n".

    \b
    Examples:
      edgessd serve                                  # smollm2-135m on http://127.0.0.1:8080/v1
      edgessd serve qwen2.5-coder-0.5b --port 9000 -t 2 --mode lookup
      edgessd serve --host 0.0.0.0 --api-key "$KEY" --alias gpt-local --cors-origin http://localhost:3000
      curl http://127.0.0.1:8080/v1/chat/completions -d '{"messages":[{"role":"user","content":"Hi"}]}'
    """
    from ..engine import Engine
    from ..server.access import is_loopback, read_keys
    from ..server.app import ServerConfig, create_app
    from ..server.run import listen, run
    from ..server.schema import Defaults
    from ..skipset import parse_skip_spec

    keys = read_keys(api_key, api_key_file)  # a bad key file fails before the model loads
    eng = Engine(model, n_ctx=n_ctx, n_threads=n_threads, n_gpu_layers=n_gpu_layers,
                 learn=learn, chat_template=chat_template)  # a bad model fails here
    if skip is not None:
        parse_skip_spec(skip).check(eng.model.n_layer)  # and so does a bad skip spec, before listening
    config = ServerConfig(model_id=alias or model_id(model, eng.model_path),
                          created=int(eng.model_path.stat().st_mtime),
                          defaults=Defaults(n_predict=n_predict_value(n_predict, eng.ctx.n_ctx),
                                            temperature=temperature, **sampling, seed=seed, mode=mode),
                          queue_size=queue_size, max_body=max_body, timeout_s=timeout_s or None,
                          client_timeout_s=client_timeout_s,
                          engine_kwargs=dict(skip=skip, draft_max=draft_max),
                          api_keys=keys, cors_origins=tuple(cors_origins))
    sock = listen(host, port)
    if not config.api_keys and not is_loopback(sock.getsockname()[0]):
        click.echo(f"edgessd: warning: listening on {host} without --api-key: anyone who can reach this "
                   f"machine can use the server", err=True)
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"edgessd: serving {config.model_id} on http://{shown}:{sock.getsockname()[1]}/v1 "
               f"(queue {queue_size}, threads {eng.ctx.n_threads}, ctx {eng.ctx.n_ctx}); Ctrl-C stops")
    # the engine is left to the process exit: a cut-short generation may hold it
    run(create_app(eng, config), sock, client_timeout_s=client_timeout_s)
