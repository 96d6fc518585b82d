"""Constraints on what a generation may say: a JSON schema or a grammar, as token masks.

The one module that uses llguidance (the grammar engine llama.cpp can also use; chosen by
measurement, ``bench/grammar_engines.py``). A :class:`Constraint` is compiled once per
request; a :class:`Matcher` walks it token by token:

    vocab = Vocab.of(model)                         # ~1 s for a 152k vocabulary, cached per model
    con = compile_json_schema({"type": "object", ...}, vocab)
    m = con.matcher()
    allowed = m.mask()                              # bool [n_vocab]
    m.consume(token); m.rollback(1); m.is_accepting

Grammars (``compile_grammar``) are in llguidance's Lark dialect: ``start: "yes" | "no"``,
rules in lowercase, terminals in UPPERCASE, regexes as ``/[0-9]+/``, and
``%json { ...schema... }`` to embed a JSON schema. A llama.cpp GBNF grammar (``root ::=
...``) is converted to that dialect first.

Every problem with a schema or grammar is a :class:`GrammarError` naming what is wrong.
"""
from __future__ import annotations

import json
import os
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

# llguidance's thread pool (rayon) spins on idle cores after its work: on a CPU where
# llama.cpp's threads use every core, that made each decode 10x slower (1.03 s against
# 0.08 s per token, smollm2-135m, 2 threads). One thread computes a mask in well under 1 ms.
os.environ.setdefault("RAYON_NUM_THREADS", "1")

import llguidance as llg  # noqa: E402
import numpy as np

from .errors import GrammarError

if TYPE_CHECKING:
    from ._capi import Model

# JSON output is compact and fixed (no free whitespace): the model cannot pad it forever,
# and a lookup draft that copies keys from the prompt's schema needs one spelling to match.
JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
MAX_ROLLBACK = 64  # more than any draft (draft_max <= 16) plus the bonus token


class _Pieces:
    """What llguidance needs of a tokenizer: every token's bytes, the specials, and tokenize."""

    def __init__(self, model: Model) -> None:
        eog = model.eog_tokens()
        self.eos_token_id = eog[0] if eog else 0
        self.bos_token_id = None
        self.special_token_ids = [t for t in range(model.n_vocab) if model.is_special(t)]
        special = set(self.special_token_ids)
        # a special token is marked by a leading 0xff, so that grammar text never matches it
        self.tokens = [(b"\xff" if t in special else b"") + model.token_bytes(t, special=True)
                       for t in range(model.n_vocab)]
        self._model = model

    def __call__(self, data: bytes) -> list[int]:
        return self._model.tokenize(data.decode("utf-8", "replace"), add_special=False, parse_special=False)


class Vocab:
    """A model's vocabulary for llguidance (built once per model: about a second for 152k tokens)."""

    _cache: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # Model -> Vocab

    def __init__(self, model: Model) -> None:
        pieces = _Pieces(model)
        self.n_vocab = model.n_vocab
        self.eog = model.eog_tokens()
        self.tokenizer = llg.LLTokenizer(llg.TokenizerWrapper(pieces), n_vocab=model.n_vocab,
                                         eos_token=self.eog or None)

    @classmethod
    def of(cls, model: Model) -> Vocab:
        """The cached vocabulary of ``model`` (kept while the Model object lives)."""
        vocab = cls._cache.get(model)
        if vocab is None:
            vocab = cls._cache[model] = cls(model)
        return vocab


@dataclass(frozen=True)
class Constraint:
    """A compiled schema or grammar for one vocabulary; :meth:`matcher` starts a walk over it."""

    grammar: str       # llguidance's grammar (JSON text)
    vocab: Vocab
    source: str        # "json_schema" | "grammar", for messages

    def matcher(self) -> Matcher:
        return Matcher(self)


def compile_json_schema(schema: Any, vocab: Vocab) -> Constraint:
    """A JSON schema (a dict, or its JSON text) as a constraint; GrammarError if it is not valid
    JSON, not a schema, or uses a feature llguidance does not implement (named in the message)."""
    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except ValueError as e:
            raise GrammarError(f"the JSON schema is not valid JSON: {e}") from None
    if isinstance(schema, bool):
        schema = {} if schema else {"not": {}}
    if not isinstance(schema, dict):
        raise GrammarError(f"a JSON schema must be an object, got {type(schema).__name__}")
    try:
        grammar = llg.LLMatcher.grammar_from_json_schema(schema, defaults=JSON_OPTIONS)
    except (ValueError, TypeError) as e:
        raise GrammarError(f"invalid JSON schema: {e}") from None
    return _checked(grammar, vocab, "json_schema", "invalid JSON schema")


def any_json(vocab: Vocab) -> Constraint:
    """Any JSON object (OpenAI's ``response_format: {"type": "json_object"}``)."""
    return compile_json_schema({"type": "object"}, vocab)


def compile_grammar(text: str, vocab: Vocab) -> Constraint:
    """A grammar in llguidance's Lark dialect, or llama.cpp's GBNF (recognised by ``::=``)."""
    if not isinstance(text, str) or not text.strip():
        raise GrammarError("the grammar is empty")
    if "::=" in text:
        from llguidance.gbnf_to_lark import gbnf_to_lark

        try:
            text = gbnf_to_lark(text)
        except Exception as e:  # the converter raises plain exceptions on bad GBNF
            raise GrammarError(f"the GBNF grammar does not parse: {e}") from None
    return _checked(llg.LLMatcher.grammar_from_lark(text), vocab, "grammar", "the grammar does not parse")


def _checked(grammar: str, vocab: Vocab, source: str, what: str) -> Constraint:
    err = llg.LLMatcher.validate_grammar(grammar, vocab.tokenizer)
    if err:
        raise GrammarError(f"{what}: {' '.join(err.split())[:400]}")
    return Constraint(grammar, vocab, source)


class Matcher:
    """The state of one walk over a constraint: which tokens may come next.

    ``mask()`` is bool ``[n_vocab]``; an end-of-generation token is allowed exactly where the
    output is complete, and after one only end-of-generation tokens are. ``consume`` raises
    GrammarError for a token the mask disallows (the state is then unchanged).
    ``rollback(n)`` forgets the last ``n`` consumed tokens (at most MAX_ROLLBACK).
    End-of-generation tokens are kept here and never given to llguidance, whose rollback
    over them does not restore the state.
    """

    def __init__(self, constraint: Constraint) -> None:
        self.constraint = constraint
        self.n_vocab = constraint.vocab.n_vocab
        self._eog = frozenset(constraint.vocab.eog)
        self._m = llg.LLMatcher(constraint.vocab.tokenizer, constraint.grammar, log_level=0)
        self._words = np.empty((self.n_vocab + 31) // 32, dtype=np.int32)
        self._ended: list[bool] = []  # per consumed token: whether the output had ended by then
        self._raise_if_error()

    @property
    def n_consumed(self) -> int:
        return len(self._ended)

    @property
    def ended(self) -> bool:
        return bool(self._ended) and self._ended[-1]

    def mask(self) -> np.ndarray:
        """bool ``[n_vocab]``: the tokens that may come next."""
        if self.ended:
            out = np.zeros(self.n_vocab, dtype=bool)
            out[list(self._eog)] = True
            return out
        self._m.unsafe_compute_mask_ptr(self._words.ctypes.data, self._words.nbytes)
        self._raise_if_error()
        bits = np.unpackbits(self._words.view(np.uint8), bitorder="little")
        return bits[:self.n_vocab].astype(bool)

    def allows(self, token: int) -> bool:
        """Whether ``token`` may come next (without changing the state)."""
        if int(token) in self._eog:
            return self.ended or self.is_accepting
        return not self.ended and self._m.validate_tokens([int(token)]) == 1

    def forced_tokens(self, limit: int) -> list[int]:
        """Up to ``limit`` tokens the constraint forces next (a JSON key, ``", "``...), in the
        tokenizer's canonical spelling; [] where the model has a choice."""
        if self.ended or limit <= 0:
            return []
        return [int(t) for t in self._m.compute_ff_tokens()[:limit]]

    def count_allowed(self, tokens: list[int]) -> int:
        """How many leading ``tokens`` the constraint allows in sequence (the state is unchanged)."""
        n = 0
        for tok in tokens:
            if n >= MAX_ROLLBACK or not self.allows(tok):
                break
            self.consume(tok)
            n += 1
        self.rollback(n)
        return n

    def consume(self, token: int) -> None:
        token = int(token)
        if not self.allows(token):
            raise GrammarError(f"token {token} is not allowed here by the {self.constraint.source}")
        if token in self._eog:
            self._ended.append(True)
            return
        self._m.consume_token(token)
        self._raise_if_error()
        self._ended.append(False)

    def rollback(self, n: int) -> None:
        assert 0 <= n <= min(self.n_consumed, MAX_ROLLBACK), f"cannot roll back {n} of {self.n_consumed} tokens"
        if n == 0:
            return
        undone = self._ended[-n:]
        del self._ended[-n:]
        real = undone.count(False)
        if real:
            self._m.rollback(real)
            self._raise_if_error()

    @property
    def is_accepting(self) -> bool:
        """Whether the output so far is complete (it may also continue)."""
        return self.ended or bool(self._m.is_accepting())

    @property
    def is_stopped(self) -> bool:
        """Whether nothing but the end of generation may follow."""
        return self.ended or bool(self._m.is_stopped())

    def _raise_if_error(self) -> None:
        if self._m.is_error():
            raise GrammarError(f"{self.constraint.source}: {self._m.get_error()}")
