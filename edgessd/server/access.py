"""Who may call the API: an API key on /v1/* (as llama-server's --api-key), and CORS origins."""
from __future__ import annotations

import hmac
import ipaddress
import json

from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from .schema import ApiError

PROTECTED = "/v1/"  # /health stays open, as llama-server's does


class ApiKeyMiddleware:
    """Answers 401 (OpenAI's error shape) to a request for /v1/* that lacks
    ``Authorization: Bearer <key>``. OPTIONS passes: a browser's preflight carries no key."""

    def __init__(self, app: ASGIApp, key: str) -> None:
        self.app = app
        self.key = key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] != "http" or scope["method"] == "OPTIONS" or not scope["path"].startswith(PROTECTED)
                or self.authorized(scope)):
            await self.app(scope, receive, send)
            return
        err = ApiError(401, "Invalid API Key", type="authentication_error", code="invalid_api_key")
        body = json.dumps(err.body()).encode()
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"www-authenticate", b"Bearer")]})
        await send({"type": "http.response.body", "body": body})

    def authorized(self, scope: Scope) -> bool:
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, given = value.partition(b" ")
                return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), self.key)
        return False


def middleware(api_key: str | None, cors_origins: tuple[str, ...]) -> list[Middleware]:
    """The app's middleware, outermost first: CORS (so a 401 carries its headers too), then the key."""
    stack = []
    if cors_origins:
        stack.append(Middleware(CORSMiddleware, allow_origins=list(cors_origins),
                                allow_methods=["GET", "POST", "OPTIONS"],
                                allow_headers=["Authorization", "Content-Type"]))
    if api_key:
        stack.append(Middleware(ApiKeyMiddleware, key=api_key))
    return stack


def is_loopback(address: str) -> bool:
    """Whether a bound socket's address (an IP, never a name) is reachable only from this machine."""
    try:
        return ipaddress.ip_address(address.split("%")[0]).is_loopback
    except ValueError:
        return False
