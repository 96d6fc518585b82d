"""`edgessd serve --api-key / --cors-origin / --alias`, and the warning for an open host without a key:
the real CLI in a subprocess, the real model, httpx."""
from __future__ import annotations

import os
import re
import subprocess
import threading

import httpx
import pytest
from conftest import EDGESSD, REPO
from test_server import MODEL, N_CTX, Server

KEY = "sk-edgessd-test-0123"
ALIAS = "my-model"
ORIGIN = "http://localhost:3000"
OTHER_ORIGIN = "http://app.example"
WARNING = "warning: listening on 0.0.0.0 without --api-key"
PREFLIGHT = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization, content-type"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("flags"), "--api-key", KEY, "--alias", ALIAS,
               "--cors-origin", ORIGIN, "--cors-origin", OTHER_ORIGIN)
    yield s
    s.close()


def auth(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def assert_401(r: httpx.Response) -> None:
    assert r.status_code == 401, r.text
    err = r.json()["error"]
    assert err["type"] == "authentication_error" and err["message"] and set(err) == {"message", "type", "code", "param"}


@pytest.mark.parametrize("headers", [{}, auth("wrong"), auth(KEY + "x"), auth(KEY[:-1]), {"Authorization": KEY},
                                     {"Authorization": f"Basic {KEY}"}], ids=["none", "wrong", "longer", "shorter",
                                                                               "no-scheme", "basic"])
def test_v1_without_the_right_key_is_401_json(server, headers):
    before = server.idle()["requests"]
    assert_401(httpx.get(server.url + "/v1/models", headers=headers, timeout=10))
    assert_401(server.post("/v1/completions", {"prompt": "Hi", "max_tokens": 4}, headers=headers))
    assert_401(httpx.get(server.url + "/v1/no-such-route", headers=headers, timeout=10))  # no route probing
    assert server.idle()["requests"] == before  # nothing reached the worker


def test_the_right_key_opens_v1_and_the_alias_is_the_model_name(server):
    r = httpx.get(server.url + "/v1/models", headers=auth(KEY), timeout=10)
    assert r.status_code == 200, r.text
    assert [m["id"] for m in r.json()["data"]] == [ALIAS]
    r = server.post("/v1/completions", {"prompt": "The capital of France is", "max_tokens": 4}, headers=auth(KEY))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == ALIAS and body["usage"]["completion_tokens"] == 4
    r = server.post("/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2},
                    headers={"authorization": f"bearer {KEY}"})  # the scheme is case-insensitive
    assert r.status_code == 200 and r.json()["model"] == ALIAS


def test_health_stays_open_without_a_key(server):
    r = httpx.get(server.url + "/health", timeout=10)
    assert r.status_code == 200 and r.json()["status"] == "ok" and r.json()["model"] == ALIAS


@pytest.mark.parametrize("origin", [ORIGIN, OTHER_ORIGIN])
def test_a_preflight_from_an_allowed_origin_is_allowed_without_a_key(server, origin):
    r = httpx.options(server.url + "/v1/chat/completions", headers={"Origin": origin, **PREFLIGHT}, timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["access-control-allow-origin"] == origin
    assert "POST" in r.headers["access-control-allow-methods"]
    assert {"authorization", "content-type"} <= {h.strip().lower()
                                                 for h in r.headers["access-control-allow-headers"].split(",")}


def test_a_preflight_from_another_origin_gets_no_allow_origin(server):
    r = httpx.options(server.url + "/v1/chat/completions", headers={"Origin": "http://evil.example", **PREFLIGHT},
                      timeout=10)
    assert "access-control-allow-origin" not in r.headers and r.status_code != 200


def test_a_browsers_401_and_200_carry_the_allowed_origin(server):
    r = httpx.get(server.url + "/v1/models", headers={"Origin": ORIGIN}, timeout=10)
    assert_401(r)
    assert r.headers["access-control-allow-origin"] == ORIGIN  # so the page can read why
    r = httpx.get(server.url + "/v1/models", headers={"Origin": ORIGIN, **auth(KEY)}, timeout=10)
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == ORIGIN
    r = httpx.get(server.url + "/v1/models", headers={"Origin": "http://evil.example", **auth(KEY)}, timeout=10)
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


def test_a_loopback_server_with_a_key_does_not_warn(server):
    assert "warning" not in server.log.read_text()


def open_server(env: dict | None = None) -> tuple[subprocess.Popen, int]:
    """`edgessd serve --host 0.0.0.0` on a free port; the process and its port, once it listens."""
    cmd = [*EDGESSD, "serve", MODEL, "--host", "0.0.0.0", "--port", "0", "-t", "1", "-c", str(N_CTX)]
    full_env = {k: v for k, v in os.environ.items() if k != "EDGESSD_API_KEY"} | (env or {})
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=full_env)
    box: list[str] = []  # the listening line, printed after the warning (if any) went to stderr
    reader = threading.Thread(target=lambda: box.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(120)
    line = box[0] if box else ""
    m = re.search(r"http://0\.0\.0\.0:(\d+)/v1", line)
    if not m:
        proc.kill()
        raise AssertionError(f"no listening line: {line!r}; stderr: {proc.communicate()[1]}")
    return proc, int(m.group(1))


def stop(proc: subprocess.Popen) -> str:
    """Kill the server; what it wrote on stderr."""
    proc.kill()
    return proc.communicate(timeout=30)[1]


def test_an_open_host_without_a_key_warns_on_stderr():
    proc, _port = open_server()
    err = stop(proc)
    warnings = [line for line in err.splitlines() if WARNING in line]
    assert len(warnings) == 1, err


def test_an_open_host_with_the_key_from_the_environment_does_not_warn():
    proc, port = open_server({"EDGESSD_API_KEY": KEY})
    try:
        url = f"http://127.0.0.1:{port}"
        assert_401(httpx.get(url + "/v1/models", timeout=30))
        assert httpx.get(url + "/v1/models", headers=auth(KEY), timeout=30).json()["data"][0]["id"] == MODEL
        r = httpx.options(url + "/v1/models", headers={"Origin": ORIGIN, **PREFLIGHT}, timeout=10)
        assert "access-control-allow-origin" not in r.headers  # no --cors-origin: no CORS at all
    finally:
        err = stop(proc)
    assert "warning" not in err, err


@pytest.fixture(scope="module")
def many_keys_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("keys")
    (tmp / "keys.txt").write_text("\n  file-key-1  \n\nfile-key-2\n", encoding="utf-8")
    s = Server(tmp, "--api-key", "cli-a, cli-b", "--api-key-file", str(tmp / "keys.txt"))
    yield s
    s.close()


@pytest.mark.parametrize("key", ["cli-a", "cli-b", "file-key-1", "file-key-2"])
@pytest.mark.parametrize("header", ["bearer", "x-api-key"])
def test_every_key_from_the_flag_and_the_file_opens_v1_by_either_header(many_keys_server, key, header):
    headers = auth(key) if header == "bearer" else {"X-Api-Key": key}
    r = httpx.get(many_keys_server.url + "/v1/models", headers=headers, timeout=10)
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("headers", [{"X-Api-Key": "cli-c"}, {"X-Api-Key": ""}, auth("cli-a,cli-b"),
                                     {"X-Api-Key": "file-key-1x"}], ids=["other", "empty", "joined", "longer"])
def test_keys_not_given_are_401(many_keys_server, headers):
    assert_401(httpx.get(many_keys_server.url + "/v1/models", headers=headers, timeout=10))


@pytest.mark.parametrize("content", ["", "\n  \n"], ids=["empty", "blank"])
def test_a_key_file_without_keys_is_one_error_line(tmp_path, content):
    f = tmp_path / "keys.txt"
    f.write_text(content, encoding="utf-8")
    r = subprocess.run([*EDGESSD, "serve", MODEL, "--port", "0", "--api-key-file", str(f)], capture_output=True,
                       text=True, timeout=60, cwd=REPO)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "holds no key" in lines[0], r.stderr
