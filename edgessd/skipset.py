"""A set of skipped sublayers, and its readable spec form.

Spec grammar: ``attn:3,5,7;mlp:4-9`` — groups separated by ``;``, each a
sublayer kind (``attn``, or ``mlp``/``ffn``) then ``:`` and comma-separated
layer indices or inclusive ranges ``a-b``. ``none`` or an empty string is the
empty set (the full model).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from .errors import InvalidArgumentError

SKIP_ATTN = 1  # must match LLAMA_LAYER_SKIP_ATTN in patches/0001-layer-skip.patch
SKIP_FFN = 2   # LLAMA_LAYER_SKIP_FFN

_KINDS = {"attn": "attn", "attention": "attn", "mlp": "mlp", "ffn": "mlp"}
# ASCII digits only (\d also takes other scripts' digits), and at most 9 of them: no layer index is
# longer, and int() refuses strings of more than 4300 digits with a ValueError of its own
_ITEM = re.compile(r"^\s*([0-9]{1,9})\s*(?:-\s*([0-9]{1,9})\s*)?$")


@dataclass(frozen=True)
class SkipSet:
    """Skipped attention and MLP sublayers, as sorted layer indices."""

    attn: tuple[int, ...] = ()
    mlp: tuple[int, ...] = ()

    @staticmethod
    def of(attn=(), mlp=()) -> SkipSet:
        return SkipSet(tuple(sorted(set(int(i) for i in attn))), tuple(sorted(set(int(i) for i in mlp))))

    @property
    def empty(self) -> bool:
        return not self.attn and not self.mlp

    @property
    def n_skipped(self) -> int:
        """Number of skipped sublayers (attention and MLP counted separately)."""
        return len(self.attn) + len(self.mlp)

    def flags(self, n_layer: int) -> np.ndarray:
        """The C API's mask: uint8 ``[n_layer]`` of SKIP_ATTN | SKIP_FFN. Checks the indices."""
        self.check(n_layer)
        out = np.zeros(n_layer, dtype=np.uint8)
        out[list(self.attn)] |= SKIP_ATTN
        out[list(self.mlp)] |= SKIP_FFN
        return out

    @staticmethod
    def from_flags(flags: np.ndarray) -> SkipSet:
        f = np.asarray(flags)
        return SkipSet.of(np.flatnonzero(f & SKIP_ATTN), np.flatnonzero(f & SKIP_FFN))

    def check(self, n_layer: int) -> None:
        bad = [i for i in self.attn + self.mlp if not 0 <= i < n_layer]
        if bad:
            raise InvalidArgumentError(f"skip spec names layer {bad[0]}, but the model has layers 0-{n_layer - 1}")

    def spec(self) -> str:
        """The readable form, e.g. ``attn:3,5;mlp:4-9`` (``none`` when empty)."""
        parts = [f"{k}:{_ranges(v)}" for k, v in (("attn", self.attn), ("mlp", self.mlp)) if v]
        return ";".join(parts) or "none"

    def to_json(self) -> dict[str, list[int]]:
        return {"attn": list(self.attn), "mlp": list(self.mlp)}

    def __str__(self) -> str:
        return self.spec()


def parse_skip_spec(text: str) -> SkipSet:
    """Parse ``attn:3,5,7;mlp:4-9`` into a SkipSet; InvalidArgumentError with the reason if malformed."""
    if not isinstance(text, str):
        raise InvalidArgumentError(f"skip spec must be a string, got {type(text).__name__}")
    text = text.strip()
    shown = repr(text) if len(text) <= 80 else repr(text[:77] + "...")
    if text.lower() in ("", "none"):
        return SkipSet()
    groups: dict[str, set[int]] = {"attn": set(), "mlp": set()}
    for group in text.split(";"):
        if not group.strip():
            continue
        kind, sep, items = group.partition(":")
        key = _KINDS.get(kind.strip().lower())
        if not sep or key is None:
            raise InvalidArgumentError(f"malformed skip spec {shown}: expected groups like 'attn:3,5' or 'mlp:4-9'")
        for item in items.split(","):
            m = _ITEM.match(item)
            if not m:
                raise InvalidArgumentError(f"malformed skip spec {shown}: {item.strip()[:40]!r} is not a layer "
                                           "or range")
            lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
            if hi < lo or hi - lo > 4096:
                raise InvalidArgumentError(f"malformed skip spec {shown}: bad range {item.strip()!r}")
            groups[key].update(range(lo, hi + 1))
    return SkipSet.of(groups["attn"], groups["mlp"])


def _ranges(idx: tuple[int, ...]) -> str:
    out, i = [], 0
    while i < len(idx):
        j = i
        while j + 1 < len(idx) and idx[j + 1] == idx[j] + 1:
            j += 1
        out.append(str(idx[i]) if j - i < 2 else f"{idx[i]}-{idx[j]}")
        if j - i == 1:
            out.append(str(idx[j]))
        i = j + 1
    return ",".join(out)
