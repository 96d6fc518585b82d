"""The benchmark's outputs: a llama-bench-style markdown table, JSON rows, a PNG plot.

Per method and category:
- tok/s: generated tokens per second, the mean over prompts within each repeat, then the
  mean ± sample sd over repeats (``± -`` with one repeat);
- speedup: that mean tok/s over plain's in the same categories and repeats;
- predicted: the device profile's cost model at the acceptance the runs measured (- without
  a profile, and for peers);
- mean_accepted: accepted drafts per cycle, excluding the bonus token; acceptance: accepted
  / drafted tokens;
- identical: runs whose greedy output equals plain's (tokens in process; for peers, text up
  to the shorter of the two).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..fsutil import atomic_path, write_json_atomic
from .peers import PEERS

SCHEMA = 1


def _mean(values: list) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def summarize(rows: list[dict], methods: list[str], category: str | None) -> list[dict]:
    """One summary per method over the rows of ``category`` (None: all categories)."""
    sel = [r for r in rows if category is None or r["category"] == category]
    repeats = sorted({r["repeat"] for r in sel})

    def per_repeat(method: str) -> list[float]:
        return [float(np.mean(v)) for rep in repeats
                if (v := [r["gen_tok_s"] for r in sel if r["method"] == method and r["repeat"] == rep])]

    plain = per_repeat("plain")
    out = []
    for m in methods:
        mine = [r for r in sel if r["method"] == m]
        if not mine:
            continue
        rates = per_repeat(m)
        drafted = sum(r["n_drafted"] or 0 for r in mine if r["n_drafted"] is not None)
        accepted = sum(r["n_accepted"] or 0 for r in mine if r["n_accepted"] is not None)
        ident = [r["identical"] for r in mine if r["identical"] is not None]
        out.append({
            "method": m, "category": category or "all",
            "n_prompts": len({(r["question_id"], r["turn"]) for r in mine}), "n_runs": len(mine),
            "tok_s_mean": float(np.mean(rates)), "tok_s_sd": float(np.std(rates, ddof=1)) if len(rates) > 1 else None,
            "speedup": float(np.mean(rates) / np.mean(plain)) if plain and np.mean(plain) > 0 else None,
            "predicted_speedup": _mean([r["predicted_speedup"] for r in mine]),
            "mean_accepted": _mean([r["mean_accepted"] for r in mine]),
            "acceptance": accepted / drafted if drafted else None,
            "identical": sum(ident), "identical_of": len(ident),
            "tok_per_joule": _mean([r["tok_per_joule"] for r in mine]),
        })
    return out


def build(meta: dict, methods: list[str], rows: list[dict], unavailable: dict[str, str], details: dict) -> dict:
    """The whole report as one JSON-ready dict."""
    cats = meta["settings"]["categories"]
    summary = summarize(rows, methods, None)
    for c in cats:
        summary += summarize(rows, methods, c)
    return {"schema": SCHEMA, **meta, "methods": methods, "unavailable": unavailable, "method_details": details,
            "summary": summary, "rows": rows}


def _f(v: float | None, fmt: str = "{:.2f}") -> str:
    return "-" if v is None else fmt.format(v)


def _line(s: dict, power: bool) -> list[str]:
    sd = "-" if s["tok_s_sd"] is None else f"{s['tok_s_sd']:.2f}"
    ident = f"{s['identical']}/{s['identical_of']}" if s["identical_of"] else "-"
    cells = [s["method"], s["category"], str(s["n_prompts"]), f"{s['tok_s_mean']:.2f} ± {sd}", _f(s["speedup"]),
             _f(s["predicted_speedup"]), _f(s["mean_accepted"]), _f(s["acceptance"], "{:.0%}"), ident]
    if power:
        cells.append(_f(s["tok_per_joule"]))
    return cells


def _table(summary: list[dict], power: bool) -> list[str]:
    head = ["method", "category", "prompts", "tok/s", "speedup", "predicted", "mean_accepted", "acceptance",
            "identical"] + (["tok/J"] if power else [])
    align = ["---", "---"] + ["---:"] * (len(head) - 2)
    return ["| " + " | ".join(head) + " |", "| " + " | ".join(align) + " |",
            *("| " + " | ".join(_line(s, power)) + " |" for s in summary)]


def markdown(rep: dict) -> str:
    """The report as markdown: what ran where, an all-categories table, a per-category table."""
    dev, st, b, pw = rep["device"], rep["settings"], rep["build"], rep["power"]
    model = rep["model"]
    patches = ", ".join(sorted(b.get("patches") or {})) or "unknown"
    lines = [
        f"## edgessd bench: {model['name']} ({model['arch']}, {model['n_layer']} layers)",
        "",
        f"- device: {dev['cpu']}, {dev['machine']} {dev['os']}, {dev['cores_physical']} cores / "
        f"{dev['cores_logical']} threads, {dev['memory_gb']} GB; backend {dev['backend']}; GPU {dev['gpu'] or 'none'}; "
        f"threads {dev.get('threads')}; -ngl {dev['n_gpu_layers']}; preset {dev['preset']}",
        f"- build: llama-cpp-python {b.get('llama_cpp_python')}, patched build {b.get('key') or 'unknown'} "
        f"({patches})" + (f"; peers' tools: {rep['tools'].get('dir')} (key {rep['tools'].get('key', '?')})"
                          if rep.get("tools") else ""),
        f"- prompts: {st['prompts']} ({st['n_prompts']} prompts, {st['n_turns']} turns, "
        f"{len(st['categories'])} categories, turns: {st['turns']}), -n {st['n_predict']}, {st['repeat']} repeats, "
        f"greedy, stream {st['stream']}, seed {st['seed']}, -c {st['n_ctx']}",
        f"- model: {model['path']} (sha256 {model['sha256'][:16]}…); device profile: "
        f"{'yes' if model['profile'] else 'none'}; domain index: {'yes' if model['domain_index'] else 'none'}",
        f"- power: {'measured: ' + pw['reason'] if pw['available'] else 'n/a: ' + pw['reason']}",
        f"- command: `{' '.join(rep['command'])}`" if rep.get("command") else "- command: (library call)",
        f"- time: in-process {rep['timing_s']['in_process']:.0f} s, peers {rep['timing_s']['peers']:.0f} s, "
        f"total {rep['timing_s']['total']:.0f} s ({rep['date']}); load average (1 min) at start "
        f"{rep['load_avg']['start'][0]:.2f}, at end {rep['load_avg']['end'][0]:.2f} "
        f"(the run itself adds about its thread count; more means other processes shared the cores)",
        *(f"- note: {n}" for n in rep.get("notes") or []),
        "",
        "### All categories",
        "",
    ]
    power = pw["available"]
    summ = rep["summary"]
    lines += _table([s for s in summ if s["category"] == "all"], power)
    lines += ["", "### Per category", ""]
    cats = rep["settings"]["categories"]
    lines += _table(sorted((s for s in summ if s["category"] != "all"),
                           key=lambda s: (cats.index(s["category"]), rep["methods"].index(s["method"]))), power)
    lines += _divergences(rep["rows"])
    if rep["unavailable"]:
        lines += ["", "### Not run", ""]
        lines += [f"- {m}: n/a: {why}" for m, why in rep["unavailable"].items()]
    lines += ["", "### What ran", ""]
    for m, d in rep["method_details"].items():
        if d:
            lines.append(f"- {m}: " + "; ".join(f"{k} {v}" for k, v in d.items()))
    for m, cmd in (rep.get("peer_commands") or {}).items():
        lines.append(f"- {m}: `{' '.join(cmd)}`")
    return "\n".join(lines) + "\n"


def _divergences(rows: list[dict]) -> list[str]:
    """Where a method's greedy output parted from plain's: method, prompt, first differing token
    (in process) or character (peers), and in how many repeats."""
    seen: dict[tuple, list[int]] = {}
    for r in rows:
        if r["identical"] is False:
            seen.setdefault((r["method"], r["question_id"], r["turn"], r["first_diff"]), []).append(r["repeat"])
    if not seen:
        return []
    out = ["", "### Not identical to plain", ""]
    for (method, qid, turn, at), reps in seen.items():
        unit = "character" if method in PEERS else "token"
        where = f"from {unit} {at}" if at is not None else "(text not separable)"
        out.append(f"- {method}, {qid} turn {turn}: {where}, in {len(reps)} repeat(s)")
    return out


def write_json(rep: dict, path: Path) -> None:
    write_json_atomic(Path(path), json.loads(json.dumps(rep, default=float)))


def write_markdown(rep: dict, path: Path) -> None:
    with atomic_path(Path(path)) as tmp:
        tmp.write_text(markdown(rep), encoding="utf-8")


def write_plot(rep: dict, path: Path) -> None:
    """Grouped bars: measured speedup over plain per category (and all), one bar per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cats = [*rep["settings"]["categories"], "all"]
    methods = [m for m in rep["methods"] if m != "plain" and any(s["method"] == m for s in rep["summary"])]
    by = {(s["method"], s["category"]): s["speedup"] for s in rep["summary"]}
    fig, ax = plt.subplots(figsize=(min(18.0, max(9.0, 0.9 * len(cats) + 0.1 * len(cats) * len(methods))), 5.0))
    width = 0.8 / max(len(methods), 1)
    colors = plt.get_cmap("tab20").colors
    x = np.arange(len(cats))
    for i, m in enumerate(methods):
        vals = [by.get((m, c)) or 0.0 for c in cats]
        ax.bar(x - 0.4 + width * (i + 0.5), vals, width, label=m, color=colors[i % len(colors)])
    ax.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
    ax.set_xticks(x, cats, rotation=20)
    ax.set_ylabel("speedup over plain (tok/s ratio)")
    dev = rep["device"]
    ax.set_title(f"{rep['model']['name']}: {dev['cpu']}, {dev.get('threads')} threads, {dev['backend']}, "
                 f"-n {rep['settings']['n_predict']}", fontsize=9)
    ax.legend(fontsize=8, ncol=min(len(methods), 6) or 1, loc="upper center", bbox_to_anchor=(0.5, -0.14),
              frameon=False)
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
