"""Options shared by commands, named as llama.cpp names them where they mean the same."""
from __future__ import annotations

import functools

import click

from ..engine import MODES


def model_argument(f):
    """MODEL as a positional argument or as llama.cpp's -m/--model (not both, unless equal)."""
    @functools.wraps(f)
    def merged(*args, model_opt=None, **kwargs):
        model = kwargs.get("model")
        if model_opt is not None and model is not None and model_opt != model:
            from ..errors import InvalidArgumentError

            raise InvalidArgumentError(f"two models given: {model!r} and -m {model_opt!r}")
        kwargs["model"] = model if model is not None else model_opt
        return f(*args, **kwargs)

    merged = click.option("-m", "--model", "model_opt", default=None, metavar="MODEL",
                          help="The model: a GGUF path or a registry name (the same as the MODEL argument).")(merged)
    return click.argument("model", required=False, envvar="EDGESSD_MODEL")(merged)


def n_predict_value(n_predict: int, n_ctx: int) -> int:
    """llama.cpp's -n -1: until the end of generation or a full context."""
    return n_ctx if n_predict < 0 else n_predict


def read_text(path: str | None) -> str | None:
    """The UTF-8 text of ``path``, or None."""
    if path is None:
        return None
    from pathlib import Path

    from ..errors import InvalidArgumentError

    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidArgumentError(f"cannot read {path}: {e}") from None


def template_options(command):
    """llama.cpp's --chat-template NAME|JINJA and --chat-template-file FILE, passed on as one
    ``chat_template`` (text or name; None: the GGUF's own)."""
    @functools.wraps(command)
    def chosen(*args, chat_template=None, chat_template_file=None, **kwargs):
        if chat_template is not None and chat_template_file is not None:
            from ..errors import InvalidArgumentError

            raise InvalidArgumentError("give --chat-template or --chat-template-file, not both")
        if chat_template_file is not None:
            chat_template = read_text(chat_template_file)
            if not chat_template.strip():
                from ..errors import InvalidArgumentError

                raise InvalidArgumentError(f"{chat_template_file} is empty: it holds no chat template")
        return command(*args, chat_template=chat_template, **kwargs)

    f = click.option("--chat-template-file", "chat_template_file", type=click.Path(exists=True, dir_okay=False),
                     default=None, metavar="FILE", help="Render chats with the Jinja chat template in FILE.")(chosen)
    return click.option("--chat-template", "chat_template", default=None, metavar="NAME|JINJA",
                        callback=nonempty("--chat-template is empty"),
                        help="Render chats with this template instead of the model's: a llama.cpp built-in "
                             "name (chatml, llama3, gemma, phi3...) or Jinja source.")(f)


def nonempty(message: str):
    """A click callback that refuses an empty or blank value with ``message``."""
    def check(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise click.BadParameter(message)
        return value

    return check


def engine_options(f):
    """-t/--threads, -c/--ctx-size, -ngl/--n-gpu-layers."""
    f = click.option("-ngl", "--n-gpu-layers", "n_gpu_layers", type=click.IntRange(min=0), default=0,
                     show_default=True, help="Layers to offload to the GPU (CUDA/Metal builds).")(f)
    f = click.option("-c", "--ctx-size", "n_ctx", type=click.IntRange(min=16), default=4096, show_default=True,
                     help="Context size in tokens.")(f)
    f = click.option("-t", "--threads", "n_threads", type=click.IntRange(min=1), envvar="EDGESSD_THREADS",
                     default=None, help="CPU threads [default: physical cores; env EDGESSD_THREADS].")(f)
    return f


def learn_option(command):
    """--learn auto|on|off and --no-learn (= --learn off): whether out-of-domain prompts' features
    are saved as learned anchors (see the README's "What edgessd stores"). The command receives
    the result as ``learn``, Engine's argument."""
    @functools.wraps(command)
    def resolved(*args, learn="auto", no_learn=False, **kwargs):
        return command(*args, learn="off" if no_learn else learn, **kwargs)

    f = click.option("--no-learn", "no_learn", is_flag=True, envvar="EDGESSD_NO_LEARN",
                     help="Same as --learn off [env EDGESSD_NO_LEARN].")(resolved)
    f = click.option("--learn", "learn", type=click.Choice(("auto", "on", "off")), default="auto", show_default=True,
                     help="Save the feature vector of an out-of-domain prompt (derived from its cached attention "
                          "values, never its text) as a learned anchor in the cache: auto = where layer skip "
                          "can pay.")(f)
    return f


# the sampler's options that reach Engine.stream unchanged, gathered into one ``sampling`` dict
SAMPLER_KEYS = ("top_k", "top_p", "min_p", "repeat_penalty", "repeat_last_n")


def sampler_options(command):
    """--top-k, --top-p, --min-p, --repeat-penalty, --repeat-last-n, --seed, --mode, --skip,
    --draft-max: shared by generate, chat and serve. The command receives the first five as one
    ``sampling`` dict of :meth:`Engine.stream`'s keyword arguments."""
    @functools.wraps(command)
    def gathered(*args, **kwargs):
        kwargs["sampling"] = {k: kwargs.pop(k) for k in SAMPLER_KEYS}
        return command(*args, **kwargs)

    f = gathered
    f = click.option("--draft-max", type=click.IntRange(min=1), default=None,
                     help="Most tokens drafted per cycle [default: 4 layer skip, 4 lookup, 16 auto].")(f)
    f = click.option("--skip", "skip", default=None, metavar="SPEC",
                     # an empty --skip would draft with the full model and call it layer skip
                     callback=nonempty("empty skip spec; give sublayers like 'attn:3,5;mlp:4-9' or leave --skip out"),
                     help="Sublayers to skip when drafting, e.g. 'attn:3,5,7;mlp:4-9'.")(f)
    f = click.option("--mode", type=click.Choice(MODES), default="auto", show_default=True,
                     help="How to draft: auto decides from the device profile.")(f)
    f = click.option("--seed", type=int, default=None, help="Seed for sampling (reproducible runs; -1: random).")(f)
    f = click.option("--repeat-last-n", "repeat_last_n", type=click.IntRange(min=-1), default=64, show_default=True,
                     help="How many of the latest tokens, prompt included, --repeat-penalty looks at "
                          "(-1: all, 0: off).")(f)
    f = click.option("--repeat-penalty", "repeat_penalty", type=click.FloatRange(0, min_open=True), default=1.0,
                     show_default=True,
                     help="Penalise tokens seen in the last --repeat-last-n, as llama.cpp (1.0: off). Applied "
                          "to the full model's logits, so speculation keeps plain decoding's output.")(f)
    f = click.option("--min-p", type=click.FloatRange(0, 1), default=0.0, show_default=True,
                     help="Drop tokens less likely than min-p times the most likely one (llama.cpp uses 0.05; "
                          "0: off, as before).")(f)
    f = click.option("--top-p", type=click.FloatRange(0, 1, min_open=True), default=0.95, show_default=True,
                     help="Sample from the smallest set of tokens whose probability reaches p.")(f)
    f = click.option("--top-k", type=click.IntRange(min=0), default=40, show_default=True,
                     help="Sample from the k most likely tokens (0: all).")(f)
    return f


def sampling_options(f):
    """-n/--n-predict and --temp with generate's and serve's defaults, then sampler_options."""
    f = sampler_options(f)
    f = click.option("--temp", "temperature", type=click.FloatRange(min=0), default=0.0, show_default=True,
                     help="Sampling temperature; 0 is greedy.")(f)
    f = click.option("-n", "--n-predict", "n_predict", type=click.IntRange(min=-1), default=128, show_default=True,
                     help="Tokens to generate at most; -1: until the end of generation or a full context.")(f)
    return f
