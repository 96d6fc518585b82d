"""`edgessd chat` driven in a real pseudo-terminal (pexpect) against smollm2-135m."""
from __future__ import annotations

import os
import sys

import pexpect
import pytest
from conftest import REPO

STATUS = r"\[(prompt \d+ t/s|prompt cached) \| gen [\d.]+ t/s \| [a-z→]+[^\]]*\]"


@pytest.fixture
def chat():
    env = dict(os.environ, PYTHONUNBUFFERED="1", TERM="dumb")
    env.pop("EDGESSD_DEBUG", None)
    child = pexpect.spawn(sys.executable, ["-m", "edgessd.cli.main", "chat", "--temp", "0", "-n", "24", "-c", "1024",
                                           "-t", "2"],
                          cwd=str(REPO), env=env, encoding="utf-8", timeout=120, dimensions=(40, 160))
    child.expect("edgessd chat: smollm2-135m.gguf")
    child.expect_exact("> ")
    yield child
    if child.isalive():
        child.terminate(force=True)


def test_two_turns_regen_set_clear_stats_and_exit(chat):
    chat.sendline("What is the capital of France?")
    chat.expect("Paris")
    chat.expect(STATUS)
    assert "auto→plain" in chat.after
    chat.expect_exact("> ")

    chat.sendline("/set mode lookup")
    chat.expect_exact("[mode = lookup]")
    chat.sendline("And the capital of Italy?")
    chat.expect("Rome")
    chat.expect(STATUS)
    assert "lookup" in chat.after
    chat.expect_exact("> ")

    chat.sendline("/stats")  # the second turn decoded only its new tokens: the KV cache was kept
    chat.expect(r"tokens: prompt (\d+) \(decoded (\d+)\), generated (\d+)")
    n_prompt, n_decoded = int(chat.match.group(1)), int(chat.match.group(2))
    assert 0 < n_decoded < n_prompt

    chat.sendline("/regen")
    chat.expect("Rome")
    chat.expect(r"\[prompt cached \|")  # the same conversation: nothing to re-read
    chat.expect_exact("> ")

    chat.sendline("/set temp -1")
    chat.expect("error: bad value '-1' for temp")
    chat.sendline("/clear")
    chat.expect_exact("[conversation cleared]")
    chat.sendline("/stats off")
    chat.expect_exact("[status line off]")
    chat.sendline("/help")
    chat.expect("/regen")
    chat.sendeof()
    chat.expect(pexpect.EOF)
    chat.close()
    assert chat.exitstatus == 0


def test_ctrl_c_stops_the_reply_not_the_program(chat):
    chat.sendline("/set n 400")
    chat.expect_exact("[n = 400]")
    chat.sendline("Write a very long story about a dragon and a knight.")
    chat.expect_exact("a dragon and a knight.\r\n")  # the terminal's echo of the line
    chat.expect(r"\w+ \w+ \w+ \w+ \w+")  # the reply is streaming
    chat.sendintr()
    chat.expect(STATUS)
    assert "stopped" in chat.after
    chat.expect_exact("> ")
    chat.sendline("/exit")
    chat.expect(pexpect.EOF)
    chat.close()
    assert chat.exitstatus == 0


def test_multiline_message(chat):
    chat.sendline('"""')
    chat.sendline("Repeat exactly: blue whale")
    chat.sendline('"""')
    chat.expect("(?i)blue whale")
    chat.expect(STATUS)
    chat.sendline("/exit")
    chat.expect(pexpect.EOF)
