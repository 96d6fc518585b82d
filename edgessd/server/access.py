"""Who may call the API: API keys on /v1/* (as llama-server's --api-key and --api-key-file), and CORS origins."""
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
    """Answers 401 (OpenAI's error shape) to a request for /v1/* that carries none of the keys,
    as ``Authorization: Bearer <key>`` or ``X-Api-Key: <key>`` (both as llama-server). OPTIONS
    passes: a browser's preflight carries no key."""

    def __init__(self, app: ASGIApp, keys: tuple[str, ...]) -> None:
        self.app = app
        self.keys = [k.encode() for k in keys]

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
            given = None
            if name == b"authorization":
                scheme, _, rest = value.partition(b" ")
                given = rest.strip() if scheme.lower() == b"bearer" else None
            elif name == b"x-api-key":
                given = value.strip()
            # compare with every key, so the time taken does not say which one nearly matched
            if given is not None and sum(hmac.compare_digest(given, k) for k in self.keys):
                return True
        return False


def read_keys(keys: str | None, key_file: str | None) -> tuple[str, ...]:
    """The keys of --api-key (comma-separated, as llama-server) and --api-key-file (one per line)."""
    from pathlib import Path

    from ..errors import InvalidArgumentError

    found = [k.strip() for k in (keys or "").split(",") if k.strip()]
    if key_file is not None:
        try:
            lines = Path(key_file).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise InvalidArgumentError(f"cannot read the API key file {key_file}: {e}") from None
        from_file = [line.strip() for line in lines if line.strip()]
        if not from_file:
            raise InvalidArgumentError(f"the API key file {key_file} holds no key")
        found += from_file
    return tuple(dict.fromkeys(found))


def middleware(api_keys: tuple[str, ...], cors_origins: tuple[str, ...]) -> list[Middleware]:
    """The app's middleware, outermost first: CORS (so a 401 carries its headers too), then the key."""
    stack = []
    if cors_origins:
        stack.append(Middleware(CORSMiddleware, allow_origins=list(cors_origins),
                                allow_methods=["GET", "POST", "OPTIONS"],
                                allow_headers=["Authorization", "Content-Type", "X-Api-Key"]))
    if api_keys:
        stack.append(Middleware(ApiKeyMiddleware, keys=api_keys))
    return stack


def is_loopback(address: str) -> bool:
    """Whether a bound socket's address (an IP, never a name) is reachable only from this machine."""
    try:
        return ipaddress.ip_address(address.split("%")[0]).is_loopback
    except ValueError:
        return False
