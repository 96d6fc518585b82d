"""``edgessd calibrate MODEL``: per-domain skip sets and KNN anchors, saved as the model's index."""
from __future__ import annotations

from pathlib import Path

import click

from .options import model_argument


@click.command("calibrate")
@model_argument
@click.option("--prompts", "prompts_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Spec-Bench JSONL to calibrate on [default: edgessd's own six-domain calibration split].")
@click.option("--domains", default=None, help="Comma-separated categories to use [default: all in the file].")
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Index directory [default: the user cache, where chat/generate/serve find it].")
@click.option("-t", "--threads", "n_threads", type=click.IntRange(min=1), envvar="EDGESSD_THREADS", default=None,
              help="CPU threads [default: physical cores; env EDGESSD_THREADS].")
@click.option("-ngl", "--n-gpu-layers", "n_gpu_layers", type=click.IntRange(min=0), default=0, show_default=True,
              help="Layers to offload to the GPU, to score sets faster; the profile read is the one for this offload.")
@click.option("-c", "--ctx-size", "n_ctx", type=click.IntRange(min=128), default=2048, show_default=True,
              help="Context size in tokens: it must hold the longest calibration prompt and -n tokens.")
@click.option("-n", "--n-tokens", type=click.IntRange(4, 512), default=24, show_default=True,
              help="Tokens generated per prompt when scoring a set.")
@click.option("--search-prompts", type=click.IntRange(1, 1000), default=4, show_default=True,
              help="Prompts per domain that score candidate sets.")
@click.option("--select-prompts", type=click.IntRange(1, 1000), default=12, show_default=True,
              help="Other prompts per domain that choose among every domain's best sets.")
@click.option("--candidates", type=click.IntRange(2, 1000), default=8, show_default=True,
              help="Candidate sets per size scored by matchness.")
@click.option("--sizes", default="0.15,0.3", show_default=True,
              help="Shares of the 2L sublayers to skip, one search each.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed for the random skip-set candidates of the search.")
def calibrate(model, prompts_file, domains, out_dir, n_threads, n_gpu_layers, n_ctx, n_tokens, search_prompts,
              select_prompts, candidates, sizes, seed) -> None:
    """Find each domain's best skip sets for MODEL, by real acceptance, and build its KNN index.

    Skip sets depend on the model, not the device, so this runs once per model; the
    planner then decides on each device whether and how far to draft with them.

    \b
    Examples:
      edgessd calibrate smollm2-135m
      edgessd calibrate qwen2.5-coder-1.5b --prompts my-traffic.jsonl --domains code,chat
    """
    from .. import registry
    from ..calibrate import CalibrationConfig, calibrate
    from ..domains import index_dir
    from ..engine import Engine
    from ..errors import InvalidArgumentError
    from ..prompts import bundled, load_prompts

    try:
        shares = tuple(float(x) for x in sizes.split(","))
    except ValueError:
        raise InvalidArgumentError(f"--sizes must be comma-separated numbers, got {sizes!r}") from None
    if not shares or not all(0 < s < 1 for s in shares):
        raise InvalidArgumentError(f"--sizes must be shares between 0 and 1, got {sizes!r}")
    cats = [c.strip() for c in domains.split(",") if c.strip()] if domains else None
    prompts = load_prompts(prompts_file or bundled("domains-calib"), categories=cats)
    cfg = CalibrationConfig(sizes=shares, n_search=search_prompts, n_select=select_prompts, n_tokens=n_tokens,
                            candidates=candidates, seed=seed)
    path = registry.resolve(model)
    sha = registry.model_sha256(path)
    with Engine(path, n_ctx=n_ctx, n_threads=n_threads, n_gpu_layers=n_gpu_layers) as eng:
        if not eng.model.skip_supported:
            raise InvalidArgumentError(f"{path.name}: architecture {eng.model.arch!r} has no layer skip; "
                                       "nothing to calibrate (edgessd decodes it plainly or with lookup)")
        bar = None

        def start(label: str, total: int) -> None:
            nonlocal bar
            bar = click.progressbar(length=total, label=f"calibrating {path.name}",
                                    file=click.get_text_stream("stderr"), show_eta=True)
            bar.__enter__()

        try:
            index = calibrate(eng, prompts, cfg, model_sha256=sha, planner_order=planner_order(eng),
                              progress=start, tick=lambda: bar.update(1) if bar else None)
        finally:
            if bar is not None:
                bar.__exit__(None, None, None)
    where = index.save(out_dir or index_dir(sha))
    click.echo(f"{'domain':<16}{'sets (skipped sublayers: accepted drafts per cycle)'}")
    for dom, sets in index.domains.items():
        click.echo(f"{dom:<16}" + ", ".join(f"{s.skip.n_skipped}: {s.mean_accepted:.2f}" for s in sets))
    click.echo(f"out-of-domain distance > {index.ood_distance:.3f}; {len(index.anchors)} anchors; "
               f"{index.meta['seconds']:.0f} s")
    click.secho(f"saved: {where}", dim=True, err=True)


def planner_order(eng):
    """Sublayers from most to least harmless by this device's profile (a search seed), or None."""
    import numpy as np

    prof = eng.device_profile()
    if prof is None:
        return None
    L = eng.model.n_layer
    m = np.concatenate([prof.match_attn, prof.match_mlp])
    for il in (0, L - 1):
        m[il] = m[L + il] = -1.0
    order = np.argsort(-m, kind="stable")
    return order[m[order] >= 0]
