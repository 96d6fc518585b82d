"""One benchmark run: every method and peer on the same prompts, greedy, plain first.

Order: for each repeat, for each prompt (``by-category``: grouped as in the file; ``mixed``:
shuffled once with ``--seed``), for each turn: every in-process method in turn, plain
first, each after ``Engine.reset()``; then every peer in its own process on the same
prompt, rendered with the model's chat template exactly as the engine renders it. So a
method and its plain baseline run seconds apart, and load from other processes hits both
alike. Later turns (``--turns all``) carry plain's earlier replies, so every method sees
the same conversation. Speedup is always against plain's tok/s on the same prompt, turn
and repeat. Each row records the 1-minute load average when its prompt started.
"""
from __future__ import annotations

import hashlib
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..engine import common_prefix
from ..errors import InvalidArgumentError
from ..prompts import Prompt, by_category, load_prompts
from . import methods as M
from . import peers as P
from .power import PowerMeter, PowerStatus, detect

ALL_METHODS = M.IN_PROCESS + P.PEERS
DEFAULT_METHODS = ",".join(M.IN_PROCESS)
STREAMS = ("by-category", "mixed")
PRESETS = ("laptop", "jetson")
SETTLE_TOKENS = 8  # untimed plain tokens before each prompt's timed runs


@dataclass
class BenchConfig:
    model: str | None
    prompts: Path
    methods: list[str]                  # plain first, then the rest in report order
    n_predict: int = 128
    repeat: int = 3
    stream: str = "by-category"
    seed: int = 0
    turns: str = "first"                # first | all
    per_category: int | None = None     # the first K prompts of each category
    n_threads: int = 2
    n_ctx: int = 2048
    n_gpu_layers: int = 0
    preset: str = "laptop"
    tools_dir: Path | None = None
    draft_model: str | None = None
    command: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # preset warnings, recorded in the report


def parse_methods(text: str) -> list[str]:
    """``"plain,lookup"``, ``all`` (every method and peer) or ``peers`` as an item; plain always first."""
    names: list[str] = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        expand = {"all": ALL_METHODS, "peers": P.PEERS, "in-process": M.IN_PROCESS}.get(item, (item,))
        for name in expand:
            if name not in ALL_METHODS:
                raise InvalidArgumentError(f"unknown method {name!r} (choose from {', '.join(ALL_METHODS)}, "
                                           "or all, peers, in-process)")
            if name not in names:
                names.append(name)
    return ["plain"] + [n for n in names if n != "plain"]


def select_prompts(path: Path, per_category: int | None, stream: str, seed: int) -> list[Prompt]:
    """The prompts to run, in run order."""
    groups = by_category(load_prompts(path))
    chosen = [pr for prs in groups.values() for pr in (prs[:per_category] if per_category else prs)]
    if stream == "mixed":
        order = np.random.default_rng(seed).permutation(len(chosen))
        chosen = [chosen[i] for i in order]
    return chosen


def conversation(pr: Prompt, turn: int, replies: list[str]) -> list[dict]:
    """Chat messages up to user turn ``turn`` (0-based), with plain's earlier replies."""
    msgs: list[dict] = []
    for i in range(turn + 1):
        msgs.append({"role": "user", "content": pr.turns[i]})
        if i < turn:
            msgs.append({"role": "assistant", "content": replies[i]})
    return msgs


def prefix_identical(a: str | None, b: str) -> bool | None:
    """Whether two greedy texts of possibly different lengths agree up to the shorter one."""
    if a is None:
        return None
    a, b = a.rstrip(), b.rstrip()
    n = min(len(a), len(b))
    return a[:n] == b[:n] and (n > 0 or a == b)


def _first_diff_chars(a: str, b: str) -> int | None:
    """Where two texts first differ (a character index), None if one is a prefix of the other."""
    a, b = a.rstrip(), b.rstrip()
    i = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)
    return i


Log = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run(cfg: BenchConfig, log: Log = _stderr) -> dict:
    """Run the benchmark; returns the report (see report.build)."""
    from .. import registry
    from ..engine import Engine
    from . import report

    t_start = time.time()
    load_start = os.getloadavg()
    prompts = select_prompts(cfg.prompts, cfg.per_category, cfg.stream, cfg.seed)
    power = detect()
    eng = Engine(cfg.model, n_ctx=cfg.n_ctx, n_threads=cfg.n_threads, n_gpu_layers=cfg.n_gpu_layers, learn="off")
    with eng:
        ready, unavailable = M.prepare(eng, [m for m in cfg.methods if m in M.IN_PROCESS])
        setup = _peer_setup(eng, cfg, registry)
        peers = []
        for name in (m for m in cfg.methods if m in P.PEERS):
            why = P.why_unavailable(name, setup)
            if why is None:
                peers.append(name)
            else:
                unavailable[name] = why
        for name, why in unavailable.items():
            log(f"edgessd bench: {name}: n/a: {why}")
        turns = [(pr, t) for pr in prompts for t in range(len(pr.turns) if cfg.turns == "all" else 1)]
        log(f"edgessd bench: {eng.model_path.name}, {len(prompts)} prompts ({len(turns)} turns), "
            f"{len(ready)} methods and {len(peers)} peers x {cfg.repeat} repeats, -n {cfg.n_predict}, "
            f"{cfg.n_threads} threads")
        _warm_up(eng, ready, prompts[0], cfg)
        run_state = _Run(eng, ready, peers, setup, cfg, unavailable, log)
        with PowerMeter(power) as meter:
            run_state.meter = meter
            for r in range(cfg.repeat):
                for i, (pr, t) in enumerate(turns):
                    run_state.one(pr, t, r, f"[r{r + 1} {i + 1}/{len(turns)}]")
        meta = _meta(eng, cfg, power, setup, prompts, len(turns))
        meta["timing_s"] = {"in_process": round(run_state.t_in, 1), "peers": round(run_state.t_peers, 1),
                            "total": round(time.time() - t_start, 1)}
        meta["load_avg"] = {"start": [round(x, 2) for x in load_start],
                            "end": [round(x, 2) for x in os.getloadavg()]}
        details = {name: m.detail for name, m in ready.items()}
        return report.build(meta, cfg.methods, run_state.rows, unavailable, details)


def _warm_up(eng, ready: dict, pr: Prompt, cfg: BenchConfig) -> None:
    """One short untimed generation per method: graphs and caches built before timing."""
    msgs = conversation(pr, 0, [])
    for m in ready.values():
        eng.reset()
        m.run(eng, msgs, min(cfg.n_predict, M.SWIFT_WARMUP + 4), cfg.seed)


class _Run:
    """The state of one run: rows so far, plain's replies and tokens, which peers still run."""

    def __init__(self, eng, ready: dict, peers: list[str], setup: P.PeerSetup, cfg: BenchConfig,
                 unavailable: dict[str, str], log: Log) -> None:
        self.eng, self.ready, self.peers, self.setup, self.cfg = eng, ready, peers, setup, cfg
        self.unavailable, self.log = unavailable, log
        self.meter: PowerMeter | None = None
        self.rows: list[dict] = []
        self.replies: dict[tuple, list[str]] = {}  # (question_id, repeat) -> plain's replies so far
        self.t_in = self.t_peers = 0.0

    def one(self, pr: Prompt, t: int, r: int, tag: str) -> None:
        """Every method, then every peer, on turn ``t`` of ``pr`` in repeat ``r``."""
        msgs = conversation(pr, t, self.replies.get((pr.question_id, r), []))
        base = {"category": pr.category, "question_id": pr.question_id, "turn": t + 1, "repeat": r + 1,
                "load_avg_1m": round(os.getloadavg()[0], 2)}
        t0 = time.time()
        self._settle(msgs)
        plain = None
        for name, m in self.ready.items():
            self.eng.reset()
            res = m.run(self.eng, msgs, self.cfg.n_predict, self.cfg.seed)
            t_end = time.perf_counter()
            if plain is None:
                plain = res  # plain runs first
                self.replies.setdefault((pr.question_id, r), []).append(res.text)
            self.rows.append({"method": name} | base | _engine_row(name, res, plain, self.eng, self.meter, t_end))
        self.t_in += time.time() - t0
        t0 = time.time()
        prompt = self.eng.render(msgs)
        for name in list(self.peers):
            try:
                res, energy = self._peer(name, prompt)
            except P.PeerError as e:  # one failure makes the peer n/a: no partial results
                self.peers.remove(name)
                self.unavailable[name] = str(e)
                self.rows = [x for x in self.rows if x["method"] != name]
                self.log(f"edgessd bench: {name}: n/a: {e}")
                continue
            self.rows.append({"method": name} | base | _peer_row(name, res, plain, energy))
        self.t_peers += time.time() - t0
        done = [x for x in self.rows if x["question_id"] == pr.question_id and x["turn"] == t + 1
                and x["repeat"] == r + 1]
        self.log(f"{tag} {pr.question_id} t{t + 1}: " + " ".join(f"{x['method']} {x['gen_tok_s']:.1f}" for x in done)
                 + " t/s")

    def _settle(self, msgs: list[dict]) -> None:
        """An untimed short plain generation before the timed ones. Plain runs first on every
        prompt, right after the previous prompt's peer processes; without this it alone would
        pay for whatever they left behind (caches, page mappings) and every speedup would be
        flattered."""
        if "plain" in self.ready:
            self.eng.reset()
            self.ready["plain"].run(self.eng, msgs, min(self.cfg.n_predict, SETTLE_TOKENS), self.cfg.seed)

    def _peer(self, name: str, prompt: str) -> tuple[P.PeerResult, float | None]:
        """One peer run; a failure is tried once more (a loaded machine can stall a run past its timeout)."""
        try:
            return self._peer_once(name, prompt)
        except P.PeerError as e:
            self.log(f"edgessd bench: {name}: {e}; trying once more")
            return self._peer_once(name, prompt)

    def _peer_once(self, name: str, prompt: str) -> tuple[P.PeerResult, float | None]:
        timeout = 300 + 4.0 * self.cfg.n_predict
        if name == "llama-cpp-python-lookup":
            return P.run_lcp_lookup(self.setup, [prompt], self.cfg.n_predict, timeout)[0], None
        res = P.run_tool(name, self.setup, prompt, self.cfg.n_predict, self.cfg.seed, timeout)
        t_end = time.perf_counter()
        span = res.n_generated / res.gen_tok_s if res.gen_tok_s > 0 else 0.0
        return res, self.meter.energy_j(t_end - span, t_end) if self.meter else None


def _engine_row(name: str, res, plain, eng, meter: PowerMeter | None, t_end: float) -> dict:
    s = res.stats
    energy = meter.energy_j(t_end - s.t_gen_ms / 1e3, t_end) if meter else None
    same = res.tokens == plain.tokens
    return {
        "method": name, "n_generated": s.n_generated, "gen_tok_s": s.gen_tok_s,
        "speedup": s.gen_tok_s / plain.stats.gen_tok_s if plain.stats.gen_tok_s > 0 else None,
        "mean_accepted": s.mean_accepted, "acceptance": s.acceptance_rate if s.n_drafted else None,
        "identical": same, "first_diff": None if same else common_prefix(res.tokens, plain.tokens),
        "predicted_speedup": M.predicted_speedup(eng, res),
        "n_drafted": s.n_drafted, "n_accepted": s.n_accepted, "n_cycles": s.n_cycles, "t_gen_ms": s.t_gen_ms,
        "mode": res.mode, "skip": res.layer_set.spec() if res.layer_set else None, "domain": res.domain,
        "stop_reason": res.stop_reason, "energy_j": energy, "tok_per_joule": s.n_generated / energy if energy else None,
    }


def _peer_row(name: str, res: P.PeerResult, plain, energy: float | None) -> dict:
    rate = plain.stats.gen_tok_s
    return {
        "method": name, "n_generated": res.n_generated, "gen_tok_s": res.gen_tok_s,
        "speedup": res.gen_tok_s / rate if rate > 0 else None,
        "mean_accepted": res.mean_accepted, "acceptance": res.acceptance,
        "identical": prefix_identical(res.text, plain.text),
        "first_diff": None if res.text is None else _first_diff_chars(res.text, plain.text),
        "predicted_speedup": None, "n_drafted": res.n_drafted, "n_accepted": res.n_accepted,
        "n_cycles": res.n_cycles, "t_gen_ms": None, "mode": name, "skip": None, "domain": None, "stop_reason": None,
        "energy_j": energy, "tok_per_joule": res.n_generated / energy if energy else None,
    }


def _peer_setup(eng, cfg: BenchConfig, registry) -> P.PeerSetup:
    from .. import device

    name = next((n for n, s in registry.load_registry().items()
                 if s.sha256 == registry.model_sha256(eng.model_path)), None)
    draft = cfg.draft_model or P.DRAFT_FOR.get(name or "")
    draft_path = None
    if draft and any(m == "llama.cpp-draft" for m in cfg.methods):
        draft_path = registry.resolve(draft)
    return P.PeerSetup(model_path=eng.model_path, model_name=name, tools_dir=cfg.tools_dir or P.default_tools_dir(),
                       n_threads=cfg.n_threads, n_ctx=cfg.n_ctx, n_gpu_layers=cfg.n_gpu_layers,
                       backend=device.backend(), draft_path=draft_path)


def _meta(eng, cfg: BenchConfig, power: PowerStatus, setup: P.PeerSetup, prompts: list[Prompt],
          n_turns: int) -> dict:
    from .. import __version__, device, registry

    data = Path(cfg.prompts).read_bytes()
    return {
        "model": {"name": setup.model_name or cfg.model, "path": str(eng.model_path),
                  "sha256": registry.model_sha256(eng.model_path), "arch": eng.model.arch,
                  "n_layer": eng.model.n_layer, "profile": eng.device_profile() is not None,
                  "domain_index": eng.domain_index() is not None, "domain_index_file": _index_file(eng)},
        "device": device.fingerprint(cfg.n_threads) | {"preset": cfg.preset, "n_gpu_layers": cfg.n_gpu_layers},
        "build": build_info(), "tools": P.tools_info(setup.tools_dir) if any(
            m in P.PEERS for m in cfg.methods) else None,
        "settings": {"prompts": str(cfg.prompts), "prompts_sha256": hashlib.sha256(data).hexdigest(),
                     "n_prompts": len(prompts), "n_turns": n_turns, "categories": list(by_category(prompts)),
                     "n_predict": cfg.n_predict, "repeat": cfg.repeat, "stream": cfg.stream, "seed": cfg.seed,
                     "turns": cfg.turns, "per_category": cfg.per_category, "n_ctx": cfg.n_ctx,
                     "threads": cfg.n_threads, "greedy": True, "edgessd": __version__},
        "power": power.to_json(), "peer_commands": setup.commands, "command": cfg.command, "notes": cfg.notes,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def _index_file(eng) -> dict | None:
    """Which domain index the engine loaded (the user's, else the shipped one), and its sidecar's sha256."""
    from .. import registry
    from ..domains import SIDECAR, index_dir, shipped_index_dir
    from ..fsutil import sha256_file

    if eng.domain_index() is None:
        return None
    sha = registry.model_sha256(eng.model_path)
    for where in (index_dir(sha), shipped_index_dir(sha)):
        if (where / SIDECAR).exists():
            return {"path": str(where / SIDECAR), "sha256": sha256_file(where / SIDECAR)}
    return None


def build_info() -> dict:
    """The llama.cpp build that ran: the installed patched wheel's key, backend, patches, system info."""
    import json

    import llama_cpp

    from ..device import build_record
    from ..fsutil import cache_dir

    info: dict = {"llama_cpp_python": llama_cpp.__version__, "key": None, **build_record()}
    if info.get("key"):
        try:
            built = json.loads((cache_dir() / "wheels" / info["key"] / "build.json").read_text())
            info["cmake_args"], info["patches"] = built.get("cmake_args"), built.get("patches")
        except (OSError, ValueError):
            pass
    try:
        info["system_info"] = llama_cpp.llama_print_system_info().decode().strip()
    except (AttributeError, UnicodeDecodeError):
        pass
    return info
