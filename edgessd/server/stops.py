"""Stop strings for streamed text: emit what is safe, hold back what may start a stop string."""
from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..engine import GenerationResult


class StopScanner:
    """Cuts streamed text at the first stop string.

    Text that might be the beginning of a stop string is held back until the next piece
    settles it, so no part of a stop string is ever emitted. For example, with stops
    ``["\\n\\n"]``, feeding ``"a\\n"`` emits ``"a"`` and holds ``"\\n"``; feeding ``"\\nb"``
    then finds the stop, emits nothing more, and sets :attr:`stopped`.
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = [s for s in stops if s]
        self.stopped = False
        self._held = ""

    def feed(self, piece: str) -> str:
        """The part of ``piece`` (after any held text) that can be emitted now; "" once stopped."""
        if self.stopped:
            return ""
        text = self._held + piece
        cut = min((i for i in (text.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            self._held = ""
            return text[:cut]
        keep = _longest_partial(text, self.stops)
        self._held = text[len(text) - keep:] if keep else ""
        return text[:len(text) - keep]

    def flush(self) -> str:
        """The held text, once generation has ended without a stop string."""
        held, self._held = self._held, ""
        return "" if self.stopped else held


class StopCut:
    """:meth:`Engine.stream`'s items cut at the first stop string: what ``generate -r`` and the
    server's worker both run.

    :meth:`pieces` yields ``(text, logprobs)``: text that is safe to emit, and the log-probs of
    the tokens it completes (those of held-back text come with a later piece). At a stop it
    sets ``cancel``, so the engine ends the reply after its current cycle, and drops what it
    still yields. Afterwards :attr:`result` is the engine's result and :attr:`stopped` says
    whether a stop string ended the reply.
    """

    def __init__(self, stops: Sequence[str], cancel: threading.Event) -> None:
        self._scanner = StopScanner(stops)
        self._cancel = cancel
        self.result: GenerationResult | None = None

    @property
    def stopped(self) -> bool:
        return self._scanner.stopped

    def pieces(self, items: Iterable) -> Iterator[tuple[str, list]]:
        held: list = []
        for item in items:
            if not isinstance(item, str):
                self.result = item
                continue
            held.extend(getattr(item, "logprobs", None) or [])
            text = self._scanner.feed(item)
            if text:
                yield text, held
                held = []
            if self._scanner.stopped:
                self._cancel.set()
        tail = self._scanner.flush()
        if tail or (held and not self._scanner.stopped):
            yield tail, held
        assert self.result is not None, "Engine.stream always ends with a result"


def _longest_partial(text: str, stops: Sequence[str]) -> int:
    """The length of the longest suffix of ``text`` that is a proper prefix of a stop string.

    _longest_partial("say hel", ["hello"]) == 3
    """
    best = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), best, -1):
            if text.endswith(stop[:k]):
                best = k
                break
    return best
