"""Listening and running: a bound socket first (so a taken port is a clean error), then uvicorn."""
from __future__ import annotations

import socket
from collections.abc import Callable

import uvicorn
from starlette.applications import Starlette

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


def run(app: Starlette, sock: socket.socket) -> None:
    """Serve ``app`` (from :func:`~edgessd.server.app.create_app`) on ``sock`` until a signal."""
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=5)
    try:
        HaltingServer(config, on_exit=app.state.worker.halt).run(sockets=[sock])
    finally:
        sock.close()
