"""Stop strings for streamed text: emit what is safe, hold back what may start a stop string."""
from __future__ import annotations

from collections.abc import Sequence


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
