"""The CLI as a user runs it: one-line errors with exit code 2, JSON output, help."""
from __future__ import annotations

import json

import pytest
from conftest import run_cli


def test_help_lists_commands_with_examples():
    r = run_cli("--help")
    assert r.returncode == 0
    commands = r.stdout.split("Commands:")[1]
    for cmd in ("chat", "generate", "serve", "profile", "calibrate", "bench", "models", "info"):
        assert f"\n  {cmd} " in commands, cmd  # every subcommand the issue names, listed
        assert f"edgessd {cmd}" in r.stdout, cmd  # each with an example
    assert "Examples:" in r.stdout


@pytest.mark.parametrize("args,needle", [
    (("generate", "/no/such/model.gguf", "-p", "hi"), "model file not found"),
    (("generate", "smollm2-135m", "-p", "hi", "--temp", "-1"), "--temp"),
    (("generate", "smollm2-135m", "-p", "hi", "-n", "-5"), "--n-predict"),
    (("generate", "smollm2-135m", "-p", "hi", "--top-p", "1.5"), "--top-p"),
    (("generate", "smollm2-135m", "-p", "hi", "--mode", "fast"), "--mode"),
    (("generate", "smollm2-135m", "-p", "hi", "--mode", "layerskip", "--skip", "attn:x"), "malformed skip spec"),
    (("generate", "smollm2-135m", "-p", "hi", "--mode", "layerskip", "--skip", "attn:99"), "layers 0-29"),
    (("generate", "no-such-model", "-p", "hi"), "unknown model"),
    (("chat", "/no/such/model.gguf"), "model file not found"),
])
def test_errors_are_one_line_with_exit_code_2(args, needle):
    r = run_cli(*args)
    assert r.returncode == 2, r
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("edgessd: error: ") and needle in lines[0]


def test_not_a_gguf_is_a_clean_error(tmp_path):
    fake = tmp_path / "notes.gguf"
    fake.write_text("this is a text file, not a model\n")
    r = run_cli("generate", str(fake), "-p", "hi")
    assert r.returncode == 2 and r.stderr.strip() == f"edgessd: error: {fake} is not a GGUF file"


def test_generate_json_has_the_documented_fields():
    r = run_cli("generate", "smollm2-135m", "-p", "The capital of France is", "-n", "12", "--mode", "layerskip",
                "--skip", "attn:4,8;mlp:4-6", "--draft-max", "3", "-t", "2", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert {"text", "tokens", "mode", "layer_set", "domain", "stats"} <= set(out)
    assert out["mode"] == "layerskip" and out["layer_set"] == {"attn": [4, 8], "mlp": [4, 5, 6]}
    assert out["domain"] is None
    st = out["stats"]
    for key in ("n_prompt", "n_generated", "n_cycles", "n_drafted", "n_accepted", "mean_accepted",
                "acceptance_per_pos", "t_prompt_ms", "t_draft_ms", "t_verify_ms", "t_gen_ms", "prompt_tok_s",
                "gen_tok_s"):
        assert key in st
    assert st["n_generated"] == len(out["tokens"]) <= 12
    assert st["n_drafted"] > 0 and "Paris" in out["text"]


def test_generate_streams_text_and_a_status_line():
    r = run_cli("generate", "smollm2-135m", "-p", "The capital of France is", "-n", "8", "-t", "2")
    assert r.returncode == 0
    assert "Paris" in r.stdout
    assert "gen " in r.stderr and "t/s" in r.stderr


def test_every_option_of_every_command_has_help():
    import click

    from edgessd.cli.main import cli

    ctx = click.Context(cli)
    missing = []

    def walk(cmd: click.Command, path: str) -> None:
        for p in cmd.params:
            if isinstance(p, click.Option) and not (p.help or "").strip():
                missing.append(f"{path} {'/'.join(p.opts)}")
        if isinstance(cmd, click.Group):
            for name in cmd.list_commands(ctx):
                walk(cmd.get_command(ctx, name), f"{path} {name}")

    walk(cli, "edgessd")
    assert not missing, "options without help: " + ", ".join(missing)


def test_llama_cpp_spellings_model_file_and_n_minus_one(tmp_path):
    import json

    prompt = tmp_path / "prompt.txt"
    prompt.write_text("The capital of France is", encoding="utf-8")
    by_p = run_cli("generate", "smollm2-135m", "-p", "The capital of France is", "-n", "8", "--temp", "0", "--json")
    by_f = run_cli("generate", "-m", "smollm2-135m", "-f", str(prompt), "-n", "8", "--temp", "0", "--json")
    assert by_p.returncode == 0 and by_f.returncode == 0, (by_p.stderr, by_f.stderr)
    assert json.loads(by_f.stdout)["tokens"] == json.loads(by_p.stdout)["tokens"]
    endless = run_cli("generate", "-m", "smollm2-135m", "-p", "Once upon a time", "-n", "-1", "-c", "64",
                      "--temp", "0", "--json")
    assert endless.returncode == 0, endless.stderr
    out = json.loads(endless.stdout)
    assert out["stop_reason"] in ("context", "eos") and len(out["tokens"]) > 8


def test_two_models_or_two_prompts_are_one_error_line(tmp_path):
    f = tmp_path / "p.txt"
    f.write_text("hi", encoding="utf-8")
    for args, words in ((("smollm2-135m", "-m", "gemma3-270m", "-p", "hi"), "two models"),
                        (("smollm2-135m", "-p", "hi", "-f", str(f)), "-p TEXT or -f FILE"),
                        (("smollm2-135m",), "-p TEXT or -f FILE")):
        r = run_cli("generate", *args)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and words in lines[0], r.stderr


def test_reverse_prompt_and_stop_cut_the_reply_before_the_stop_string():
    import json

    base = ("generate", "smollm2-135m", "-p", "Count: 1, 2, 3,", "-n", "40", "--temp", "0")
    full = json.loads(run_cli(*base, "--json").stdout)
    assert " 7" in full["text"], full["text"]
    want = full["text"][:full["text"].index(" 7")]
    streamed = run_cli(*base, "-r", " 7")
    assert streamed.returncode == 0 and streamed.stdout == want + "\n", (streamed.stdout, streamed.stderr)
    as_json = json.loads(run_cli(*base, "--stop", "nothing like this", "--stop", " 7", "--json").stdout)
    assert as_json["text"] == want and as_json["stop_reason"] == "stop"
    assert len(as_json["tokens"]) < len(full["tokens"])  # generation ended, not only the printing
