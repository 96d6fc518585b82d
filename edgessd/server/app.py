"""The HTTP routes: OpenAI's completions and chat completions, models, and a health check.

    POST /v1/chat/completions   POST /v1/completions   (streamed as SSE with "stream": true)
    GET  /v1/models             GET  /health

With an API key, every /v1/* request needs ``Authorization: Bearer <key>`` (else a 401);
/health and CORS preflights stay open (see access.py).

Every error, a bad body or an unknown route included, is JSON in OpenAI's shape:
``{"error": {"message", "type", "code", "param"}}``. A streamed response starts only once
the engine has accepted the request, so a prompt too long for the context is a 400 like
any other, not an error in the middle of a stream.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from ..engine import Engine
from .access import middleware
from .schema import ApiError, Defaults, parse_json, parse_request
from .shapes import Outcome, Shapes, models_list
from .structured import parse_structured
from .tools import parse_calls, with_history
from .tools import render as render_tools
from .worker import Event, Job, Worker


@dataclass
class ServerConfig:
    """How ``edgessd serve`` runs: limits, request defaults, fixed engine settings."""

    model_id: str                       # the name responses report (a registry name or a file name)
    created: int = 0                    # /v1/models "created": the model file's mtime
    defaults: Defaults = field(default_factory=Defaults)
    queue_size: int = 16                # requests that may wait behind the running one; more get 503
    max_body: int = 1 << 20             # bytes; a larger request body is a 413
    timeout_s: float | None = 300.0     # the longest one generation runs; None: no limit
    client_timeout_s: float | None = 30.0  # the longest a client may take to send its body (then 408)
    engine_kwargs: dict = field(default_factory=dict)  # skip, draft_max: the same for every request
    api_keys: tuple[str, ...] = ()      # one of them required on /v1/* (Bearer or X-Api-Key); (): open
    cors_origins: tuple[str, ...] = ()  # origins a browser may call from; (): no CORS headers at all


def create_app(engine: Engine, config: ServerConfig) -> Starlette:
    """A Starlette app serving ``engine``; its worker thread runs while the app does."""
    worker = Worker(engine, queue_size=config.queue_size, timeout_s=config.timeout_s)
    api = Api(engine, worker, config)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        worker.start()
        try:
            yield
        finally:
            worker.stop()

    routes = [Route("/v1/chat/completions", api.chat, methods=["POST"]),
              Route("/v1/completions", api.completions, methods=["POST"]),
              Route("/v1/models", api.models, methods=["GET"]),
              Route("/health", api.health, methods=["GET"])]
    handlers = {ApiError: api_error, HTTPException: http_error, ClientDisconnect: client_gone,
                Exception: internal_error}
    app = Starlette(routes=routes, exception_handlers=handlers, lifespan=lifespan,
                    middleware=middleware(config.api_keys, config.cors_origins))
    app.state.worker = worker
    return app


class Api:
    """The route handlers, over one engine and its worker."""

    def __init__(self, engine: Engine, worker: Worker, config: ServerConfig) -> None:
        self.engine = engine
        self.worker = worker
        self.config = config

    async def health(self, _request: Request) -> Response:
        return JSONResponse({"status": "ok", "model": self.config.model_id, "queue": self.worker.depth(),
                             "requests": dict(self.worker.counts)})

    async def models(self, _request: Request) -> Response:
        return JSONResponse(models_list(self.config.model_id, self.config.created))

    async def chat(self, request: Request) -> Response:
        return await self._generate(request, "chat")

    async def completions(self, request: Request) -> Response:
        return await self._generate(request, "completion")

    async def _generate(self, request: Request, kind: str) -> Response:
        body = parse_json(await read_body(request, self.config.max_body, self.config.client_timeout_s))
        req = parse_request(body, kind, self.config.defaults, n_ctx=self.engine.ctx.n_ctx)
        structured = parse_structured(body, kind, self.engine)
        params = {**req.engine_kwargs(), **structured.engine_kwargs(), **self.config.engine_kwargs}
        prompt = req.prompt
        if structured.tools is not None:
            prompt = render_tools(self.engine, with_history(body["messages"], req.prompt), structured.tools)
        job = Job(prompt=prompt, params=params, stops=req.stop, loop=asyncio.get_running_loop())
        tools = structured.tools.names if structured.tools is not None else None
        self.worker.submit(job)
        shapes = Shapes(kind, self.config.model_id, self.engine.model.token_bytes)
        watcher = asyncio.create_task(watch_disconnect(request, job))
        streaming = False
        try:
            first = await job.next()  # the first piece, or the engine's verdict on the request
            if first.kind == "error":
                raise first.value
            if first.kind == "gone":
                return Response(status_code=499)  # nobody is there to read it
            if req.stream:
                streaming = True
                return EventStream(sse_events(job, first, shapes, include_usage=req.include_usage, tools=tools),
                                   on_close=job.abandon)
            outcome = await collect(job, first)
            if outcome is None:
                return Response(status_code=499)
            if tools:
                with_calls(outcome, tools)
            return JSONResponse(shapes.response(outcome))
        finally:
            watcher.cancel()
            if not streaming:
                job.abandon()  # a no-op for a finished job; stops one whose client left or failed


async def read_body(request: Request, limit: int, timeout_s: float | None = None) -> bytes:
    """The request body, refused with a 413 as soon as it is known to exceed ``limit`` bytes
    (from Content-Length before reading any of it, else while reading), and with a 408 if it
    has not all arrived ``timeout_s`` seconds after the headers (a stalled or trickling client)."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise too_large(limit)

    async def read() -> bytes:
        data = bytearray()
        async for chunk in request.stream():
            data += chunk
            if len(data) > limit:
                raise too_large(limit)
        return bytes(data)

    try:
        return await asyncio.wait_for(read(), timeout_s)
    except asyncio.TimeoutError:
        raise ApiError(408, f"the request body did not arrive within {timeout_s:g} s",
                       code="request_timeout") from None


def too_large(limit: int) -> ApiError:
    return ApiError(413, f"the request body is larger than {limit} bytes", code="request_too_large")


async def watch_disconnect(request: Request, job: Job) -> None:
    """Abandon ``job`` when the client disconnects (the body has been read: the next
    message the server gets is the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
    job.abandon()


async def collect(job: Job, event: Event) -> Outcome | None:
    """Wait for the job's outcome, skipping its text events; None if the client left."""
    while event.kind == "text":
        event = await job.next()
    if event.kind == "error":
        raise event.value
    return event.value if event.kind == "done" else None


def with_calls(outcome: Outcome, names: set[str]) -> None:
    """Parse the reply for calls of the tools ``names``: they go to ``tool_calls``, finish_reason ``tool_calls``."""
    rest, calls = parse_calls(outcome.text, names)
    if calls:
        outcome.text, outcome.tool_calls, outcome.finish_reason = rest or "", calls, "tool_calls"


async def sse_events(job: Job, first: Event, shapes: Shapes, *, include_usage: bool,
                     tools: set[str] | None = None) -> AsyncIterator[str]:
    """Server-sent events: OpenAI's chunks, then ``data: [DONE]``; an error mid-stream is
    one ``data: {"error": ...}`` event and the end of the stream. With tools, the reply is held
    to the end and sent as one text chunk or as its tool calls."""
    head = shapes.first_chunk()
    if head is not None:
        yield sse(head)
    event = first
    while True:
        if event.kind == "text" and tools is None:
            yield sse(shapes.text_chunk(event.value))
        elif event.kind == "text":
            pass  # collected into the outcome's text
        elif event.kind == "done" and tools is not None:
            with_calls(event.value, tools)
            if event.value.text:
                yield sse(shapes.text_chunk(event.value.text))
            if event.value.tool_calls:
                yield sse(shapes.tool_calls_chunk(event.value.tool_calls))
            for chunk in shapes.final_chunks(event.value, include_usage=include_usage):
                yield sse(chunk)
            yield "data: [DONE]\n\n"
            return
        elif event.kind == "done":
            for chunk in shapes.final_chunks(event.value, include_usage=include_usage):
                yield sse(chunk)
            yield "data: [DONE]\n\n"
            return
        elif event.kind == "error":
            yield sse(event.value.body())
            return
        else:
            return
        event = await job.next()


def sse(obj: dict) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


class EventStream(StreamingResponse):
    """A text/event-stream response that calls ``on_close`` however it ends: done, client
    gone (the stream task is cancelled, or a send fails), or an error."""

    media_type = "text/event-stream"

    def __init__(self, content: AsyncIterator[str], *, on_close: Callable[[], None]) -> None:
        super().__init__(content, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._on_close()


# -- errors as JSON ---------------------------------------------------------------------------------
async def api_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    headers = {"Connection": "close"} if exc.status in (408, 413) else None  # the rest of the body stays unread
    return JSONResponse(exc.body(), status_code=exc.status, headers=headers)


async def http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own errors (no such route, wrong method) in OpenAI's shape."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        err = ApiError(404, f"no route {request.method} {request.url.path}", code="not_found")
    elif exc.status_code == 405:
        allow = (exc.headers or {}).get("Allow", "")
        err = ApiError(405, f"{request.method} is not allowed on {request.url.path} (allowed: {allow})",
                       code="method_not_allowed")
    else:
        err = ApiError(exc.status_code, str(exc.detail), code=f"http_{exc.status_code}")
    return JSONResponse(err.body(), status_code=err.status, headers=exc.headers)


async def client_gone(_request: Request, _exc: Exception) -> Response:
    return Response(status_code=499)  # the client left while sending its body


async def internal_error(_request: Request, exc: Exception) -> Response:
    err = ApiError(500, f"internal error: {type(exc).__name__}: {exc}", type="server_error", code="internal_error")
    return JSONResponse(err.body(), status_code=500)
