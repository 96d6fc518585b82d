"""Listening and running: a bound socket first (so a taken port is a clean error), then uvicorn."""
from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

import uvicorn
from starlette.applications import Starlette
from uvicorn.protocols.http.h11_impl import H11Protocol

from ..errors import EdgessdError


class ServeError(EdgessdError):
    """The server cannot start: the address is taken, or not one this machine has."""


def listen(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: a free one), or a ServeError saying why not."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError as e:
        sock.close()
        raise ServeError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    return sock


class HaltingServer(uvicorn.Server):
    """uvicorn's server that also calls ``on_exit`` on Ctrl-C / SIGTERM, before uvicorn waits
    for open connections: the worker cancels the running generation, so its stream ends
    cleanly at once instead of being cut off when the graceful-shutdown time runs out."""

    def __init__(self, config: uvicorn.Config, *, on_exit: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_exit = on_exit

    def handle_exit(self, sig: int, frame: object) -> None:
        self._on_exit()
        super().handle_exit(sig, frame)


class LingeringTransport:
    """A transport whose ``close()`` is a lingering close: it sends what was written, then a FIN,
    and reads and drops whatever the client still sends for ``linger_s`` before closing.

    A plain close with unread request bytes in the socket makes the kernel answer with a reset,
    which can destroy a response the client has not read yet: a 413 refused from Content-Length
    before its body was read came back as "connection reset" now and then (RFC 9112 §9.6)."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop, linger_s: float) -> None:
        self._transport = transport
        self._loop = loop
        self._linger_s = linger_s
        self.lingering = False

    def __getattr__(self, name: str):
        return getattr(self._transport, name)

    def is_closing(self) -> bool:
        return self.lingering or self._transport.is_closing()

    def close(self) -> None:
        t = self._transport
        if self.lingering or t.is_closing():
            return
        if not t.can_write_eof():
            t.close()
            return
        self.lingering = True
        t.write_eof()        # after the buffered response
        t.resume_reading()   # uvicorn may have paused reading on an unread body: drain it instead
        self._loop.call_later(self._linger_s, t.close)

    def close_now(self) -> None:
        self._transport.close()


class HeadDeadlineProtocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for each request's head, and lingering closes.

    uvicorn waits forever for a client that connects and sends nothing, or sends its headers a
    byte at a time; here such a connection is closed ``head_timeout_s`` seconds after it opened,
    or after its last response. (The body has its own deadline in app.read_body; a slow reader
    of a reply never holds the engine: the worker finishes, and the text waits in memory.)"""

    head_timeout_s: float = 30.0
    linger_s: float = 1.0

    def connection_made(self, transport) -> None:  # noqa: ANN001 - asyncio's signature
        super().connection_made(LingeringTransport(transport, self.loop, self.linger_s))
        self._head_scope = self.scope
        self._deadline = None
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self.transport.lingering:
            return  # the rest of a body nobody reads, after the response and our FIN
        super().data_received(data)
        if self.scope is not self._head_scope:  # a request's head arrived: its deadline is met
            self._head_scope = self.scope
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.scope is not self._head_scope:  # a pipelined request started at once
            self._head_scope = self.scope
        elif not self.transport.is_closing():
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.head_timeout_s, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.close_now()  # no response to protect: the client never finished asking


def run(app: Starlette, sock: socket.socket, *, client_timeout_s: float | None = 30.0) -> None:
    """Serve ``app`` (from :func:`~edgessd.server.app.create_app`) on ``sock`` until a signal.

    client_timeout_s: how long a client may take to send a request's head (None: forever)."""
    protocol = type("HeadDeadline", (HeadDeadlineProtocol,), {"head_timeout_s": client_timeout_s or 1e9})
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=5, http=protocol)
    try:
        HaltingServer(config, on_exit=app.state.worker.halt).run(sockets=[sock])
    finally:
        sock.close()
