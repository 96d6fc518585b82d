"""One engine, one thread: requests wait in a bounded queue and run one at a time.

:meth:`Engine.stream` is a blocking generator, so it runs on the worker thread, never on
the event loop. Each :class:`Job` hands its events to the async side through an
``asyncio.Queue`` (``loop.call_soon_threadsafe``); the queue is unbounded, so a client that
reads slowly never holds the engine: the generation finishes and its text waits in memory
(at most ``max_tokens`` tokens). A client that goes away sets the job's cancel event, which
the engine checks every cycle, and a job cancelled while it waits is skipped.
"""
from __future__ import annotations

import asyncio
import queue
import threading
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..engine import Engine, Piece, Prompt
from ..errors import EdgessdError
from .schema import ApiError
from .shapes import Outcome, finish_reason
from .stops import StopCut


@dataclass
class Event:
    """What a job reports: ``text`` (a piece of the reply), ``done`` (an :class:`Outcome`),
    ``error`` (an :class:`ApiError`) or ``gone`` (the client left; nothing more will be read)."""

    kind: str
    value: Any = None


@dataclass
class Job:
    """One generation request on its way through the worker."""

    prompt: Prompt
    params: dict                   # Engine.stream keyword arguments
    stops: list[str]
    loop: asyncio.AbstractEventLoop
    cancel: threading.Event = field(default_factory=threading.Event)
    timed_out: bool = False
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    on_abandon: Callable[[Job], None] | None = None  # the worker's: give back a waiting job's queue slot
    holds_slot: bool = False  # counted in the worker's queue bound (changed under the worker's lock)

    def emit(self, kind: str, value: Any = None) -> None:
        """Hand an event to the async side (called on the worker thread)."""
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, Event(kind, value))
        except RuntimeError:  # the event loop is gone (server shutting down): nobody is listening
            self.cancel.set()

    async def next(self) -> Event:
        return await self.events.get()

    def abandon(self) -> None:
        """The client went away (called on the event loop): stop generating, stop waiting, and
        if the job is still waiting, free its place in the queue at once."""
        self.cancel.set()
        self.events.put_nowait(Event("gone"))
        if self.on_abandon is not None:
            self.on_abandon(self)

    def expire(self) -> None:
        """The server's time limit for one generation ran out (called on a timer thread)."""
        self.timed_out = True
        self.cancel.set()


class QueueFull(ApiError):
    def __init__(self, size: int) -> None:
        super().__init__(503, f"the server is busy: {size} requests are already waiting; retry later",
                         type="server_error", code="queue_full")


class Worker:
    """Runs jobs on one thread, in arrival order; at most ``queue_size`` wait behind the one running.

    timeout_s: the longest one generation may run (None: no limit); it then ends with
    finish_reason "length". counts: completed, cancelled, timed_out, rejected, failed, errors.
    """

    def __init__(self, engine: Engine, *, queue_size: int = 16, timeout_s: float | None = None) -> None:
        self.engine = engine
        self.queue_size = queue_size
        self.timeout_s = timeout_s
        self.counts: Counter[str] = Counter()
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._admitted = 0     # waiting + running
        self._running: Job | None = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="edgessd-worker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def halt(self) -> None:
        """Begin shutting down: cancel the running job (its stream ends at once, finish_reason
        "length"); each waiting job gets a 503. Takes no lock, so a signal handler may call it:
        it sets the flag, then reads the running job, while the worker sets the running job,
        then reads the flag; one of the two sees the other."""
        self._stopping.set()
        running = self._running
        if running is not None:
            running.cancel.set()

    def stop(self, timeout: float = 5.0) -> None:
        """Halt, and end the thread."""
        self.halt()
        self._jobs.put(None)
        self._thread.join(timeout)

    def submit(self, job: Job) -> None:
        """Queue ``job``, or raise :class:`QueueFull` (a 503) when ``queue_size`` already wait."""
        with self._lock:
            if self._admitted > self.queue_size:
                self.counts["rejected"] += 1
                raise QueueFull(self.queue_size)
            self._admitted += 1
            job.holds_slot = True
        job.on_abandon = self._release_waiting
        self._jobs.put(job)

    def _release_waiting(self, job: Job) -> None:
        """A waiting job's client left: give its slot back now, not when the worker reaches it
        (a queue full of abandoned jobs would refuse live clients with 503 meanwhile). A running
        job keeps its slot until it stops; a finished one has none."""
        with self._lock:
            if job.holds_slot and job is not self._running:
                job.holds_slot = False
                self._admitted -= 1
                self.counts["cancelled"] += 1

    def depth(self) -> dict:
        """``{"running": 0|1, "waiting": n, "size": queue_size}``."""
        with self._lock:
            running = int(self._running is not None)
            return {"running": running, "waiting": self._admitted - running, "size": self.queue_size}

    def _loop(self) -> None:
        while (job := self._jobs.get()) is not None:
            with self._lock:
                if not job.holds_slot:  # its client left while it waited; its slot is already free
                    continue
                self._running = job
            try:
                if self._stopping.is_set():
                    job.emit("error", ApiError(503, "the server is shutting down", type="server_error",
                                               code="shutting_down"))
                elif job.cancel.is_set():  # cancelled while it waited, by other means than abandon()
                    self.counts["cancelled"] += 1
                else:
                    self._run(job)
            finally:
                with self._lock:
                    self._running = None
                    job.holds_slot = False
                    self._admitted -= 1

    def _run(self, job: Job) -> None:
        timer = threading.Timer(self.timeout_s, job.expire) if self.timeout_s else None
        if timer:
            timer.daemon = True
            timer.start()
        try:
            outcome = self._generate(job)
        except EdgessdError as e:  # the engine's own message: prompt too long, bad value...
            self.counts["failed"] += 1
            job.emit("error", ApiError(400, str(e), code=type(e).__name__))
        except Exception as e:  # noqa: BLE001 - report it to this client; the server stays up
            traceback.print_exc()
            self.counts["errors"] += 1
            job.emit("error", ApiError(500, f"internal error: {type(e).__name__}: {e}", type="server_error",
                                       code="internal_error"))
        else:
            key = ("timed_out" if outcome.timed_out else
                   "cancelled" if outcome.result.stop_reason == "cancelled" and outcome.finish_reason != "stop"
                   else "completed")
            self.counts[key] += 1
            job.emit("done", outcome)
        finally:
            if timer:
                timer.cancel()

    def _generate(self, job: Job) -> Outcome:
        cut = StopCut(job.stops, job.cancel)
        pieces: list[str] = []
        sent: list | None = [] if job.params.get("logprobs") is not None else None
        for text, logprobs in cut.pieces(self.engine.stream(job.prompt, cancel=job.cancel, **job.params)):
            pieces.append(text)
            job.emit("text", _with_logprobs(text, logprobs, sent))
        result = cut.result
        timed_out = job.timed_out and result.stop_reason == "cancelled" and not cut.stopped
        reason = finish_reason(result.stop_reason, stopped=cut.stopped)
        return Outcome(text="".join(pieces), finish_reason=reason, result=result, timed_out=timed_out, logprobs=sent)


def _with_logprobs(text: str, logprobs: list, sent: list | None) -> str:
    """``text`` carrying its tokens' logprobs when the request asked for them (``sent`` collects them)."""
    if sent is None:
        return text
    piece = Piece(text)
    piece.logprobs = logprobs
    sent.extend(logprobs)
    return piece
