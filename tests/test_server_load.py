"""`edgessd serve` under load, on loopback: a thousand malformed requests, a hundred streaming
clients at once, clients that leave, clients that stall. The real CLI in a subprocess, the
real model, httpx.

Each of the hundred clients sends a prompt with its own first token, so the server's engine
never reuses another client's KV cache and its greedy reply must equal, token for token,
what a separate Engine says for that prompt alone: a reply that went to the wrong client,
or mixed two, cannot pass.
"""
from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
import time

import httpx
import pytest
from test_server import COUNTING, MODEL, N_CTX, Server, reference

MAX_TOKENS = 8


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("load"), "--queue-size", "2", "--max-body", "65536", "--client-timeout", "1.5")
    yield s
    s.close()


@pytest.fixture(scope="module")
def engine():
    from edgessd import Engine

    eng = Engine(MODEL, n_ctx=N_CTX, n_threads=1)
    yield eng
    eng.close()


# -- a thousand malformed requests -------------------------------------------------------------------------
def malformed_requests() -> list[tuple[str, str, dict]]:
    """(method, path, httpx keyword arguments): bad JSON, wrong types, bodies over the limit, no such route."""
    bad_json = [b"{", b"nul", b'{"prompt": "x"', b"\xff\xfe\x00\x01", b"", b'{"prompt": "a",}', b"[" * 20_000,
                b'{"prompt": "x"} trailing', b"NaN", b'"just a string"']
    wrong_types = [
        {"prompt": 42}, {"prompt": None}, {"prompt": ["a", "b"]}, {"prompt": {"text": "hi"}},
        {"prompt": "hi", "max_tokens": "8"}, {"prompt": "hi", "max_tokens": -1}, {"prompt": "hi", "max_tokens": 1.5},
        {"prompt": "hi", "temperature": [1]}, {"prompt": "hi", "temperature": -1}, {"prompt": "hi", "top_p": 2},
        {"prompt": "hi", "top_p": "x"}, {"prompt": "hi", "top_k": -5}, {"prompt": "hi", "stream": "yes"},
        {"prompt": "hi", "stop": 5}, {"prompt": "hi", "stop": ["a"] * 40}, {"prompt": "hi", "mode": "warp"},
        {"prompt": "hi", "n": 3}, {"prompt": "hi", "seed": "abc"}, {"prompt": "hi", "stream_options": [1]},
        {"prompt": "hi", "model": 5},
    ]
    chat_wrong = [{"messages": "hi"}, {"messages": []}, {"messages": [{"role": 1, "content": "x"}]},
                  {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, {"prompt": "no messages"}]
    huge = b'{"prompt": "' + b"a" * 70_000 + b'"}'
    out: list[tuple[str, str, dict]] = []
    out += [("POST", "/v1/completions", {"content": b}) for b in bad_json]
    out += [("POST", "/v1/completions", {"json": b}) for b in wrong_types]
    out += [("POST", "/v1/chat/completions", {"json": b}) for b in chat_wrong]
    out += [("POST", "/v1/completions", {"content": huge}),
            ("POST", "/v1/chat/completions", {"content": iter([huge[:40_000], huge[40_000:]])})]  # chunked, no length
    out += [("GET", "/v2/models", {}), ("POST", "/v1/embeddings", {"json": {"input": "x"}}), ("GET", "/admin", {}),
            ("GET", "/v1/completions", {}), ("DELETE", "/v1/models", {}), ("PUT", "/health", {}),
            ("GET", "/%2e%2e/%2e%2e/etc/passwd", {}), ("GET", "/v1/" + "x" * 2000, {})]
    return out


def test_a_thousand_malformed_requests_each_get_a_4xx_json_error(server, engine):
    kinds = malformed_requests()
    before = server.health()["requests"]
    statuses: dict[int, int] = {}
    failures: list[str] = []

    def send(n: int) -> None:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for i in range(n, 1000, 4):
                method, path, kw = kinds[i % len(kinds)]
                if "content" in kw and not isinstance(kw["content"], bytes):  # a fresh generator each time
                    kw = {"content": iter([b'{"prompt": "' + b"a" * 40_000, b"a" * 30_000 + b'"}'])}
                r = client.request(method, path, **kw)
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                try:
                    err = r.json()["error"]
                    ok = 400 <= r.status_code < 500 and isinstance(err["message"], str) and err["message"]
                except (ValueError, KeyError, TypeError):
                    ok = False
                if not ok:
                    failures.append(f"{method} {path} {str(kw)[:80]} -> {r.status_code} {r.text[:200]}")

    threads = [threading.Thread(target=send, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert failures == [], failures[:5]
    assert sum(statuses.values()) == 1000 and set(statuses) <= {400, 404, 405, 413}, statuses
    h = server.health()  # still up, nothing ran, nothing failed inside
    assert h["status"] == "ok" and h["requests"] == before
    ref = reference(engine, "The capital of France is", 4)
    r = server.post("/v1/completions", {"prompt": "The capital of France is", "max_tokens": 4})
    assert r.status_code == 200 and r.json()["choices"][0]["text"] == ref.text


# -- a hundred streaming clients at once ---------------------------------------------------------------------
def distinct_prompts(engine, n: int) -> list[str]:
    """``n`` prompts whose first tokens all differ (so no two share a cached prefix)."""
    out, firsts = [], set()
    for t in range(engine.model.n_vocab):
        word = engine.model.token_bytes(t).decode("utf-8", "replace")
        if re.fullmatch(r"[A-Z][a-z]{4,9}", word):
            prompt = f"{word} is"
            first = engine.tokenize(prompt)[0]
            if first not in firsts:
                firsts.add(first)
                out.append(prompt)
        if len(out) == n:
            return out
    raise AssertionError("not enough distinct words in the vocabulary")


async def stream_one(client: httpx.AsyncClient, prompt: str) -> tuple[int, object]:
    """(status, events) for a 200: every ``data:`` payload, "[DONE]" as a string; else (status, body)."""
    body = {"prompt": prompt, "max_tokens": MAX_TOKENS, "stream": True, "temperature": 0}
    async with client.stream("POST", "/v1/completions", json=body) as r:
        if r.status_code != 200:
            return r.status_code, json.loads(await r.aread())
        events = []
        async for line in r.aiter_lines():
            if line.startswith("data: "):
                data = line[len("data: "):]
                events.append(data if data == "[DONE]" else json.loads(data))
        return 200, events


async def many_clients(url: str, prompts: list[str]) -> list[tuple[int, object]]:
    limits = httpx.Limits(max_connections=len(prompts) + 10, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(300), limits=limits) as client:
        return await asyncio.gather(*(stream_one(client, p) for p in prompts))


def test_a_hundred_streaming_clients_at_once_get_their_own_whole_reply_or_a_503(tmp_path, engine):
    queue = 50
    s = Server(tmp_path, "--queue-size", str(queue))
    try:
        prompts = distinct_prompts(engine, 100)
        results = asyncio.run(many_clients(s.url, prompts))
        health = s.idle()
    finally:
        s.close()
    served = [i for i, (status, _) in enumerate(results) if status == 200]
    rejected = [i for i, (status, _) in enumerate(results) if status == 503]
    assert len(served) + len(rejected) == 100, [status for status, _ in results]
    assert len(served) >= queue + 1  # all that fit in the queue at once, and any admitted as it drained
    for i in rejected:
        err = results[i][1]["error"]
        assert err["code"] == "queue_full" and err["type"] == "server_error"
    ids = set()
    for i in served:
        events = results[i][1]
        assert events[-1] == "[DONE]", (prompts[i], events[-3:])
        chunks = events[:-1]
        assert len({c["id"] for c in chunks}) == 1, prompts[i]  # one stream, one completion
        ids.add(chunks[0]["id"])
        text = "".join(c["choices"][0]["text"] for c in chunks if c["choices"])
        ref = reference(engine, prompts[i], MAX_TOKENS)
        assert text == ref.text, (prompts[i], text, ref.text)
        assert chunks[-1]["choices"][0]["finish_reason"] == ("stop" if ref.stop_reason == "eos" else "length")
    assert len(ids) == len(served)
    assert health["requests"].get("completed", 0) == len(served)
    assert health["requests"].get("rejected", 0) == len(rejected)


# -- clients that leave --------------------------------------------------------------------------------------
def test_waiting_clients_that_leave_free_their_slots_at_once(server, engine):
    """queue-size 2: one stream runs, two clients wait, then both leave. Their slots are free at
    once (not when the worker would have reached them): a new client is admitted, not refused."""
    server.idle()
    before = server.health()["requests"].get("cancelled", 0)
    with httpx.Client(timeout=60) as runner:
        with runner.stream("POST", server.url + "/v1/completions",
                           json={"prompt": COUNTING, "max_tokens": 1000, "stream": True}) as running:
            lines = running.iter_lines()
            assert next(lines).startswith("data: ")
            waiting = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(2)]
            body = json.dumps({"prompt": "Hello", "max_tokens": 2}).encode()
            for sock in waiting:
                sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            server.wait(lambda h: h["queue"]["waiting"] == 2)
            for sock in waiting:
                sock.close()
            h = server.wait(lambda h: h["queue"]["waiting"] == 0, timeout=10)
            assert h["queue"]["running"] == 1 and h["requests"].get("cancelled", 0) == before + 2
            late: list[httpx.Response] = []
            t = threading.Thread(target=lambda: late.append(
                server.post("/v1/completions", {"prompt": "The capital of France is", "max_tokens": 4})))
            t.start()
            server.wait(lambda h: h["queue"]["waiting"] == 1)  # admitted behind the running stream
            next(lines)
        # the running stream's client leaves too: its generation stops, the late one runs
        t.join(60)
    assert late[0].status_code == 200, late[0].text
    assert late[0].json()["choices"][0]["text"] == reference(engine, "The capital of France is", 4).text
    assert server.idle()["requests"].get("cancelled", 0) == before + 3


def test_clients_that_leave_mid_stream_leave_the_engine_and_its_cache_sound(server, engine):
    server.idle()
    before = server.health()["requests"]
    for i in range(5):
        with httpx.Client(timeout=60) as client:
            with client.stream("POST", server.url + "/v1/completions",
                               json={"prompt": f"{COUNTING} {i}", "max_tokens": 1000, "stream": True}) as r:
                lines = r.iter_lines()
                for _ in range(4 + 3 * i):  # leave after a different number of pieces each time
                    next(lines)
        server.wait(lambda h: h["queue"]["running"] == 0, timeout=20)
    h = server.health()
    assert h["requests"].get("cancelled", 0) == before.get("cancelled", 0) + 5
    for prompt in (COUNTING, "The capital of France is"):  # one extends the cached prefix, one does not
        r = server.post("/v1/completions", {"prompt": prompt, "max_tokens": MAX_TOKENS})
        assert r.json()["choices"][0]["text"] == reference(engine, prompt, MAX_TOKENS).text


# -- clients that stall ----------------------------------------------------------------------------------------
def read_until_closed(sock: socket.socket, limit: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection; and how long that took."""
    sock.settimeout(limit)
    t0 = time.monotonic()
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except TimeoutError:
        raise AssertionError(f"the server kept the connection open for {limit} s") from None
    except ConnectionResetError:
        pass
    return data, time.monotonic() - t0


@pytest.mark.parametrize("sent", [b"", b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Le"],
                         ids=["nothing", "half the headers"])
def test_a_client_that_stalls_before_its_headers_end_is_disconnected(server, sent):
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(sent)
        data, took = read_until_closed(sock, limit=10)
    assert data == b"" and 1.0 < took < 8  # --client-timeout 1.5


def test_a_client_that_stalls_in_its_body_gets_a_408(server, engine):
    with socket.create_connection(("127.0.0.1", server.port)) as stalled:
        stalled.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                        b"Content-Length: 100\r\n\r\n{\"prompt\": \"The ")
        # meanwhile, others are served
        r = server.post("/v1/completions", {"prompt": "The capital of France is", "max_tokens": 3})
        assert r.json()["choices"][0]["text"] == reference(engine, "The capital of France is", 3).text
        data, took = read_until_closed(stalled, limit=10)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408") and b"connection: close" in head.lower(), data[:300]
    assert json.loads(body)["error"]["code"] == "request_timeout" and took < 8


def test_a_client_that_never_reads_its_stream_holds_nothing(server, engine):
    """The reply is generated and buffered whether or not it is read: the engine is free for others."""
    server.idle()
    before = server.health()["requests"].get("completed", 0)
    with socket.create_connection(("127.0.0.1", server.port)) as lazy:
        body = json.dumps({"prompt": COUNTING, "max_tokens": 64, "stream": True}).encode()
        lazy.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))  # and then never reads
        h = server.wait(lambda h: h["requests"].get("completed", 0) == before + 1, timeout=60)
        assert h["queue"]["running"] == 0
        r = server.post("/v1/completions", {"prompt": "The capital of France is", "max_tokens": 3})
        assert r.json()["choices"][0]["text"] == reference(engine, "The capital of France is", 3).text
        data, _ = read_until_closed(lazy, limit=30)  # it is all there when the client does read
    assert data.startswith(b"HTTP/1.1 200") and b"data: [DONE]" in data and b'"finish_reason":"length"' in \
        data.replace(b" ", b"")
