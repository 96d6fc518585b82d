"""Measure what decoding costs on this device, and keep it in a versioned JSON file.

For several context lengths it times, through the skip API:
- a single-token decode, t(1);
- the same with every attention sublayer skipped, every MLP skipped, and both: the
  differences, divided by the layer count, are the per-layer attention and MLP costs,
  and what remains with both skipped is the base (embeddings, LM head, fixed overhead);
- the verification curve V(k), k = 1..k_max tokens in one batch with logits at every
  position, as verification needs them (measured at k = 1-6, 8, 12, 16 and interpolated
  between; kept non-decreasing, since noise can only add time);
- a graph rebuild (alternating two masks), what a cycle would pay without graph lanes.
Then it fits attention = a + b * ctx and MLP = constant, and reports the fit errors.
Last, it estimates what each sublayer costs in *acceptance*: the model's own greedy
continuation of a mixed prompt is scored by teacher-forced matchness with each single
sublayer skipped (acceptance.py). The planner combines the two.

Layers of one model have the same shapes, so their costs are measured together, which is
far less noisy than timing 2L single-sublayer skips one by one.
"""
from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from . import device, registry
from ._capi import Context, Model
from .acceptance import single_skip_matchness
from .errors import EdgessdError
from .fsutil import cache_dir, write_json_atomic
from .planner import CostModel
from .skipset import SKIP_ATTN, SKIP_FFN

SCHEMA = 1


@dataclass
class Profile:
    """Measured costs on one device for one model (times in milliseconds)."""

    schema: int
    model_sha256: str
    model_name: str
    device: dict             # device.fingerprint(), threads included
    n_layer: int
    ctx: list[int]           # context lengths measured
    t1_ms: list[float]       # [len(ctx)] single-token decode
    attn_ms: list[float]     # [len(ctx)] attention cost of one layer
    mlp_ms: list[float]      # [len(ctx)] MLP cost of one layer
    base_ms: list[float]     # [len(ctx)] the rest of a step (embeddings, LM head, overhead)
    verify_ms: list[list[float]]  # [len(ctx)][k_max] V(k) for k = 1..k_max, all logits
    rebuild_ms: float        # one graph rebuild (paid twice per cycle without graph lanes)
    attn_fit: dict           # {"a": ms, "b": ms per token of context, "rmse_ms": ...}
    mlp_fit: dict            # {"mean": ms, "rmse_ms": ...}
    match_attn: list[float]  # [n_layer] matchness with that layer's attention skipped
    match_mlp: list[float]   # [n_layer] matchness with that layer's MLP skipped
    seconds: float           # how long profiling took

    # -- interpolation at any context length ------------------------------------------------------
    def _interp(self, values: list[float], ctx: int) -> float:
        return float(np.interp(ctx, self.ctx, values))

    def t1(self, ctx: int) -> float:
        return self._interp(self.t1_ms, ctx)

    def verify(self, k: int, ctx: int) -> float:
        """V(k) at context ``ctx``: k tokens in one batch, all logits."""
        col = [row[k - 1] for row in self.verify_ms]
        return self._interp(col, ctx)

    def verify_curve(self, ctx: int) -> np.ndarray:
        """[k_max] V(1..k_max) at context ``ctx``."""
        return np.array([self.verify(k, ctx) for k in range(1, len(self.verify_ms[0]) + 1)])

    def attn(self, ctx: int) -> float:
        return self.attn_fit["a"] + self.attn_fit["b"] * ctx

    def mlp(self) -> float:
        return self.mlp_fit["mean"]

    def base(self, ctx: int) -> float:
        return self._interp(self.base_ms, ctx)

    @property
    def k_max(self) -> int:
        return len(self.verify_ms[0])

    def cost_at(self, ctx: int) -> CostModel:
        """The planner's cost model at context length ``ctx``."""
        L = self.n_layer
        return CostModel(t1=self.t1(ctx), verify=self.verify_curve(ctx),
                         attn=np.full(L, max(self.attn(ctx), 0.0)), mlp=np.full(L, max(self.mlp(), 0.0)))

    def to_json(self) -> dict:
        return asdict(self)


class ProfileError(EdgessdError):
    """A profile file is missing, corrupt, from another model or device, or of another schema."""


def profile_path(model_sha256: str, n_threads: int, n_gpu_layers: int = 0) -> Path:
    """``{sha}-{backend}-{kernels}-t{threads}``, and ``-ngl{N}-{gpu}`` when layers are offloaded:
    a profile measured with one offload is never read by an engine loaded with another."""
    fp = device.fingerprint(n_threads, n_gpu_layers)
    tag = f"{fp['backend']}-{fp['cpu_kernels']}-t{n_threads}"
    if n_gpu_layers > 0:
        tag += f"-ngl{n_gpu_layers}-{device.gpu_slug(fp['gpu'])}"
    return cache_dir() / "profiles" / f"{model_sha256[:16]}-{tag}.json"


def load_profile(path: Path, *, model_sha256: str | None = None, fingerprint: dict | None = None) -> Profile:
    """Load and validate a profile; ProfileError says why it cannot be used.

    A file written by :func:`save_profile` carries the sha256 of its content, so damage
    that still parses (a changed digit) is caught too; a profile from before the checksum
    is checked field by field only.
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ProfileError(f"no profile at {path}") from None
    except (OSError, ValueError, RecursionError) as e:  # ValueError: bad JSON or UTF-8
        raise ProfileError(f"profile {path} is unreadable: {type(e).__name__}: {str(e)[:200]}") from None
    if not isinstance(data, dict):
        raise ProfileError(f"profile {path} is not a profile (a JSON {type(data).__name__}, not an object)")
    if data.get("schema") != SCHEMA or type(data.get("schema")) is not int:
        raise ProfileError(f"profile {path} has schema {data.get('schema')!r}, expected {SCHEMA}")
    stored = data.pop("sha256", None)
    if stored is not None and stored != content_sha256(data):
        raise ProfileError(f"profile {path} is corrupt: its content does not match its checksum")
    try:
        prof = Profile(**data)
        _validate(prof)
    except (TypeError, ValueError, KeyError, IndexError, OverflowError) as e:
        raise ProfileError(f"profile {path} is malformed: {str(e)[:200]}") from None
    if model_sha256 is not None and prof.model_sha256 != model_sha256:
        raise ProfileError(f"profile {path} belongs to another model")
    if fingerprint is not None and prof.device != fingerprint:
        raise ProfileError(f"profile {path} was measured on another device or thread count")
    return prof


def content_sha256(data: dict) -> str:
    """The sha256 of a profile's fields, as canonical JSON (sorted keys, no spaces)."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def save_profile(prof: Profile, path: Path) -> None:
    """Write ``prof`` atomically, with the checksum :func:`load_profile` verifies."""
    data = prof.to_json()
    write_json_atomic(path, {**data, "sha256": content_sha256(data)})


def _numbers(values, *, low: float = 0.0, high: float = 1e12, strict: bool = False) -> bool:
    """True if ``values`` is a list of real numbers (not booleans) in [low, high], low excluded if
    ``strict``. The default bound (1e12 ms, 30 years) keeps integers in float64's exact range."""
    return isinstance(values, list) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        and (v > low if strict else v >= low) and v <= high for v in values)


def _validate(p: Profile) -> None:
    """ValueError unless every field has the type and range the planner relies on."""
    if not isinstance(p.model_sha256, str) or not isinstance(p.model_name, str) or not isinstance(p.device, dict):
        raise ValueError("model_sha256, model_name or device has the wrong type")
    if not isinstance(p.n_layer, int) or isinstance(p.n_layer, bool) or p.n_layer <= 0:
        raise ValueError("bad layer count")
    if not isinstance(p.ctx, list) or not p.ctx or not all(type(c) is int and 0 < c < 1 << 40 for c in p.ctx) \
            or any(a >= b for a, b in zip(p.ctx, p.ctx[1:])):
        raise ValueError("context lengths must be increasing positive integers")
    n = len(p.ctx)
    if not isinstance(p.verify_ms, list) or any(not isinstance(x, list) or len(x) != n
                                                for x in (p.t1_ms, p.attn_ms, p.mlp_ms, p.base_ms, p.verify_ms)):
        raise ValueError("per-context lists differ in length")
    if not all(isinstance(row, list) for row in p.verify_ms) or len({len(row) for row in p.verify_ms}) != 1 \
            or p.k_max < 2:
        raise ValueError("verify_ms rows differ in length")
    if not all(_numbers(x, strict=True) for x in (p.t1_ms, p.base_ms, *p.verify_ms)):
        raise ValueError("timings must be positive numbers")
    if not _numbers(p.attn_ms) or not _numbers(p.mlp_ms) or not _numbers([p.rebuild_ms, p.seconds]):
        raise ValueError("sublayer costs, rebuild_ms and seconds must be numbers >= 0")
    if len(p.match_attn) != p.n_layer or len(p.match_mlp) != p.n_layer:
        raise ValueError("matchness lists do not match the layer count")
    if not _numbers(p.match_attn, high=1.0) or not _numbers(p.match_mlp, high=1.0):
        raise ValueError("matchness values must lie in [0, 1]")
    if not isinstance(p.attn_fit, dict) or not isinstance(p.mlp_fit, dict):
        raise ValueError("attn_fit and mlp_fit must be objects")
    fits = [p.attn_fit.get("a"), p.attn_fit.get("b"), p.attn_fit.get("rmse_ms"), p.mlp_fit.get("mean"),
            p.mlp_fit.get("rmse_ms")]
    if not _numbers(fits, low=-1e12):
        raise ValueError("attn_fit needs numbers a, b, rmse_ms and mlp_fit numbers mean, rmse_ms")


def _min_ms(fn: Callable[[], None], reps: int) -> float:
    """The fastest of ``reps`` runs (the first builds the graph; it is rarely the fastest)."""
    return _time_ms(fn, reps, warm_up=False)[0]


def _time_ms(fn: Callable[[], None], reps: int, *, warm_up: bool = True) -> tuple[float, float]:
    """(fastest, mean) of ``reps`` timed runs, after one untimed run that builds the graph.

    The fastest run estimates a cost free of interference: differences of minima isolate
    one sublayer's cost. The mean is what a generation pays on this machine, interference
    included, and that is what a prediction must use: on the 2-core VM, profiles from
    fastest runs put a 4-token batch at 2.6-2.8 t(1), but real verifications averaged
    3.4 t(1), since every thread of a batch waits for the slowest and a batch gives a
    delay more time to strike.
    """
    if warm_up:
        fn()
    times = []
    for _ in range(max(2, reps)):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return min(times), float(np.mean(times))


CALIBRATION_PROMPT = ("Explain briefly how a hash table works, then write a short Python function that "
                      "counts how often each word occurs in a text.\n")


def monotone_fit(y: np.ndarray) -> np.ndarray:
    """The non-decreasing sequence closest to ``y`` in least squares (pool adjacent violators).

    A running maximum would carry one slow measurement on to every larger k; this averages
    it with its neighbours instead.

    >>> monotone_fit(np.array([1.0, 3.0, 2.0, 4.0])).tolist()
    [1.0, 2.5, 2.5, 4.0]
    """
    blocks: list[list[float]] = []  # [sum, count] of pooled runs
    for v in np.asarray(y, dtype=float):
        blocks.append([v, 1])
        while len(blocks) > 1 and blocks[-2][0] * blocks[-1][1] > blocks[-1][0] * blocks[-2][1]:
            s, c = blocks.pop()
            blocks[-1][0] += s
            blocks[-1][1] += c
    return np.concatenate([np.full(int(c), s / c) for s, c in blocks])


def verify_points(k_max: int) -> list[int]:
    """The k at which V(k) is measured: every k up to 16, then sparser.

    Not smooth on a CPU: the matmul kernels change with the batch size. On the 2-core
    EPYC, qwen2.5-coder-1.5b's V(7) is 4-5 t(1) and V(8) 6-7 t(1); interpolated between
    V(6) and V(8) of an earlier profile, V(7) was 1.5-2.5 t(1) too high."""
    return sorted({k for k in (*range(1, 17), 24, 32) if k <= k_max} | {k_max})


def n_steps(n_ctx_lengths: int, k_max: int, n_layer: int) -> int:
    """How many progress() calls profile_model makes (for a progress bar)."""
    return n_ctx_lengths * (4 + len(verify_points(k_max)) - 1) + 1 + 1 + 2 * n_layer


def measure(model: Model, ctx: Context, *, ctx_lengths: list[int], k_max: int = 16, reps: int = 5,
            progress: Callable[[str], None] = lambda _: None) -> dict:
    """Run the measurements; returns the fields of a Profile that depend on timing."""
    L = model.n_layer
    rng = np.random.default_rng(0)
    low = min(100, model.n_vocab // 2)  # past the special tokens of a real vocabulary
    filler = [int(t) for t in rng.integers(low, max(low + 1, min(model.n_vocab, 20000)), max(ctx_lengths) + k_max + 1)]
    tok = filler[-1]
    all_attn = np.full(L, SKIP_ATTN, np.uint8)
    all_mlp = np.full(L, SKIP_FFN, np.uint8)
    both = all_attn | all_mlp
    out = {k: [] for k in ("t1_ms", "attn_ms", "mlp_ms", "base_ms", "verify_ms")}
    ctx.kv_clear()
    filled = 0
    for n in ctx_lengths:
        if n > filled:  # grow the KV cache to n tokens
            ctx.decode(filler[filled:n], filled)
            filled = n

        def step(mask, k=1, n=n):  # as the decode loop verifies: distinct tokens, every row's argmax
            with ctx.skipping(mask):
                ctx.decode(filler[n:n + k], n, all_logits=True)
                np.argmax(ctx.logits(), axis=1)
            ctx.kv_remove(n)

        t1_min, t1 = _time_ms(lambda: step(None), reps)
        progress(f"ctx {n}: t(1)")
        t_noattn = _min_ms(lambda: step(all_attn), reps)
        progress(f"ctx {n}: attention")
        t_nomlp = _min_ms(lambda: step(all_mlp), reps)
        progress(f"ctx {n}: MLP")
        t_base = _time_ms(lambda: step(both), reps)[1]
        progress(f"ctx {n}: base")
        out["t1_ms"].append(t1)
        out["attn_ms"].append(max(t1_min - t_noattn, 0.0) / L)
        out["mlp_ms"].append(max(t1_min - t_nomlp, 0.0) / L)
        out["base_ms"].append(t_base)
        ks = verify_points(k_max)
        times = [t1]
        for k in ks[1:]:
            times.append(_time_ms(lambda k=k: step(None, k), 3)[1])
            progress(f"ctx {n}: V({k})")
        # more tokens never cost less: noise aside, so fit a non-decreasing curve to the means
        curve = np.interp(np.arange(1, k_max + 1), ks, monotone_fit(np.asarray(times)))
        out["verify_ms"].append([float(v) for v in curve])
    ctx.kv_clear()
    a_mask = model.skip_flags()
    a_mask[L // 2] = SKIP_FFN
    b_mask = model.skip_flags()
    b_mask[(L // 2 + 1) % L] = SKIP_FFN  # another layer (wraps on a 2-layer model)
    ctx.decode(filler[:16], 0)

    def alternate():
        for m in (a_mask, b_mask):
            with ctx.skipping(m):
                ctx.decode([tok], 16)
            ctx.kv_remove(16)

    def same():
        for _ in range(2):
            with ctx.skipping(a_mask):
                ctx.decode([tok], 16)
            ctx.kv_remove(16)

    out["rebuild_ms"] = max(0.0, (_min_ms(alternate, reps) - _min_ms(same, reps)) / 2)
    progress("graph rebuild")
    ctx.kv_clear()
    return out


def calibration_tokens(model: Model, ctx: Context, n_new: int = 24) -> tuple[list[int], int]:
    """The calibration prompt followed by the model's own greedy continuation, and where that begins."""
    toks = model.tokenize(CALIBRATION_PROMPT)
    start = len(toks)
    ctx.kv_clear()
    ctx.decode(toks, 0)
    for _ in range(n_new):
        nxt = int(np.argmax(ctx.logits()[0]))
        if model.is_eog(nxt):
            break
        ctx.decode([nxt], len(toks))
        toks.append(nxt)
    ctx.kv_clear()
    return toks, start


def fit(ctx_lengths: list[int], attn_ms: list[float], mlp_ms: list[float]) -> tuple[dict, dict]:
    """attention = a + b * ctx (least squares), MLP = constant; with their RMS errors."""
    x, y = np.asarray(ctx_lengths, float), np.asarray(attn_ms, float)
    if len(x) >= 2:
        b, a = np.polyfit(x, y, 1)
    else:
        a, b = float(y[0]), 0.0
    attn_rmse = float(np.sqrt(np.mean((a + b * x - y) ** 2)))
    m = np.asarray(mlp_ms, float)
    return ({"a": float(a), "b": float(b), "rmse_ms": attn_rmse},
            {"mean": float(m.mean()), "rmse_ms": float(np.sqrt(np.mean((m - m.mean()) ** 2)))})


def profile_model(model_path: Path, *, n_threads: int, n_ctx: int = 2048, ctx_lengths: list[int] | None = None,
                  k_max: int = 16, reps: int = 5, force: bool = False, n_gpu_layers: int = 0,
                  progress: Callable[[str], None] = lambda _: None) -> tuple[Profile, Path, bool]:
    """Return (profile, its path, whether it was measured now); reuses a valid cached one unless ``force``.

    The model is loaded with ``n_gpu_layers`` offloaded, as the engine that reads the profile loads it.
    """
    sha = registry.model_sha256(model_path)
    fp = device.fingerprint(n_threads, n_gpu_layers)
    path = profile_path(sha, n_threads, n_gpu_layers)
    if not force:
        try:
            return load_profile(path, model_sha256=sha, fingerprint=fp), path, False
        except ProfileError as e:
            if path.exists():  # damaged, or another schema: say so, then measure again over it
                print(f"edgessd: ignoring the cached profile ({e}); measuring again", file=sys.stderr, flush=True)
    lengths = ctx_lengths or [64, n_ctx // 4, n_ctx // 2]
    lengths = sorted({min(max(8, n), n_ctx - k_max - 2) for n in lengths})
    t0 = time.perf_counter()
    model = Model(model_path, n_gpu_layers=n_gpu_layers)
    ctx = Context(model, n_ctx=n_ctx, n_batch=max(64, k_max), n_threads=n_threads)
    try:
        m = measure(model, ctx, ctx_lengths=lengths, k_max=k_max, reps=reps, progress=progress)
        calib, start = calibration_tokens(model, ctx)
        progress("calibration text")
        m_attn, m_mlp = single_skip_matchness(ctx, calib, start, progress=lambda: progress("matchness"))
    finally:
        ctx.close()
    attn_fit, mlp_fit = fit(lengths, m["attn_ms"], m["mlp_ms"])
    prof = Profile(schema=SCHEMA, model_sha256=sha, model_name=Path(model_path).name, device=fp,
                   n_layer=model.n_layer, ctx=lengths, attn_fit=attn_fit, mlp_fit=mlp_fit,
                   match_attn=[float(v) for v in m_attn], match_mlp=[float(v) for v in m_mlp],
                   seconds=time.perf_counter() - t0, **m)
    save_profile(prof, path)
    return prof, path, True


def format_table(p: Profile) -> str:
    lines = [f"profile of {p.model_name} on {p.device.get('cpu')} ({p.device.get('backend')}, "
             f"{p.device.get('threads')} threads), {p.n_layer} layers",
             f"{'ctx':>6} {'t(1) ms':>8} {'attn/layer':>10} {'mlp/layer':>9} {'base ms':>8}   "
             "V(k)/t(1) for k=2,3,4,5,8,16"]
    for i, n in enumerate(p.ctx):
        v = p.verify_ms[i]
        ratios = " ".join(f"{v[k - 1] / p.t1_ms[i]:.2f}" for k in (2, 3, 4, 5, 8, 16) if k <= len(v))
        lines.append(f"{n:>6} {p.t1_ms[i]:8.2f} {p.attn_ms[i]:10.3f} {p.mlp_ms[i]:9.3f} {p.base_ms[i]:8.2f}   {ratios}")
    a, mf = p.attn_fit, p.mlp_fit
    lines.append(f"fit: attention/layer = {a['a']:.3f} + {a['b'] * 1000:.3f}e-3 * ctx ms (rmse {a['rmse_ms']:.3f}); "
                 f"mlp/layer = {mf['mean']:.3f} ms (rmse {mf['rmse_ms']:.3f})")
    worst = sorted([(v, f"attn {i}") for i, v in enumerate(p.match_attn)]
                   + [(v, f"mlp {i}") for i, v in enumerate(p.match_mlp)])
    lines.append(f"matchness with one sublayer skipped: median {np.median([v for v, _ in worst]):.3f}; "
                 f"most harmful: " + ", ".join(f"{w} ({v:.2f})" for v, w in worst[:4]))
    lines.append(f"graph rebuild {p.rebuild_ms:.2f} ms (avoided by graph lanes); measured in {p.seconds:.0f} s")
    return "\n".join(lines)
