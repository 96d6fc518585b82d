"""``edgessd bench MODEL --prompts FILE.jsonl``: every method on the same prompts, one report."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from .options import model_argument


def _preset(preset: str, n_threads: int | None, n_gpu_layers: int | None) -> tuple[int, int, list[str]]:
    """Threads and offload for a preset; explicit flags win. Returns (threads, ngl, notes)."""
    import platform

    from .. import device
    from ..engine import default_threads

    notes: list[str] = []
    backend = device.backend()
    if preset == "jetson":
        ngl = 99 if n_gpu_layers is None else n_gpu_layers
        if backend != "cuda":
            notes.append(f"preset jetson, but this build's backend is {backend}: -ngl {ngl} offloads nothing")
        if not Path("/etc/nv_tegra_release").exists():
            notes.append("preset jetson, but this is not a Jetson (/etc/nv_tegra_release is missing)")
    else:
        metal = sys.platform == "darwin" and platform.machine() == "arm64" and backend == "metal"
        ngl = (99 if metal else 0) if n_gpu_layers is None else n_gpu_layers
    return n_threads or default_threads(), ngl, notes


@click.command("bench")
@model_argument
@click.option("--prompts", "prompts_file", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Spec-Bench JSONL (question_id, category, turns), e.g. bench/prompts/bench.jsonl.")
@click.option("--methods", default=None, metavar="LIST",
              help="Comma-separated: plain, lookup, static, swift, knn, planner, auto, llama.cpp, "
                   "llama.cpp-ngram-simple, llama.cpp-ngram-mod, llama.cpp-ngram-map-k, llama.cpp-draft, "
                   "llama-cpp-python-lookup; or all, in-process, peers [default: in-process].")
@click.option("--peers", "with_peers", is_flag=True, help="Add every peer to --methods.")
@click.option("-n", "--n-predict", "n_predict", type=click.IntRange(min=1), default=128, show_default=True,
              help="Tokens to generate per prompt at most.")
@click.option("--repeat", type=click.IntRange(min=1), default=3, show_default=True, help="Runs of every prompt.")
@click.option("--per-category", type=click.IntRange(min=1), default=None,
              help="Only the first K prompts of each category [default: all].")
@click.option("--turns", type=click.Choice(["first", "all"]), default="first", show_default=True,
              help="first: each prompt's first turn; all: every turn, with plain's earlier replies.")
@click.option("--stream", type=click.Choice(["by-category", "mixed"]), default="by-category", show_default=True,
              help="Prompt order: grouped by category, or shuffled with --seed.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed for the shuffled prompt order and for sampled methods.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the report (settings, device, build, rows, summary) as JSON.")
@click.option("--md", "md_out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the markdown table here (it is printed either way).")
@click.option("--plot", "plot_out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write a PNG of speedup per category per method (needs matplotlib).")
@click.option("--preset", type=click.Choice(["laptop", "jetson"]), default="laptop", show_default=True,
              help="laptop: CPU threads (Metal on Apple silicon); jetson: -ngl 99 (CUDA), power from tegrastats.")
@click.option("--tools-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="llama.cpp tools for the peers [default: the cached build of `edgessd setup --peer-tools`].")
@click.option("--draft-model", default=None, help="Draft model for llama.cpp-draft [default: by registry pair].")
@click.option("-t", "--threads", "n_threads", type=click.IntRange(min=1), envvar="EDGESSD_THREADS", default=None,
              help="CPU threads [default: physical cores; env EDGESSD_THREADS].")
@click.option("-c", "--ctx-size", "n_ctx", type=click.IntRange(min=64), default=4096, show_default=True,
              help="Context size in tokens, for every method and peer.")
@click.option("-ngl", "--n-gpu-layers", "n_gpu_layers", type=click.IntRange(min=0), default=None,
              help="Layers to offload to the GPU [default: by preset].")
def bench(model, prompts_file, methods, with_peers, n_predict, repeat, per_category, turns, stream, seed, json_out,
          md_out, plot_out, preset, tools_dir, draft_model, n_threads, n_ctx, n_gpu_layers) -> None:
    """Benchmark MODEL's decoding methods and peers on a Spec-Bench prompt file.

    Greedy, one process for edgessd's methods (plain first, then each method on the same
    prompt), then each peer in its own process on the same rendered prompts. Reports
    tok/s (mean ± sd over repeats), speedup over plain, acceptance, whether the output
    equals plain's, and the planner's prediction, per method and category.

    \b
    Examples:
      edgessd bench smollm2-135m --prompts bench/prompts/bench.jsonl -n 64 --repeat 2
      edgessd bench qwen2.5-coder-1.5b --prompts bench/prompts/bench.jsonl --per-category 3 \\
          --methods all -t 2 --json out.json --md out.md --plot out.png
    """
    from ..benchmark import report, suite
    from ..errors import InvalidArgumentError
    from ..prompts import load_prompts

    names = suite.parse_methods((methods or suite.DEFAULT_METHODS) + (",peers" if with_peers else ""))
    load_prompts(prompts_file)  # a missing or malformed file fails here, before the model loads
    if plot_out is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise InvalidArgumentError("--plot needs matplotlib: pip install 'edgessd[bench]'") from None
    threads, ngl, notes = _preset(preset, n_threads, n_gpu_layers)
    for note in notes:
        click.echo(f"edgessd: warning: {note}", err=True)
    cfg = suite.BenchConfig(model=model, prompts=prompts_file, methods=names, n_predict=n_predict, repeat=repeat,
                            stream=stream, seed=seed, turns=turns, per_category=per_category, n_threads=threads,
                            n_ctx=n_ctx, n_gpu_layers=ngl, preset=preset, tools_dir=tools_dir,
                            draft_model=draft_model, command=["edgessd", *sys.argv[1:]], notes=notes)
    rep = suite.run(cfg)
    if json_out:
        report.write_json(rep, json_out)
    if md_out:
        report.write_markdown(rep, md_out)
    if plot_out:
        report.write_plot(rep, plot_out)
    click.echo(report.markdown(rep))
