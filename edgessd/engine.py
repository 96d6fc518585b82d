"""The embedding API: an :class:`Engine` owns one model and one context.

    from edgessd import Engine
    eng = Engine("smollm2-135m", n_ctx=2048)
    for piece in eng.stream([{"role": "user", "content": "Hi!"}], n_predict=64):
        if isinstance(piece, str):
            print(piece, end="", flush=True)
        else:
            print(piece.stats.gen_tok_s)

Thread safety: an Engine runs one generation at a time; a second call from another
thread waits for the first to finish. Use one Engine per concurrent generation.

The KV cache is kept between calls: a prompt that starts with the previous call's tokens
(the next turn of a chat) only decodes what is new.
"""
from __future__ import annotations

import codecs
import os
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from . import registry
from ._capi import Context, Model
from .arguments import MODES as MODES  # re-exported: the CLI, chat and server read it here
from .arguments import check_engine_args, check_prompt, check_stream_args, default_threads
from .decode import decode_loop
from .drafters import Drafter, LayerSkipDrafter, LookupDrafter, NoDrafter
from .drafters.auto import AutoDrafter
from .errors import ContextOverflowError, InvalidArgumentError
from .logprobs import TokenLogprob
from .planner import conservative_cpu_cost, plan_layerskip, predicted_speedup
from .sampling import SamplerParams
from .skipset import SkipSet, parse_skip_spec
from .stats import GenerationStats
from .templates import ChatTemplate

if TYPE_CHECKING:
    from .domains import DomainIndex, DomainSet, Route
    from .features import FeatureSpec
    from .grammar import Constraint
    from .profiler import Profile

Prompt = str | Sequence[dict]


@dataclass
class GenerationResult:
    """The outcome of one generation."""

    text: str
    tokens: list[int]
    mode: str                     # the mode that ran ("auto" resolved to one of the others)
    layer_set: SkipSet | None     # skipped sublayers when drafting by layer skip
    domain: str | None            # the routed domain, when a domain index chose the set
    stop_reason: str              # eos | length | context | cancelled
    stats: GenerationStats = field(default_factory=GenerationStats)
    logprobs: list[TokenLogprob] | None = None  # one per token, when asked for (stream(logprobs=n))

    def to_json(self) -> dict:
        return {"text": self.text, "tokens": self.tokens, "mode": self.mode,
                "layer_set": self.layer_set.to_json() if self.layer_set else None,
                "domain": self.domain, "stop_reason": self.stop_reason, "stats": self.stats.to_json()}


class Piece(str):
    """A piece of streamed text; ``logprobs`` holds its tokens' log-probabilities (when asked for)."""

    logprobs: list[TokenLogprob] | None = None


def default_skip_set(n_layer: int) -> SkipSet:
    """A fixed starting set: attention and MLP of every 4th layer, never the first or last."""
    layers = list(range(3, n_layer - 1, 4))
    return SkipSet.of(layers, layers)


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


class Engine:
    """One model and one context, driven by the speculative decode loop.

    model: a GGUF path or registry name (default smollm2-135m, fetched on first use).
    n_ctx: context size in tokens (4096); n_threads: CPU threads (default: physical cores);
    n_batch: prefill batch (512); n_gpu_layers: layers offloaded to the GPU (0).
    learn: whether an out-of-domain prompt (mode auto or layerskip, with a domain index) is
    saved as a learned anchor in the model's index in the cache: its feature vector and the
    skip set found for it, never its text. "auto" (default): only where the device profile
    says layer skip can pay; "on": always; "off": never.
    chat_template: render chats with this instead of the GGUF's template: a llama.cpp
    built-in name ("chatml", "llama3"...) or Jinja source (see :mod:`edgessd.templates`).
    """

    def __init__(self, model: str | os.PathLike | None = None, *, n_ctx: int = 4096, n_threads: int | None = None,
                 n_batch: int = 512, n_gpu_layers: int = 0, learn: str = "auto",
                 chat_template: str | None = None) -> None:
        check_engine_args(n_ctx=n_ctx, n_batch=n_batch, n_gpu_layers=n_gpu_layers, n_threads=n_threads, learn=learn)
        self.learn = learn  # learn anchors for out-of-domain prompts: auto = where layer skip can pay
        self.template = ChatTemplate.parse(chat_template) if chat_template else None  # bad ones fail first
        self.model_path: Path = registry.resolve(model)
        self.n_gpu_layers = n_gpu_layers
        self.model = Model(self.model_path, n_gpu_layers=n_gpu_layers)
        self.ctx = Context(self.model, n_ctx=n_ctx, n_batch=n_batch, n_threads=n_threads or default_threads())
        self._kv: list[int] = []  # the tokens the KV cache holds, in order
        self._lock = threading.Lock()
        self._warned: set[str] = set()
        self._profile: Profile | None = None
        self._profile_looked_up = False
        self._skip_plan = None  # the planner's layer-skip plan from the profile, if any
        self._index: DomainIndex | None = None
        self._index_looked_up = False
        self.last_route: Route | None = None  # where the last call's prompt was routed (None: not routed)

    def close(self) -> None:
        self.ctx.close()
        self.model.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- prompts ----------------------------------------------------------------------------------
    def render(self, prompt: Prompt) -> str:
        """A chat (list of {"role", "content"}) rendered with the GGUF's template; a str as is."""
        check_prompt(prompt)
        if isinstance(prompt, str):
            return prompt
        if self.template is not None:
            return self.template.render(self.model, list(prompt))
        text = self.model.apply_chat_template(list(prompt))
        if text is None:
            self.warn_once("template", f"{self.model_path.name} has no usable chat template; "
                                       "using a plain 'role: content' layout")
            text = "".join(f"{m['role']}: {m['content']}\n" for m in prompt) + "assistant:"
        return text

    def tokenize(self, prompt: Prompt) -> list[int]:
        return self.model.tokenize(self.render(prompt))

    def warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            print(f"edgessd: warning: {message}", file=sys.stderr)

    # -- generation -------------------------------------------------------------------------------
    def generate(self, prompt: Prompt, **kwargs) -> GenerationResult:
        """Generate a reply; same arguments as :meth:`stream`. Returns the final result."""
        result = None
        for item in self.stream(prompt, **kwargs):
            if isinstance(item, GenerationResult):
                result = item
        assert result is not None, "stream always ends with a result"
        return result

    def stream(self, prompt: Prompt, *, n_predict: int = 128, temperature: float = 0.0, top_k: int = 40,
               top_p: float = 0.95, min_p: float = 0.0, repeat_penalty: float = 1.0, repeat_last_n: int = 64,
               seed: int | None = None, mode: str = "auto", skip: SkipSet | str | None = None,
               draft_max: int | None = None, cancel: threading.Event | None = None,
               drafter: Drafter | None = None, json_schema: dict | str | None = None,
               grammar: str | None = None, logprobs: int | None = None) -> Iterator[str | GenerationResult]:
        """Yield text pieces as tokens are accepted, then the :class:`GenerationResult`.

        prompt: raw text, or chat messages rendered with the model's template.
        n_predict: tokens to generate at most; -1: until the end of generation or of the context.
        temperature, top_k, top_p, min_p, repeat_penalty, repeat_last_n: the sampler
        (:class:`~edgessd.sampling.SamplerParams`); the penalty applies to greedy decoding too.
        mode: plain | lookup | layerskip | auto (the planner decides per cycle from the device
        profile; the result's mode reads e.g. "auto→lookup"). skip: the layer-skip set (a SkipSet or a spec
        such as ``"attn:3,5;mlp:4-9"``); default: every 4th layer. draft_max: drafts per cycle
        (default 4). cancel: set it to stop after the current cycle. drafter: your own
        Drafter (propose/observe) instead of the mode's; it must leave the KV cache as it found it.
        json_schema: the reply is JSON valid against it (a dict or its text); grammar: the reply
        follows it (llguidance's Lark dialect, or GBNF; see edgessd.grammar). Either is enforced
        under every mode, and greedy output is plain constrained decoding's, token for token.
        logprobs: None, or the number (0-20) of alternatives to report with each token's
        log-probability (on each streamed piece's ``.logprobs`` and the result's).
        """
        check_stream_args(n_predict=n_predict, draft_max=draft_max, cancel=cancel, skip=skip, logprobs=logprobs,
                          mode=mode)
        if n_predict == -1:
            n_predict = self.ctx.n_ctx  # llama.cpp's -1: the context ends generation first
        sampler = SamplerParams(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p, seed=seed,
                                repeat_penalty=repeat_penalty, repeat_last_n=repeat_last_n)
        constraint = self.constraint(json_schema=json_schema, grammar=grammar)
        tokens = self.tokenize(prompt)
        if not tokens:
            raise InvalidArgumentError("the prompt is empty")
        if len(tokens) >= self.ctx.n_ctx:
            raise ContextOverflowError(f"the prompt has {len(tokens)} tokens but the context holds "
                                       f"{self.ctx.n_ctx}; use a larger --ctx-size or a shorter prompt")
        if isinstance(skip, str):
            skip = parse_skip_spec(skip)
        if skip is not None:
            skip.check(self.model.n_layer)
        with self._lock:
            t0 = time.perf_counter()
            n_eval = self._prefill(tokens)
            t_prompt = (time.perf_counter() - t0) * 1e3
            domain = None
            self.last_route = None  # this call's route or none: a stale one would learn this prompt
            if drafter is not None:
                mode_run, layer_set = drafter.name, getattr(drafter, "skip", None)
            else:
                domain_sets = None
                if skip is None and mode in ("auto", "layerskip") and self.model.skip_supported:
                    domain, domain_sets = self._route(prompt, tokens)
                drafter, mode_run, layer_set = self._drafter(mode, skip, draft_max, domain_sets, len(tokens))
            stats = GenerationStats(n_prompt=len(tokens), n_prompt_eval=n_eval, t_prompt_ms=t_prompt)
            history = yield from self._run(tokens, drafter, mode_run, layer_set, domain, n_predict, sampler, cancel,
                                           stats, constraint, logprobs)
            if self.last_route is not None and not self.last_route.in_domain and self._should_learn():
                self._learn_online(prompt, tokens, history)

    def _run(self, tokens: list[int], drafter: Drafter, mode: str, layer_set: SkipSet | None, domain: str | None,
             n_predict: int, sampler: SamplerParams, cancel: threading.Event | None,
             stats: GenerationStats, constraint: Constraint | None = None,
             n_logprobs: int | None = None) -> Iterator[str | GenerationResult]:
        history = list(tokens)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pieces: list[str] = []
        all_lp: list[TokenLogprob] | None = [] if n_logprobs is not None else None
        held: list[TokenLogprob] = []  # logprobs of tokens whose text is not out yet (split UTF-8)
        rng = np.random.default_rng(sampler.seed)
        t1 = time.perf_counter()
        matcher = constraint.matcher() if constraint else None
        loop_drafter = drafter
        if matcher is not None and not isinstance(drafter, NoDrafter):  # plain stays plain: the reference
            from .drafters.forced import ForcedDrafter

            loop_drafter = ForcedDrafter(drafter, matcher)
        loop = decode_loop(self.ctx, loop_drafter, history, n_predict=n_predict, sampler=sampler, rng=rng,
                           stats=stats, is_eog=self.model.is_eog,
                           cancelled=(cancel.is_set if cancel else (lambda: False)),
                           constraint=matcher, n_logprobs=n_logprobs)
        reason = "cancelled"
        try:
            while True:
                try:
                    emitted = next(loop)
                except StopIteration as stop:
                    reason = stop.value
                    break
                text = decoder.decode(b"".join(self.model.token_bytes(t) for t in emitted.tokens))
                if emitted.logprobs is not None:
                    held.extend(emitted.logprobs)
                if text:
                    pieces.append(text)
                    yield _piece(text, held, all_lp)
        finally:
            loop.close()
            self._kv = history[:-1]  # the loop's invariant: KV holds all but the pending token
            stats.t_gen_ms = (time.perf_counter() - t1) * 1e3
        tail = decoder.decode(b"", final=True)
        if tail or held:
            pieces.append(tail)
            yield _piece(tail, held, all_lp)
        mode, layer_set = _what_ran(drafter, mode, layer_set)
        yield GenerationResult(text="".join(pieces), tokens=history[len(tokens):], mode=mode,
                               layer_set=layer_set, domain=domain, stop_reason=reason, stats=stats,
                               logprobs=all_lp)
        return history

    def constraint(self, *, json_schema: dict | str | None = None, grammar: str | None = None) -> Constraint | None:
        """A JSON schema or a grammar compiled for this model (GrammarError names what is wrong); None for neither."""
        if json_schema is None and grammar is None:
            return None
        if json_schema is not None and grammar is not None:
            raise InvalidArgumentError("give json_schema or grammar, not both")
        from .grammar import Vocab, compile_grammar, compile_json_schema

        vocab = Vocab.of(self.model)
        return compile_json_schema(json_schema, vocab) if json_schema is not None else compile_grammar(grammar, vocab)

    def _prefill(self, tokens: list[int]) -> int:
        """Make the KV cache hold ``tokens[:-1]``, reusing the longest prefix already there."""
        target = tokens[:-1]
        keep = common_prefix(self._kv, target)
        self.ctx.kv_remove(keep)
        self._kv = self._kv[:keep]
        if len(target) > keep:
            self.ctx.decode(target[keep:], keep)
        self._kv = list(target)
        return len(target) - keep

    def reset(self) -> None:
        """Forget the KV cache (the next prompt is decoded from scratch)."""
        self.ctx.kv_clear()
        self._kv = []

    # -- domains ----------------------------------------------------------------------------------
    def feature_start(self, prompt: Prompt, tokens: Sequence[int]) -> int:
        """Where the text that describes a request begins: the last user message of a chat
        (the turn that may have changed the domain), or 0 for raw text."""
        if isinstance(prompt, str) or not prompt or prompt[-1].get("role") != "user":
            return 0
        blank = list(prompt[:-1]) + [{"role": "user", "content": ""}]
        start = common_prefix(tokens, self.tokenize(blank))
        return start if start < len(tokens) - 1 else 0

    def prompt_feature(self, prompt: Prompt, spec: FeatureSpec | None = None) -> np.ndarray:
        """The prompt's feature (features.py): prefill it (kept in the KV cache) and read the cache."""
        from .features import FeatureSpec

        tokens = self.tokenize(prompt)
        if len(tokens) >= self.ctx.n_ctx:
            raise ContextOverflowError(f"the prompt has {len(tokens)} tokens but the context holds {self.ctx.n_ctx}")
        with self._lock:
            self._prefill(tokens)
            return self._feature(prompt, tokens, spec or FeatureSpec())

    def _feature(self, prompt: Prompt, tokens: list[int], spec: FeatureSpec) -> np.ndarray:
        from .features import cached_feature

        end = len(tokens) - 1  # the KV cache holds all but the last prompt token
        start = self.feature_start(prompt, tokens)
        feat = cached_feature(self.ctx, start if start < end else 0, max(end, 1), spec)
        if feat is None:
            raise InvalidArgumentError("the prompt is too short to describe (one token)")
        return feat

    def domain_index(self) -> DomainIndex | None:
        """The model's domain index: the user's (calibrated or learned), else the one shipped in
        models/index/; None if neither exists. A broken one is ignored with a warning."""
        if self._index_looked_up:
            return self._index
        from .domains import IndexFileError, index_dir, load_index, shipped_index_dir

        self._index_looked_up = True
        sha = registry.model_sha256(self.model_path)
        for where in (index_dir(sha), shipped_index_dir(sha)):
            if not where.exists():
                continue
            try:
                self._index = load_index(where, model_sha256=sha)
                return self._index
            except IndexFileError as e:
                self.warn_once(f"index:{where}", f"ignoring the domain index: {e}")
        return None

    def _route(self, prompt: Prompt, tokens: list[int]) -> tuple[str | None, list[DomainSet] | None]:
        """The domain of the prompt (already prefilled) and its calibrated sets, best acceptance
        first; (None, None) without an index, or out of domain (the planner then chooses plain or
        lookup)."""
        index = self.domain_index()
        self.last_route = None
        if index is None:
            return None, None
        if len(tokens) < 2:
            return None, None  # nothing cached to describe yet
        feat = self._feature(prompt, tokens, index.feature)
        if feat.shape != (index.dim,):
            self.warn_once("index-dim", f"ignoring the domain index: it holds {index.dim}-dim features, "
                                        f"this model and feature spec make {feat.shape[0]}")
            return None, None
        route = index.route(feat)
        self.last_route = route
        if not route.in_domain:
            return f"{route.domain}?", None
        return route.domain, index.domains[route.domain]

    def _should_learn(self) -> bool:
        """Whether an online search is worth its cost here: always (on), never (off), or (auto)
        where the planner predicts that drafting with a known set beats plain decoding."""
        if self.learn != "auto":
            return self.learn == "on"
        index, prof = self.domain_index(), self.device_profile()
        if index is None or prof is None:
            return False
        from .online import candidate_sets

        cost = prof.cost_at(len(self._kv))
        return any(predicted_speedup(cost, c.alpha, cost.draft_step_ms(c.skip)) > 1.03 for c in candidate_sets(index))

    def _learn_online(self, prompt: Prompt, tokens: list[int], history: list[int]) -> None:
        """Search the known sets over what was generated; learn the prompt as an anchor if one
        is clearly better than the nearest domain's. Persisted at once, in the user's index."""
        from . import online
        from .domains import index_dir

        index, route = self.domain_index(), self.last_route
        if index is None or route is None or len(history) - len(tokens) < 8:
            return
        nearest = route.domain
        feat = self._feature(prompt, tokens, index.feature)  # still cached: read before the search clears it
        result = online.search(self.ctx, history, len(tokens), index, nearest)
        self.reset()
        if online.worth_learning(result):
            index.learn(feat, result.best)
            index.save(index_dir(index.model_sha256))

    def device_profile(self) -> Profile | None:
        """This model's cached profile for this device, thread count and offload, or None.

        Looked up once per engine (a profile cannot change under a running engine); the
        layer-skip plan derived from it is kept with it.
        """
        if self._profile_looked_up:
            return self._profile
        from . import device
        from .profiler import ProfileError, load_profile, profile_path

        sha = registry.model_sha256(self.model_path)
        where = profile_path(sha, self.ctx.n_threads, self.n_gpu_layers)
        fp = device.fingerprint(self.ctx.n_threads, self.n_gpu_layers)
        try:
            self._profile = load_profile(where, model_sha256=sha, fingerprint=fp)
        except ProfileError as e:
            self._profile = None
            if where.exists():
                self.warn_once("profile", f"ignoring the device profile: {e}; auto assumes a compute-bound CPU "
                                          "(`edgessd profile --force` measures again)")
        if self._profile is not None and self.model.skip_supported:
            prof = self._profile
            self._skip_plan = plan_layerskip(prof.cost_at(256), np.array(prof.match_attn), np.array(prof.match_mlp))
        self._profile_looked_up = True
        return self._profile

    def _auto_drafter(self, skip: SkipSet | None, draft_max: int | None,
                      domain_sets: list[DomainSet] | None = None, n_ctx_used: int = 0) -> AutoDrafter:
        prof = self.device_profile()
        if prof is None:
            self.warn_once("profile", f"no device profile for {self.model_path.name} with {self.ctx.n_threads} "
                                      "threads; auto assumes a compute-bound CPU (run `edgessd profile` to measure)")
            cost_at = lambda _pos: conservative_cpu_cost(self.model.n_layer)  # noqa: E731
        else:
            cost_at = prof.cost_at
        layer = None
        alpha = 0.5
        if self.model.skip_supported:
            if skip is None and domain_sets:  # of the routed domain's sets, the one predicted fastest here
                cost = cost_at(n_ctx_used)
                best = max(domain_sets, key=lambda s: predicted_speedup(cost, s.alpha, cost.draft_step_ms(s.skip)))
                skip, alpha = best.skip, best.alpha
            elif skip is None and self._skip_plan is not None:
                skip, alpha = self._skip_plan.skip, self._skip_plan.alpha
            if skip is not None and not skip.empty:
                layer = LayerSkipDrafter(self.ctx, skip, max_tokens=draft_max or 4)
        return AutoDrafter(cost_at, layerskip=layer, layerskip_alpha=alpha, d_max=draft_max or 16)

    def _drafter(self, mode: str, skip: SkipSet | None, draft_max: int | None,
                 domain_sets: list[DomainSet] | None = None,
                 n_ctx_used: int = 0) -> tuple[Drafter, str, SkipSet | None]:
        if mode == "auto":
            return self._auto_drafter(skip, draft_max, domain_sets, n_ctx_used), "auto", skip
        if mode == "lookup":
            return LookupDrafter(max_tokens=draft_max or 4), mode, None
        if mode == "layerskip":
            if not self.model.skip_supported:
                self.warn_once("skip", f"layer skip is not supported for architecture {self.model.arch!r}; "
                                       "decoding plainly")
                return NoDrafter(), "plain", None
            chosen = skip if skip is not None else (
                domain_sets[0].skip if domain_sets else default_skip_set(self.model.n_layer))
            return LayerSkipDrafter(self.ctx, chosen, max_tokens=draft_max or 4), mode, chosen
        return NoDrafter(), "plain", None


def _piece(text: str, held: list[TokenLogprob], all_lp: list[TokenLogprob] | None) -> str:
    """``text`` as a :class:`Piece` carrying the held logprobs (which it takes), when asked for."""
    if all_lp is None:
        return text
    piece = Piece(text)
    piece.logprobs = list(held)
    all_lp.extend(held)
    held.clear()
    return piece


def _what_ran(drafter: Drafter, mode: str, layer_set: SkipSet | None) -> tuple[str, SkipSet | None]:
    """The mode and skip set a generation really used: auto reports what it chose ("auto→lookup"),
    and a skip set only if it drafted with it."""
    if not isinstance(drafter, AutoDrafter):
        return mode, layer_set
    used = drafter.layerskip.skip if drafter.layerskip is not None and drafter.cycles["layerskip"] else None
    return f"auto→{drafter.summary()}", used
