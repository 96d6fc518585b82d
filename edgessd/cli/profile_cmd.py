"""``edgessd profile MODEL``: measure sublayer costs, V(k) and acceptance estimates on this device."""
from __future__ import annotations

import click

from .options import model_argument


def gguf_block_count(path) -> int:
    """The layer count from a GGUF's metadata (its header only, weights untouched).

    Only sizes the progress bar: an unreadable file gives 32, and loading the model then
    reports the real error cleanly.
    """
    from .info_cmd import read_gguf_header  # walks the header; gguf.GGUFReader takes ~10 s on a 49k vocabulary

    try:
        meta, _ = read_gguf_header(path)
        return int(meta[f"{meta['general.architecture']}.block_count"])
    except Exception:  # noqa: BLE001 - cosmetic; the model load reports the real problem
        return 32


@click.command("profile")
@model_argument
@click.option("-t", "--threads", "n_threads", type=click.IntRange(min=1), envvar="EDGESSD_THREADS", default=None,
              help="CPU threads [default: physical cores; env EDGESSD_THREADS].")
@click.option("-c", "--ctx-size", "n_ctx", type=click.IntRange(min=128), default=2048, show_default=True,
              help="Largest context to measure at (measured at 64, n/4 and n/2).")
@click.option("--k-max", type=click.IntRange(2, 32), default=16, show_default=True,
              help="Measure V(k) for k = 1..K.")
@click.option("--reps", type=click.IntRange(1, 50), default=5, show_default=True, help="Repetitions per timing.")
@click.option("-ngl", "--n-gpu-layers", "n_gpu_layers", type=click.IntRange(min=0), default=0, show_default=True,
              help="Layers to offload to the GPU, as generate/chat/serve will load the model.")
@click.option("--force", is_flag=True, help="Measure again even if a valid profile is cached.")
@click.option("--json", "as_json", is_flag=True, help="Print the profile as JSON instead of a table.")
def profile(model, n_threads, n_ctx, k_max, reps, n_gpu_layers, force, as_json) -> None:
    """Measure what decoding MODEL costs on this device, for the planner.

    The profile is cached (keyed by the model's sha256, the device, the thread count and,
    with -ngl, the offload and the GPU) and reused until one of them changes. On a GPU
    build, profile with the -ngl that generate/chat/serve use: auto reads only the profile
    measured with the engine's own offload.

    \b
    Examples:
      edgessd profile qwen2.5-coder-1.5b -t 2
      edgessd profile model.gguf --force --json
      edgessd profile smollm2-135m -ngl 99     # a CUDA or Metal build
    """
    import json

    from .. import registry
    from ..engine import default_threads
    from ..profiler import format_table, n_steps, profile_model

    path = registry.resolve(model)
    threads = n_threads or default_threads()
    bar = None

    def progress(_step: str) -> None:
        nonlocal bar
        if bar is None:  # shown from the first measurement on: a model that fails to load is one error line
            n_layer = gguf_block_count(path)
            bar = click.progressbar(length=n_steps(3, k_max, n_layer), label=f"profiling {path.name}",
                                    file=click.get_text_stream("stderr"), show_eta=True)
            bar.__enter__()
        bar.update(1)

    try:
        prof, where, measured = profile_model(path, n_threads=threads, n_ctx=n_ctx, k_max=k_max, reps=reps,
                                              force=force, n_gpu_layers=n_gpu_layers, progress=progress)
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
    if as_json:
        click.echo(json.dumps(prof.to_json(), indent=2))
        return
    click.echo(format_table(prof))
    click.secho(f"{'saved' if measured else 'cached'}: {where}", dim=True, err=True)
