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

It also replays an oracle that knows which drafts will be accepted: each cycle it drafts
the longest accepted prefix of the lookup proposal (cut where V(k) makes it pay best), and
decodes plainly when nothing would be accepted. No lookup policy on this device can beat it.

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
from edgessd.drafters.base import Draft, DraftRequest  # noqa: E402
from edgessd.drafters.lookup import LookupDrafter, find_continuation  # noqa: E402
from edgessd.engine import Engine  # noqa: E402
from edgessd.planner import CostModel  # noqa: E402
from edgessd.profiler import load_profile, profile_path  # noqa: E402
from edgessd.prompts import load_prompts  # noqa: E402
from edgessd.sampling import SamplerParams  # noqa: E402

GREEDY = SamplerParams(temperature=0.0)


class OracleLookup:
    """Knows the output: drafts the accepted prefix of the lookup proposal, or nothing."""

    name = "oracle"

    def __init__(self, cost_at: Callable[[int], CostModel], output: list[int], n_prompt: int) -> None:
        self.cost_at, self.output, self.n_prompt = cost_at, output, n_prompt

    def propose(self, req: DraftRequest) -> Draft | None:
        cost = self.cost_at(req.pos)
        cont = find_continuation(req.history, 2, 12, min(req.max_tokens, len(cost.verify) - 1))
        done = len(req.history) - self.n_prompt
        future = np.asarray(self.output[done:done + len(cont)])
        k = int(np.cumprod(cont[:len(future)] == future).sum())
        if k == 0:
            return None
        ds = np.arange(1, k + 1)
        rate = (ds + 1) / cost.verify[ds]
        if rate.max() * cost.t1 <= 1.0:
            return None
        return Draft(tokens=[int(t) for t in cont[:int(ds[np.argmax(rate)])]])

    def observe(self, n_drafted: int, n_accepted: int) -> None:
        pass


def replay(drafter, prompt: list[int], output: list[int], cost_at: Callable[[int], CostModel],
           n_predict: int) -> tuple[float, float]:
    """(predicted speedup over plain, mean accepted per cycle) of ``drafter`` on this output."""
    n = min(n_predict, len(output))
    history, done, t_spec, t_plain, cycles, accepted = list(prompt), 0, 0.0, 0.0, 0, 0
    while done < n:
        pos = len(history) - 1
        room = n - done - 1
        draft = drafter.propose(DraftRequest(np.asarray(history, dtype=np.int32), pos, room, GREEDY,
                                             np.random.default_rng(0))) if room > 0 else None
        tokens = draft.tokens if draft else []
        truth = np.asarray(output[done:done + len(tokens)])
        k = int(np.cumprod(np.asarray(tokens[:len(truth)]) == truth).sum()) if tokens else 0
        t_spec += cost_at(pos).V(len(tokens) + 1)
        t_plain += sum(cost_at(pos + j).t1 for j in range(k + 1))
        history += output[done:done + k + 1]
        done += k + 1
        cycles += 1
        accepted += k
        drafter.observe(len(tokens), k)
    return t_plain / t_spec, accepted / cycles


def record(model: str, prompts: list, n_predict: int, threads: int, path: Path | None) -> list[dict]:
    """Plain greedy outputs of the prompts' first turns (reused from ``path`` when it matches)."""
    key = {"model_sha256": registry.model_sha256(registry.resolve(model)), "n_predict": n_predict,
           "ids": [p.question_id for p in prompts]}
    if path is not None and path.exists():
        saved = json.loads(path.read_text())
        if saved.get("key") == key:
            return saved["rows"]
    rows = []
    with Engine(model, n_ctx=2048, n_threads=threads) as eng:
        for p in prompts:
            msgs = [{"role": "user", "content": p.turns[0]}]
            r = eng.generate(msgs, n_predict=n_predict, mode="plain")
            rows.append({"id": p.question_id, "category": p.category, "prompt": eng.tokenize(msgs),
                         "output": r.tokens})
            print(f"recorded {p.question_id}: {len(r.tokens)} tokens", file=sys.stderr)
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
    ns = ap.parse_args()

    cats = ns.categories.split(",")
    prompts = [p for p in load_prompts(ns.prompts) if p.category in cats]
    sha = registry.model_sha256(registry.resolve(ns.model))
    prof = load_profile(profile_path(sha, ns.threads), model_sha256=sha)
    rows = record(ns.model, prompts, ns.n_predict, ns.threads, ns.record)

    policies = {
        "auto": lambda r: AutoDrafter(prof.cost_at),  # as the engine makes it: d up to 16
        "auto, d <= 12": lambda r: AutoDrafter(prof.cost_at, d_max=12),
        "lookup d=4": lambda r: LookupDrafter(max_tokens=4),
        "oracle": lambda r: OracleLookup(prof.cost_at, r["output"], len(r["prompt"])),
    }
    lines = [f"# bench/replay.py: {ns.model}, {ns.threads} threads, -n {ns.n_predict}, {ns.prompts.name} "
             f"({', '.join(cats)})", "",
             "Command: `python bench/replay.py " + " ".join(sys.argv[1:]) + "`", "",
             "Predicted speedup over plain (mean accepted per cycle), replayed over plain's greedy output "
             "with this device's profiled costs.", "",
             "| prompt | " + " | ".join(policies) + " |", "|---" * (len(policies) + 1) + "|"]
    table: dict[str, list[float]] = {k: [] for k in policies}
    for r in rows:
        cells = []
        for name, make in policies.items():
            s, acc = replay(make(r), r["prompt"], r["output"], prof.cost_at, ns.n_predict)
            table[name].append(s)
            cells.append(f"{s:.3f} ({acc:.2f})")
        lines.append(f"| {r['id']} | " + " | ".join(cells) + " |")
    for cat in cats + ["all"]:
        idx = [i for i, r in enumerate(rows) if cat in ("all", r["category"])]
        if idx:
            means = " | ".join(f"**{np.mean([table[k][i] for i in idx]):.3f}**" for k in policies)
            lines.append(f"| **{cat}** ({len(idx)}) | {means} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if ns.md:
        ns.md.write_text(text)


if __name__ == "__main__":
    main()
