"""Bad input on the command line (#19): one error line and exit 2, with or without --debug."""
from __future__ import annotations

from pathlib import Path

from conftest import run_cli


def test_empty_skip_is_an_error():
    for spec in ("", "  "):
        r = run_cli("generate", "smollm2-135m", "-p", "hi", "-n", "2", "--mode", "layerskip", "--skip", spec)
        assert r.returncode == 2, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("edgessd: error: ") and "empty skip spec" in lines[0], r.stderr
        assert r.stdout == ""


def test_debug_shows_traceback_and_exits_2(tmp_path: Path):
    missing = tmp_path / "absent.gguf"
    plain = run_cli("generate", str(missing), "-p", "hi", "-n", "2")
    debug = run_cli("--debug", "generate", str(missing), "-p", "hi", "-n", "2")
    assert plain.returncode == 2 and debug.returncode == 2, (plain.stderr, debug.stderr)
    assert "Traceback" not in plain.stderr and "Traceback" in debug.stderr
    assert debug.stderr.strip().splitlines()[-1] == plain.stderr.strip()


def _cli_in(cwd: Path, *args: str):
    import os
    import subprocess

    from conftest import EDGESSD

    env = {k: v for k, v in os.environ.items() if k != "EDGESSD_DEBUG"}
    return subprocess.run(EDGESSD + list(args), capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def _one_error_line(r) -> str:
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("edgessd: error: "), r.stderr
    return lines[0]


def test_a_directory_is_named_as_one_with_the_gguf_files_in_it(tmp_path: Path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "mine-q4.gguf").write_bytes(b"")
    line = _one_error_line(_cli_in(tmp_path, "generate", "models", "-p", "hi", "-n", "2"))
    assert "models is a directory" in line and "mine-q4.gguf" in line


def test_a_registry_name_wins_over_a_directory_of_that_name(tmp_path: Path):
    (tmp_path / "smollm2-135m").mkdir()
    r = _cli_in(tmp_path, "generate", "smollm2-135m", "-p", "The capital of France is", "-n", "4", "--temp", "0")
    assert r.returncode == 0 and r.stdout.strip(), r.stderr


def test_a_hub_name_says_no_hub_is_reachable_and_what_to_give(tmp_path: Path):
    line = _one_error_line(_cli_in(tmp_path, "generate", "Qwen/Qwen2.5-0.5B-Instruct-GGUF", "-p", "hi"))
    assert "no model hub" in line and ".gguf" in line and "smollm2-135m" in line
