"""`edgessd serve` as a client sees it: the real CLI in a subprocess, the real model, httpx.

Greedy replies must equal what Engine.generate gives for the same prompt; streamed chunks
must add up to the same text; every error must be JSON in OpenAI's shape; a client that
leaves must free the engine; the queue bound must answer 503.
"""
from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest
from conftest import EDGESSD, REPO, run_cli

from edgessd.server.stops import StopScanner

MODEL = "smollm2-135m"
N_CTX = 1024
COUNTING = "1, 2, 3, 4, 5,"  # smollm2 keeps counting far past any max_tokens used here
CHAT = [{"role": "user", "content": "Name three colors."}]


class Server:
    """A running `edgessd serve` subprocess on a free loopback port."""

    def __init__(self, tmp: Path, *args: str) -> None:
        self.log = tmp / "server.log"
        cmd = [*EDGESSD, "serve", MODEL, "--port", "0", "-t", "1", "-c", str(N_CTX), "--mode", "plain", *args]
        with open(self.log, "w") as err:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, cwd=REPO)
        line = self._first_line(timeout=120)
        m = re.search(r"http://127\.0\.0\.1:(\d+)/v1", line)
        assert m, f"no listening line: {line!r}; log: {self.log.read_text()}"
        self.url = f"http://127.0.0.1:{m.group(1)}"
        self.port = int(m.group(1))
        self.wait(lambda h: h["status"] == "ok")

    def _first_line(self, timeout: float) -> str:
        box: list[str] = []
        reader = threading.Thread(target=lambda: box.append(self.proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout)
        return box[0] if box else ""

    def health(self) -> dict:
        return httpx.get(self.url + "/health", timeout=10).json()

    def wait(self, pred, timeout: float = 30) -> dict:
        """Poll /health until ``pred(health)``; the health seen last."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                h = self.health()
                if pred(h):
                    return h
            except httpx.TransportError:
                h = None
            if time.monotonic() > deadline:
                raise AssertionError(f"server never reached the state; last health {h}; log: {self.log.read_text()}")
            time.sleep(0.05)

    def idle(self) -> dict:
        return self.wait(lambda h: h["queue"]["running"] == 0 and h["queue"]["waiting"] == 0)

    def post(self, path: str, body, timeout: float = 60, **kw) -> httpx.Response:
        kw.setdefault("json" if not isinstance(body, (bytes, str)) else "content", body)
        return httpx.post(self.url + path, timeout=timeout, **kw)

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("serve"), "--queue-size", "2", "--max-body", "65536")
    yield s
    s.close()


@pytest.fixture(scope="module")
def engine():
    from edgessd import Engine

    eng = Engine(MODEL, n_ctx=N_CTX, n_threads=1)
    yield eng
    eng.close()


def reference(engine, prompt, n: int):
    """What the engine itself says: greedy, plain decoding."""
    return engine.generate(prompt, n_predict=n, mode="plain", temperature=0.0)


def sse_events(response: httpx.Response) -> list:
    """The decoded ``data:`` payloads of an SSE response, "[DONE]" as a string."""
    out = []
    for line in response.iter_lines():
        if line.startswith("data: "):
            data = line[len("data: "):]
            out.append(data if data == "[DONE]" else json.loads(data))
        else:
            assert line == "", f"unexpected SSE line {line!r}"
    return out


def check_accounting(body: dict, ref) -> None:
    """usage and timings agree with each other and with the engine's own generation."""
    u, t = body["usage"], body["timings"]
    assert u["prompt_tokens"] == ref.stats.n_prompt
    assert u["completion_tokens"] == t["predicted_n"] == len(ref.tokens)
    assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]
    assert t["prompt_n"] + t["cache_n"] + 1 == u["prompt_tokens"]
    assert t["prompt_ms"] > 0 and t["predicted_ms"] > 0 and t["predicted_per_second"] >= 0
    assert t["draft_n"] == t["draft_n_accepted"] == 0  # plain decoding drafts nothing
    assert body["edgessd"]["mode"] == "plain" and body["edgessd"]["mean_accepted"] == 0.0


# -- replies -------------------------------------------------------------------------------------------
def test_chat_completion_is_the_engines_greedy_reply(server, engine):
    ref = reference(engine, CHAT, 24)
    r = server.post("/v1/chat/completions", {"model": "anything", "messages": CHAT, "max_tokens": 24,
                                             "temperature": 0, "mode": "plain"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "chat.completion" and body["model"] == MODEL and body["id"].startswith("chatcmpl-")
    choice = body["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": ref.text}
    assert choice["finish_reason"] == ("stop" if ref.stop_reason == "eos" else "length")
    check_accounting(body, ref)


def test_completion_is_the_engines_greedy_reply(server, engine):
    ref = reference(engine, "The capital of France is", 12)
    r = server.post("/v1/completions", {"prompt": "The capital of France is", "max_tokens": 12, "temperature": 0})
    body = r.json()
    assert r.status_code == 200 and body["object"] == "text_completion"
    assert body["choices"][0]["text"] == ref.text and "Paris" in ref.text
    assert body["choices"][0]["finish_reason"] == "length" and ref.stop_reason == "length"
    check_accounting(body, ref)


def test_streamed_chunks_add_up_to_the_reply(server, engine):
    ref = reference(engine, CHAT, 24)
    with httpx.stream("POST", server.url + "/v1/chat/completions", timeout=60,
                      json={"messages": CHAT, "max_tokens": 24, "stream": True,
                            "stream_options": {"include_usage": True}}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = sse_events(r)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == chunks[0]["id"] for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == ref.text and len(chunks) > 3
    *_, finish, usage_only = chunks
    assert finish["choices"][0]["finish_reason"] == ("stop" if ref.stop_reason == "eos" else "length")
    assert usage_only["choices"] == [] and "usage" not in finish  # usage once, in OpenAI's last chunk
    check_accounting(usage_only, ref)


def test_streamed_completion_without_usage_option(server, engine):
    ref = reference(engine, COUNTING, 10)
    with httpx.stream("POST", server.url + "/v1/completions", timeout=60,
                      json={"prompt": COUNTING, "max_tokens": 10, "stream": True}) as r:
        events = sse_events(r)
    assert events[-1] == "[DONE]"
    assert "".join(c["choices"][0]["text"] for c in events[:-1]) == ref.text
    assert events[-2]["choices"][0]["finish_reason"] == "length" and "timings" in events[-2]


@pytest.mark.parametrize("stream", [False, True])
def test_stop_strings_cut_the_reply(server, engine, stream):
    ref = reference(engine, COUNTING, 16).text           # " 6, 7, 8, 9, 10, ..."
    stop = ", 9"
    expected = ref[:ref.index(stop)]
    body = {"prompt": COUNTING, "max_tokens": 16, "stop": ["never", stop], "stream": stream}
    if stream:
        with httpx.stream("POST", server.url + "/v1/completions", json=body, timeout=60) as r:
            events = sse_events(r)
        text = "".join(c["choices"][0]["text"] for c in events[:-1])
        final = events[-2]
    else:
        final = server.post("/v1/completions", body).json()
        text = final["choices"][0]["text"]
    assert text == expected
    assert final["choices"][0]["finish_reason"] == "stop"
    assert final["usage"]["completion_tokens"] < 16  # generation was cancelled, not run to the limit


def test_sampling_with_a_seed_is_the_engines_sampling(server, engine):
    prompt = "Once upon a time"
    ref = engine.generate(prompt, n_predict=12, mode="plain", temperature=0.9, seed=7).text
    body = {"prompt": prompt, "max_tokens": 12, "temperature": 0.9, "seed": 7}
    assert [server.post("/v1/completions", body).json()["choices"][0]["text"] for _ in range(2)] == [ref, ref]


def test_repeat_penalty_fields_are_the_engines_penalty(server, engine):
    prompt = "The list: apple, banana, cherry, date, elderberry, fig, grape. The list again: apple, banana,"
    settings = dict(repeat_penalty=1.3, repeat_last_n=16)
    ref = engine.generate(prompt, n_predict=16, mode="plain", **settings).text
    assert ref != engine.generate(prompt, n_predict=16, mode="plain").text  # the fields must matter here
    body = {"prompt": prompt, "max_tokens": 16, **settings}
    assert server.post("/v1/completions", body).json()["choices"][0]["text"] == ref


def test_max_tokens_zero_generates_nothing(server):
    body = server.post("/v1/completions", {"prompt": "Hello", "max_tokens": 0}).json()
    assert body["choices"][0] == {"index": 0, "text": "", "logprobs": None, "finish_reason": "length"}
    assert body["usage"]["completion_tokens"] == 0


def test_stop_scanner_holds_back_a_partial_stop():
    s = StopScanner(["\n\n", "END"])
    assert s.feed("a\n") == "a"          # "\n" might start "\n\n"
    assert s.feed("b E") == "\nb "       # it did not; "E" might start "END"
    assert s.feed("N") == ""
    assert s.feed("Dx") == "" and s.stopped
    assert s.flush() == ""
    t = StopScanner(["END"])
    assert t.feed("EN") == "" and t.flush() == "EN" and not t.stopped


def test_models_and_health(server):
    models = httpx.get(server.url + "/v1/models").json()
    assert models["object"] == "list" and [m["id"] for m in models["data"]] == [MODEL]
    h = server.health()
    assert h["status"] == "ok" and h["model"] == MODEL and h["queue"]["size"] == 2


def test_two_concurrent_clients_both_get_their_reply(server, engine):
    prompts = ["The capital of France is", "def fibonacci(n):"]
    refs = [reference(engine, p, 12).text for p in prompts]
    out: dict[int, httpx.Response] = {}

    def ask(i: int) -> None:
        out[i] = server.post("/v1/completions", {"prompt": prompts[i], "max_tokens": 12})

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert [out[i].json()["choices"][0]["text"] for i in range(2)] == refs


def test_a_client_that_leaves_mid_stream_frees_the_engine(server, engine):
    before = server.idle()["requests"].get("cancelled", 0)
    with httpx.Client(timeout=60) as client:
        with client.stream("POST", server.url + "/v1/completions",
                           json={"prompt": COUNTING, "max_tokens": 1000, "stream": True}) as r:
            lines = r.iter_lines()
            got = [next(lines) for _ in range(6)]  # some text has arrived: the generation runs
            assert any(line.startswith("data: ") for line in got)
    # 1000 tokens would take many seconds; the engine must stop at the next cycle instead
    h = server.wait(lambda h: h["queue"]["running"] == 0, timeout=20)
    assert h["requests"].get("cancelled", 0) == before + 1
    ref = reference(engine, "The capital of France is", 4)
    r = server.post("/v1/completions", {"prompt": "The capital of France is", "max_tokens": 4}, timeout=20)
    assert r.json()["choices"][0]["text"] == ref.text


def test_a_client_that_stops_waiting_for_a_whole_reply_frees_the_engine(server):
    before = server.idle()["requests"].get("cancelled", 0)
    with pytest.raises(httpx.ReadTimeout):
        server.post("/v1/completions", {"prompt": COUNTING, "max_tokens": 1000}, timeout=1.0)
    h = server.wait(lambda h: h["queue"]["running"] == 0, timeout=20)
    assert h["requests"].get("cancelled", 0) == before + 1


def test_the_worker_reports_an_unexpected_error_and_goes_on(engine):
    """In process, the real Worker and Engine: a job the schema would never let through
    (a "drafter" that is not one) fails with a 500 event; the next job runs normally."""
    from edgessd.server.worker import Job, Worker

    async def run() -> tuple:
        worker = Worker(engine, queue_size=1)
        worker.start()
        loop = asyncio.get_running_loop()
        bad = Job(prompt="Hi", params={"n_predict": 2, "drafter": object()}, stops=[], loop=loop)
        worker.submit(bad)
        failure = await bad.next()
        good = Job(prompt="The capital of France is", params={"n_predict": 3, "mode": "plain"}, stops=[], loop=loop)
        worker.submit(good)
        while (event := await good.next()).kind == "text":
            pass
        worker.stop()
        return failure, event, dict(worker.counts)

    failure, done, counts = asyncio.run(run())
    assert failure.kind == "error" and failure.value.status == 500 and failure.value.body()["error"]["message"]
    assert done.kind == "done" and done.value.text == reference(engine, "The capital of France is", 3).text
    assert counts == {"errors": 1, "completed": 1}


# -- errors --------------------------------------------------------------------------------------------
def assert_error(r: httpx.Response, status: int, needle: str = "") -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert {"message", "type", "code"} <= set(err) and isinstance(err["message"], str)
    assert needle in err["message"], err
    return err


def test_unknown_route_and_wrong_method_are_json(server):
    assert_error(httpx.get(server.url + "/v1/nope"), 404, "/v1/nope")
    err = assert_error(httpx.get(server.url + "/v1/chat/completions"), 405, "POST")
    assert err["code"] == "method_not_allowed"
    assert_error(httpx.delete(server.url + "/health"), 405)


@pytest.mark.parametrize("path,body,param", [
    ("/v1/chat/completions", b"{bad json", None),
    ("/v1/chat/completions", b"\xff\xfe\x00", None),
    ("/v1/chat/completions", b"[" * 50_000, None),
    ("/v1/completions", [1, 2], None),
    ("/v1/chat/completions", {"prompt": "hi"}, "messages"),
    ("/v1/chat/completions", {"messages": "hi"}, "messages"),
    ("/v1/chat/completions", {"messages": [{"content": "hi"}]}, "messages[0]"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
     "messages[0].content"),
    ("/v1/completions", {"messages": CHAT}, "prompt"),
    ("/v1/completions", {"prompt": [1, 2, 3]}, "prompt"),
    ("/v1/completions", b'{"prompt": "\\ud800 lone surrogate"}', "prompt"),
    ("/v1/completions", {"prompt": "hi", "max_tokens": -1}, "max_tokens"),
    ("/v1/completions", {"prompt": "hi", "max_completion_tokens": "ten"}, "max_completion_tokens"),
    ("/v1/completions", {"prompt": "hi", "temperature": -0.5}, "temperature"),
    ("/v1/completions", {"prompt": "hi", "temperature": "hot"}, "temperature"),
    ("/v1/completions", {"prompt": "hi", "top_p": 0}, "top_p"),
    ("/v1/completions", {"prompt": "hi", "top_p": 1.5}, "top_p"),
    ("/v1/completions", {"prompt": "hi", "top_k": -3}, "top_k"),
    ("/v1/completions", {"prompt": "hi", "repeat_penalty": 0}, "repeat_penalty"),
    ("/v1/completions", {"prompt": "hi", "repeat_last_n": -2}, "repeat_last_n"),
    ("/v1/completions", {"prompt": "hi", "mode": "fast"}, "mode"),
    ("/v1/completions", {"prompt": "hi", "stop": 5}, "stop"),
    ("/v1/completions", {"prompt": "hi", "stream": "yes"}, "stream"),
    ("/v1/completions", {"prompt": "hi", "n": 2}, "n"),
    ("/v1/completions", {"prompt": "hi", "model": 7}, "model"),
])
def test_invalid_requests_are_400_json(server, path, body, param):
    err = assert_error(server.post(path, body), 400)
    assert err["param"] == param


@pytest.mark.parametrize("stream", [False, True])
def test_prompt_longer_than_the_context_is_400_with_the_engines_message(server, stream):
    r = server.post("/v1/completions", {"prompt": "word " * (2 * N_CTX), "stream": stream})
    assert_error(r, 400, f"the context holds {N_CTX}")


def test_body_over_the_limit_is_413(server):
    assert_error(server.post("/v1/completions", b'{"prompt": "' + b"a" * 70_000 + b'"}'), 413, "65536")


def test_413_comes_from_content_length_before_the_body_is_read(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100000000\r\n\r\n{\"prompt\": \"")  # 100 MB announced, a few bytes sent
        reply = b""
        while chunk := sock.recv(65536):  # the server answers and closes the connection
            reply += chunk
    reply = reply.decode()
    assert reply.startswith("HTTP/1.1 413"), reply
    assert '"request_too_large"' in reply


def test_the_server_survives_the_errors(server, engine):
    ref = reference(engine, "The capital of France is", 3)
    r = server.post("/v1/completions", {"prompt": "The capital of France is", "max_tokens": 3})
    assert r.json()["choices"][0]["text"] == ref.text
    assert server.health()["requests"].get("errors", 0) == 0


# -- a server with no queue and a short time limit ----------------------------------------------------
@pytest.fixture(scope="module")
def busy_server(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("busy"), "--queue-size", "0", "--timeout", "2")
    yield s
    s.close()


def test_a_full_queue_answers_503(busy_server):
    with httpx.Client(timeout=60) as client:
        with client.stream("POST", busy_server.url + "/v1/completions",
                           json={"prompt": COUNTING, "max_tokens": 1000, "stream": True}) as r:
            assert r.status_code == 200
            lines = r.iter_lines()  # kept: dropping a half-read iterator closes the connection
            assert next(lines).startswith("data: ")  # the first request runs
            err = assert_error(busy_server.post("/v1/completions", {"prompt": "hi", "max_tokens": 2}), 503)
            assert err["code"] == "queue_full"
    assert busy_server.wait(lambda h: h["queue"]["running"] == 0)["requests"]["rejected"] == 1


def test_a_generation_past_the_time_limit_ends_with_length(busy_server):
    busy_server.idle()
    r = busy_server.post("/v1/completions", {"prompt": COUNTING, "max_tokens": 1000})
    body = r.json()
    assert r.status_code == 200
    assert body["choices"][0]["finish_reason"] == "length" and body["edgessd"]["timed_out"] is True
    assert 0 < body["usage"]["completion_tokens"] < 1000


# -- startup errors --------------------------------------------------------------------------------------
@pytest.mark.parametrize("args,needle", [
    (("serve", "/no/such/model.gguf"), "model file not found"),
    (("serve", MODEL, "--port", "99999"), "--port"),
    (("serve", MODEL, "--queue-size", "-1"), "--queue-size"),
])
def test_startup_errors_are_one_line_with_exit_code_2(args, needle):
    r = run_cli(*args)
    assert r.returncode == 2, r
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgessd: error: ") and needle in lines[0], r.stderr


def test_a_port_in_use_is_one_line_with_exit_code_2():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        r = run_cli("serve", MODEL, "--port", str(port), "-t", "1")
    assert r.returncode == 2, r
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"edgessd: error: cannot listen on 127.0.0.1:{port}"), r.stderr


def test_ctrl_c_ends_a_running_stream_cleanly_and_refuses_the_waiting(tmp_path):
    s = Server(tmp_path)
    try:
        queued: list[httpx.Response] = []
        with httpx.Client(timeout=60) as client:
            with client.stream("POST", s.url + "/v1/completions",
                               json={"prompt": COUNTING, "max_tokens": 1000, "stream": True}) as r:
                lines = r.iter_lines()
                assert next(lines).startswith("data: ")
                waiter = threading.Thread(target=lambda: queued.append(
                    s.post("/v1/completions", {"prompt": "hi", "max_tokens": 2})))
                waiter.start()
                s.wait(lambda h: h["queue"]["waiting"] == 1)
                s.proc.send_signal(signal.SIGINT)
                rest = [line for line in lines if line]
                waiter.join(30)
        assert rest[-1] == "data: [DONE]"  # the stream ended properly, not cut off
        assert json.loads(rest[-2][len("data: "):])["choices"][0]["finish_reason"] == "length"
        assert_error(queued[0], 503, "shutting down")
        assert s.proc.wait(20) in (0, 130)  # uvicorn re-raises the SIGINT (130) unless shutdown won the race
    finally:
        s.close()
