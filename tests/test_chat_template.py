"""--chat-template and --chat-template-file (llama.cpp's flags): a built-in name or a Jinja file
replaces the GGUF's template for chats; bad ones are one error line before any model loads."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_cli

from edgessd.engine import Engine
from edgessd.errors import InvalidArgumentError

CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
JINJA = ("A conversation.\n{% for m in messages %}[{{ m.role | upper }}] {{ m.content }}\n{% endfor %}"
         "{% if add_generation_prompt %}[ASSISTANT]{% endif %}")
WANT = "A conversation.\n[SYSTEM] Be brief.\n[USER] Hi\n[ASSISTANT]"


@pytest.fixture(scope="module")
def default_render():
    with Engine("smollm2-135m", n_ctx=256, n_threads=1, learn="off") as eng:
        yield eng.render(CHAT)


def test_a_builtin_name_replaces_the_ggufs_template(default_render):
    with Engine("smollm2-135m", n_ctx=256, n_threads=1, chat_template="llama3") as eng:
        text = eng.render(CHAT)
    assert text != default_render and "<|im_start|>" in default_render
    assert text == ("<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
                    "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
                    "<|start_header_id|>assistant<|end_header_id|>\n\n")


def test_jinja_source_is_rendered_with_the_messages():
    with Engine("smollm2-135m", n_ctx=256, n_threads=1, chat_template=JINJA) as eng:
        assert eng.render(CHAT) == WANT
        assert eng.render("raw text stays as it is") == "raw text stays as it is"


@pytest.mark.parametrize("bad,needle", [("no-such-template", "unknown chat template"),
                                        ("{% for m in messages %}", "not valid Jinja")])
def test_bad_templates_are_refused_by_the_engine(bad, needle):
    with pytest.raises(InvalidArgumentError, match=needle):
        Engine("smollm2-135m", n_ctx=256, n_threads=1, chat_template=bad)


def test_cli_chat_template_file_renders_the_prompt(tmp_path: Path):
    f = tmp_path / "brackets.jinja"
    f.write_text(JINJA, encoding="utf-8")
    r = run_cli("generate", "smollm2-135m", "--chat", "-p", "Hi", "-n", "2", "--mode", "plain", "--json",
                "--chat-template-file", str(f), "-t", "1")
    assert r.returncode == 0, r.stderr
    with Engine("smollm2-135m", n_ctx=256, n_threads=1) as eng:
        n_want = len(eng.model.tokenize("A conversation.\n[USER] Hi\n[ASSISTANT]"))
        n_default = len(eng.tokenize([{"role": "user", "content": "Hi"}]))
    assert n_want != n_default  # the counts tell the two renderings apart
    assert json.loads(r.stdout)["stats"]["n_prompt"] == n_want


@pytest.mark.parametrize("args,needle", [
    (["--chat-template", "no-such-template"], "unknown chat template 'no-such-template'"),
    (["--chat-template", "{{ broken"], "not valid Jinja"),
    (["--chat-template", "chatml", "--chat-template-file", "{file}"], "not both"),
    (["--chat-template-file", "{empty}"], "holds no chat template"),
])
def test_cli_bad_templates_are_one_error_line(tmp_path: Path, args, needle):
    (tmp_path / "t.jinja").write_text(JINJA, encoding="utf-8")
    (tmp_path / "empty.jinja").write_text("  \n", encoding="utf-8")
    files = {"{file}": str(tmp_path / "t.jinja"), "{empty}": str(tmp_path / "empty.jinja")}
    args = [files.get(a, a) for a in args]
    r = run_cli("generate", "smollm2-135m", "--chat", "-p", "Hi", "-n", "2", *args)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and needle in lines[0], r.stderr
    assert r.stdout == ""
