"""Replay drafting policies over recorded greedy outputs, with the device's measured costs.

    python bench/replay.py MODEL [--prompts FILE.jsonl] [--categories edit,repeat] [-n 128]
                           [-t 2] [--record FILE.json] [--md OUT.md]

Why: a timing run on the 2-core CPU takes minutes and varies ±5%, while two lookup policies
differ by 1-3%. A greedy verification accepts exactly the matching prefix of a draft, so
once plain decoding's output is known, every cycle of any lookup policy can be replayed
offline: its accepted count is exact, and its cost is the device profile's V(d + 1) at that
context length (plain: t(1)). The result is each policy's *predicted* speedup, from the same
cost model the planner uses (its predictions are within ±10% of measured ones, #4). Measured
speedups come from `edgessd bench`.

It also computes an oracle: the fastest that any policy drafting from auto's lookup
proposals could be on this device, knowing which drafts will be accepted (a shortest path
over the output's positions; see oracle()). The gap between auto and the oracle is what
better decisions could still gain; the gap between the oracle and 1 is all lookup can.

Recording runs the real engine once per prompt (plain, greedy, the first turn, rendered
with the model's chat template as `edgessd bench` does); --record keeps the outputs so
later replays take seconds.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from edgessd import registry  # noqa: E402
from edgessd.drafters.auto import AutoDrafter  # noqa: E402
from edgessd.drafters.base import DraftRequest  # noqa: E402
from edgessd.drafters.lookup import LookupDrafter, find_continuation  # noqa: E402
from edgessd.engine import Engine  # noqa: E402
from edgessd.planner import CostModel  # noqa: E402
from edgessd.profiler import load_profile, profile_path  # noqa: E402
from edgessd.prompts import load_prompts  # noqa: E402
from edgessd.sampling import SamplerParams, greedy_accept  # noqa: E402

GREEDY = SamplerParams(temperature=0.0)


def oracle(prompt: list[int], output: list[int], cost_at: Callable[[int], CostModel], n_predict: int,
           n_min: int = 2, n_max: int = 12) -> tuple[float, float]:
    """The best any policy drafting from these lookup proposals can do: (speedup, mean accepted).

    The output is fixed, so after g emitted tokens the history, and with it the proposal,
    is fixed too; a cycle there may draft any d up to the proposal's accepted prefix (more
    would be rejected at a cost) and moves to g + d + 1 at cost V(d + 1). A shortest path
    over g = 0..n is then the optimum over all drafting decisions.
    """
    n = min(n_predict, len(output))
    history = list(prompt) + list(output)
    cost = np.full(n + 1, np.inf)
    cost[0] = 0.0
    prev = np.zeros(n + 1, dtype=int)    # the g where the best cycle ending here began ...
    drafts = np.zeros(n + 1, dtype=int)  # ... and how many drafts it had accepted
    for g in range(n):
        c = cost_at(len(prompt) + g - 1)
        room = min(n_predict - g - 1, len(c.verify) - 1)
        cont = find_continuation(np.asarray(history[:len(prompt) + g]), n_min, n_max, room) if room > 0 else []
        k = greedy_accept(cont, output[g:])
        for d in range(k + 1):
            to = min(g + d + 1, n)  # a draft may run through the end-of-generation token
            if cost[g] + c.V(d + 1) < cost[to]:
                cost[to], prev[to], drafts[to] = cost[g] + c.V(d + 1), g, d
    g, cycles, accepted = n, 0, 0
    while g > 0:
        cycles, accepted, g = cycles + 1, accepted + drafts[g], prev[g]
    return plain_ms(prompt, n, cost_at) / float(cost[n]), accepted / cycles


def plain_ms(prompt: list[int], n: int, cost_at: Callable[[int], CostModel]) -> float:
    """Plain decoding's time for n tokens after ``prompt``: t(1) at each context length."""
    return sum(cost_at(len(prompt) + g - 1).t1 for g in range(n))


def replay(drafter, prompt: list[int], output: list[int], cost_at: Callable[[int], CostModel],
           n_predict: int) -> tuple[float, float]:
    """(predicted speedup over plain, mean accepted per cycle) of ``drafter`` on this output.

    The cycles are the decode loop's: drafts fit in what is left of n_predict, a greedy
    verification accepts the matching prefix, and one more token is the model's own.
    """
    n = min(n_predict, len(output))
    history, done, t_spec, cycles, accepted = list(prompt), 0, 0.0, 0, 0
    while done < n:
        pos = len(history) - 1
        room = n_predict - done - 1
        draft = drafter.propose(DraftRequest(np.asarray(history, dtype=np.int32), pos, room, GREEDY,
                                             np.random.default_rng(0))) if room > 0 else None
        tokens = draft.tokens if draft else []
        k = greedy_accept(tokens, output[done:])
        t_spec += cost_at(pos).V(len(tokens) + 1)
        history += output[done:done + k + 1]
        done += k + 1
        cycles += 1
        accepted += k
        drafter.observe(len(tokens), k)
    return plain_ms(prompt, n, cost_at) / t_spec, accepted / cycles


def greedy_output(eng: Engine, messages: list[dict], n_predict: int) -> tuple[list[int], list[int]]:
    """(prompt tokens, plain greedy output) for chat ``messages``.

    When the model stopped by itself, the output ends with the end-of-generation token, as
    the loop saw it: a lookup draft can propose it (the chat template puts the end-of-turn
    token in the prompt) and its cycle is a cycle. The engine does not return that token;
    it is taken as the template's end-of-turn token in the prompt (-1, which no draft
    matches, where there is none).
    """
    prompt = eng.tokenize(messages)
    r = eng.generate(messages, n_predict=n_predict, mode="plain")
    output = list(r.tokens)
    if r.stop_reason == "eos":
        output.append(next((t for t in reversed(prompt) if eng.model.is_eog(t)), -1))
    return prompt, output


def record(model: str, model_sha256: str, prompts: list, n_predict: int, threads: int,
           path: Path | None) -> list[dict]:
    """Plain greedy outputs of the prompts' first turns (reused from ``path`` when it matches)."""
    key = {"model_sha256": model_sha256, "n_predict": n_predict,
           "ids": [p.question_id for p in prompts]}
    if path is not None and path.exists():
        saved = json.loads(path.read_text())
        if saved.get("key") == key:
            return saved["rows"]
    rows = []
    with Engine(model, n_ctx=2048, n_threads=threads) as eng:
        for p in prompts:
            msgs = [{"role": "user", "content": p.turns[0]}]
            prompt, output = greedy_output(eng, msgs, n_predict)
            rows.append({"id": p.question_id, "category": p.category, "prompt": prompt, "output": output})
            print(f"recorded {p.question_id}: {len(output)} tokens", file=sys.stderr)
    if path is not None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"key": key, "rows": rows}))
        tmp.replace(path)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", nargs="?", default="qwen2.5-coder-1.5b")
    ap.add_argument("--prompts", type=Path, default=Path(__file__).parent / "prompts" / "bench.jsonl")
    ap.add_argument("--categories", default="edit,repeat")
    ap.add_argument("-n", "--n-predict", type=int, default=128)
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("--record", type=Path, help="keep the recorded outputs here and reuse them")
    ap.add_argument("--md", type=Path)
    ap.add_argument("--profile", type=Path,
                    help="take the costs from this profile (e.g. a same-shape stand-in's, measured on a GPU) "
                         "and the outputs from --record alone: the model need not be here")
    ap.add_argument("--json", type=Path, help="also write the per-policy means as JSON")
    ns = ap.parse_args()

    if ns.profile:
        if ns.record is None or not ns.record.exists():
            sys.exit("replay.py: --profile replays recorded outputs: give an existing --record file")
        prof = load_profile(ns.profile)
        rows = json.loads(ns.record.read_text())["rows"]
        cats = sorted({r["category"] for r in rows}) if ns.categories == "all" else ns.categories.split(",")
        rows = [r for r in rows if r["category"] in cats]
    else:
        prompts = load_prompts(ns.prompts)
        cats = sorted({p.category for p in prompts}) if ns.categories == "all" else ns.categories.split(",")
        prompts = [p for p in prompts if p.category in cats]
        sha = registry.model_sha256(registry.resolve(ns.model))
        prof = load_profile(profile_path(sha, ns.threads), model_sha256=sha)
        rows = record(ns.model, sha, prompts, ns.n_predict, ns.threads, ns.record)

    policies = {
        "auto": lambda r: AutoDrafter(prof.cost_at),  # as the engine makes it: d up to 16
        "auto, d <= 12": lambda r: AutoDrafter(prof.cost_at, d_max=12),
        "lookup d=4": lambda r: LookupDrafter(max_tokens=4),
    }
    where = f"costs of {ns.profile.name} ({prof.device.get('gpu') or prof.device.get('cpu')})" if ns.profile \
        else f"{ns.threads} threads"
    lines = [f"# bench/replay.py: {ns.model}, {where}, -n {ns.n_predict}, {ns.prompts.name} "
             f"({', '.join(cats)})", "",
             "Command: `python bench/replay.py " + " ".join(sys.argv[1:]) + "`", "",
             "Predicted speedup over plain (mean accepted per cycle), replayed over plain's greedy output "
             "with this device's profiled costs.", "",
             "| prompt | " + " | ".join(policies) + " | oracle |", "|---" * (len(policies) + 2) + "|"]
    table: dict[str, list[float]] = {k: [] for k in policies}
    table["oracle"] = []
    for r in rows:
        cells = []
        for name, make in policies.items():
            s, acc = replay(make(r), r["prompt"], r["output"], prof.cost_at, ns.n_predict)
            table[name].append(s)
            cells.append(f"{s:.3f} ({acc:.2f})")
        s, acc = oracle(r["prompt"], r["output"], prof.cost_at, ns.n_predict)
        table["oracle"].append(s)
        cells.append(f"{s:.3f} ({acc:.2f})")
        lines.append(f"| {r['id']} | " + " | ".join(cells) + " |")
    for cat in cats + ["all"]:
        idx = [i for i, r in enumerate(rows) if cat in ("all", r["category"])]
        if idx:
            means = " | ".join(f"**{np.mean([v[i] for i in idx]):.3f}**" for v in table.values())
            lines.append(f"| **{cat}** ({len(idx)}) | {means} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if ns.md:
        ns.md.write_text(text)
    if ns.json:
        means = {k: float(np.mean(v)) for k, v in table.items()}
        ns.json.write_text(json.dumps({"model": ns.model, "profile": str(ns.profile or ""), "device": prof.device,
                                       "categories": cats, "n_prompts": len(rows), "predicted_speedup": means},
                                      indent=2) + "\n")


if __name__ == "__main__":
    main()
