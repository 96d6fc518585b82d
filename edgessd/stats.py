"""Per-generation statistics, with units in the field names."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class GenerationStats:
    """Counters and timings of one generation.

    A *cycle* is one pass of the full model during generation: a verification of a
    draft, or a plain step when the drafter proposed nothing. Each cycle emits its
    accepted drafts plus one token of the full model's own (the bonus token).
    """

    n_prompt: int = 0        # prompt tokens (including any reused from the KV cache)
    n_prompt_eval: int = 0   # prompt tokens actually decoded (the rest came from the KV cache)
    n_generated: int = 0     # tokens emitted
    n_eog: int = 0           # 1 when generation ended at an end-of-generation token (sampled, not emitted)
    n_cycles: int = 0        # full-model passes during generation
    n_drafted: int = 0       # draft tokens proposed
    n_accepted: int = 0      # draft tokens accepted
    n_rejections: int = 0    # cycles that ended at a rejected draft (the rest accepted all they drafted)
    drafted_per_pos: list[int] = field(default_factory=list)   # [i]: cycles that drafted a token at position i
    accepted_per_pos: list[int] = field(default_factory=list)  # [i]: of those, how many were accepted
    t_prompt_ms: float = 0.0  # prefill, up to the first token's logits
    t_draft_ms: float = 0.0   # time in drafters
    t_verify_ms: float = 0.0  # full-model passes during generation (verification and plain steps)
    t_constraint_ms: float = 0.0  # of t_verify_ms: a JSON schema's or grammar's masks, cuts and rollbacks
    t_gen_ms: float = 0.0     # whole generation after the prompt (draft + verify + sampling + overhead)

    def observe_cycle(self, n_drafted: int, n_accepted: int) -> None:
        self.n_cycles += 1
        self.n_drafted += n_drafted
        self.n_accepted += n_accepted
        self.n_rejections += int(n_accepted < n_drafted)
        while len(self.drafted_per_pos) < n_drafted:
            self.drafted_per_pos.append(0)
            self.accepted_per_pos.append(0)
        for i in range(n_drafted):
            self.drafted_per_pos[i] += 1
            if i < n_accepted:
                self.accepted_per_pos[i] += 1

    @property
    def mean_accepted(self) -> float:
        """Accepted drafts per cycle, *excluding* the bonus token (tokens per cycle = 1 + this)."""
        return self.n_accepted / self.n_cycles if self.n_cycles else 0.0

    @property
    def alpha(self) -> float:
        """Per-token acceptance by maximum likelihood, as the planner models it (i.i.d. drafts
        accepted until the first rejection): accepted / (accepted + rejections)."""
        return self.n_accepted / (self.n_accepted + self.n_rejections) if self.n_accepted + self.n_rejections else 0.0

    @property
    def acceptance_rate(self) -> float:
        """Accepted / drafted tokens."""
        return self.n_accepted / self.n_drafted if self.n_drafted else 0.0

    @property
    def acceptance_per_pos(self) -> list[float]:
        """[i]: the share of drafts at position i that were accepted."""
        return [a / d if d else 0.0 for a, d in zip(self.accepted_per_pos, self.drafted_per_pos)]

    @property
    def prompt_tok_s(self) -> float:
        return 1e3 * self.n_prompt_eval / self.t_prompt_ms if self.t_prompt_ms > 0 else 0.0

    @property
    def gen_tok_s(self) -> float:
        """Sampled tokens per second over the generation, llama.cpp's eval rate.

        The prefill decodes every prompt token but the last, so each sampled token costs one
        full pass inside ``t_gen_ms`` in plain decoding, the first included; an
        end-of-generation token is sampled like any other (it is not emitted) and counts, as
        in llama.cpp's ``eval time`` and llama-server's ``predicted_per_second``. So for plain
        decoding the rate is passes per second, as llama.cpp's is (its prefill decodes the
        whole prompt, so its first token is free and its passes are the tokens after it)."""
        return 1e3 * (self.n_generated + self.n_eog) / self.t_gen_ms if self.t_gen_ms > 0 else 0.0

    def to_json(self) -> dict:
        d = asdict(self)
        d.update(mean_accepted=self.mean_accepted, acceptance_rate=self.acceptance_rate, alpha=self.alpha,
                 acceptance_per_pos=self.acceptance_per_pos, prompt_tok_s=self.prompt_tok_s,
                 gen_tok_s=self.gen_tok_s)
        return d
