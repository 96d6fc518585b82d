"""`edgessd generate --json-schema FILE` and `--grammar FILE` through the real CLI."""
from __future__ import annotations

import json

import pytest
from conftest import run_cli

SCHEMA = {"type": "object", "properties": {"color": {"enum": ["red", "green", "blue"]}}, "required": ["color"],
          "additionalProperties": False}


def test_json_schema_file(tmp_path):
    f = tmp_path / "s.json"
    f.write_text(json.dumps(SCHEMA))
    r = run_cli("generate", "smollm2-135m", "--chat", "-p", "Pick a color.", "--json-schema", str(f), "-n", "24",
                "-t", "2", "--mode", "lookup", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert json.loads(out["text"])["color"] in ("red", "green", "blue")


def test_grammar_file(tmp_path):
    f = tmp_path / "g.lark"
    f.write_text('start: " yes" | " no"\n')
    r = run_cli("generate", "smollm2-135m", "-p", "Is the sky blue? Answer:", "--grammar", str(f), "-n", "8", "-t", "2")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() in ("yes", "no")


@pytest.mark.parametrize("name,text,needle", [
    ("bad.json", '{"type": "objectx"}', "objectx"),
    ("bad.json", '{"type": ', "not valid JSON"),
    ("bad.lark", "start: foo", "unknown name"),
])
def test_a_bad_schema_or_grammar_is_one_error_line(tmp_path, name, text, needle):
    f = tmp_path / name
    f.write_text(text)
    flag = "--json-schema" if name.endswith(".json") else "--grammar"
    r = run_cli("generate", "smollm2-135m", "-p", "x", flag, str(f), "-t", "2")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in r.stderr
