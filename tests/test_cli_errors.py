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
