"""Peers: other runtimes, each in its own process, on the same rendered prompts.

- ``llama.cpp``: plain decoding, ``llama-completion -no-cnv`` (llama-cli needs the server
  build in this llama.cpp version).
- ``llama.cpp-ngram-simple``, ``llama.cpp-ngram-mod``, ``llama.cpp-ngram-map-k``:
  ``llama-speculative-simple --spec-type TYPE`` (no draft model), llama.cpp's defaults.
- ``llama.cpp-draft``: ``llama-speculative-simple -md DRAFT --spec-type draft-simple``, a
  smaller model of the same family drafting (qwen2.5-coder-0.5b for qwen2.5-coder-1.5b).
- ``llama-cpp-python-lookup``: ``llama_cpp.Llama(..., draft_model=LlamaPromptLookupDecoding)``
  in a child Python process (``lcp_worker.py``), num_pred_tokens 2 on CPU, 10 on a GPU
  (llama-cpp-python's advice).

The llama.cpp tools are built from the same vendored source with edgessd's patches
(``edgessd setup --peer-tools``, :mod:`.peer_tools`), into ``<cache>/llama-tools/<build key>/build/bin``; the key is the
installed libllama's (patches/build.py), so tools and library come from one source tree.
A peer that cannot run says why (``n/a: reason``); nothing is estimated in its place.
Figures are the tools' own: llama-completion's ``eval time`` line (tokens after the
first), llama-speculative-simple's ``decoded N tokens in S seconds`` (all generated).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..device import build_key
from ..fsutil import cache_dir

NGRAM_TYPES = {"llama.cpp-ngram-simple": "ngram-simple", "llama.cpp-ngram-mod": "ngram-mod",
               "llama.cpp-ngram-map-k": "ngram-map-k"}
PEERS = ("llama.cpp", *NGRAM_TYPES, "llama.cpp-draft", "llama-cpp-python-lookup")
TOOLS = ("llama-completion", "llama-speculative-simple")
DRAFT_FOR = {"qwen2.5-coder-1.5b": "qwen2.5-coder-0.5b"}  # registry target -> registry draft

RE_EVAL = re.compile(r"(?<!prompt )eval time\s*=\s*([\d.]+) ms\s*/\s*(\d+) runs\s*\(\s*([\d.]+) ms per token,"
                     r"\s*([\d.]+) tokens per second\)")
RE_DECODED = re.compile(r"decoded\s+(\d+) tokens in\s+([\d.]+) seconds, speed:\s+([\d.]+) t/s")
RE_DRAFTED = re.compile(r"\bn_drafted\s*=\s*(\d+)")  # lines may carry a log timestamp prefix
RE_ACCEPT = re.compile(r"\bn_accept\s*=\s*(\d+)")


class PeerError(Exception):
    """A peer run failed or printed no timing; the message is the n/a reason."""


@dataclass
class PeerResult:
    n_generated: int
    gen_tok_s: float
    text: str | None            # the generated text, None if it could not be separated
    n_drafted: int | None = None
    n_accepted: int | None = None
    n_cycles: int | None = None

    @property
    def mean_accepted(self) -> float | None:
        if self.n_accepted is None or not self.n_cycles:
            return None if self.n_accepted is None else 0.0
        return self.n_accepted / self.n_cycles

    @property
    def acceptance(self) -> float | None:
        if self.n_accepted is None or not self.n_drafted:
            return None
        return self.n_accepted / self.n_drafted


@dataclass
class PeerSetup:
    """What every peer run needs."""

    model_path: Path
    model_name: str | None       # registry name, if the model is a registry model
    tools_dir: Path | None
    n_threads: int
    n_ctx: int
    n_gpu_layers: int
    backend: str
    draft_path: Path | None = None
    commands: dict[str, list[str]] = field(default_factory=dict)  # one example command per peer


def stock_env() -> dict[str, str]:
    """The environment peers run in: ggml's stock CPU kernels. The tools are built from the same
    patched source, so without this they would run edgessd's batch kernels, and a comparison
    "against llama.cpp" would compare edgessd with itself."""
    return dict(os.environ, EDGESSD_CPU_KERNELS="stock")


def default_tools_dir() -> Path | None:
    """``$EDGESSD_LLAMA_TOOLS``, else the cached tools built for the installed library's key."""
    env = os.environ.get("EDGESSD_LLAMA_TOOLS")
    if env:
        return Path(env)
    key = build_key()
    return cache_dir() / "llama-tools" / key / "build" / "bin" if key else None


def tools_info(tools_dir: Path | None) -> dict:
    """The tools' build record (tools.json beside bin/), or where it was looked for."""
    if tools_dir is None:
        return {"dir": None}
    for meta in (tools_dir.parent / "tools.json", tools_dir.parent.parent / "tools.json"):
        try:
            return {"dir": str(tools_dir), **json.loads(meta.read_text())}
        except (OSError, ValueError):
            continue
    return {"dir": str(tools_dir)}


def why_unavailable(name: str, setup: PeerSetup) -> str | None:
    """None if ``name`` can run here, else the reason."""
    if name == "llama-cpp-python-lookup":
        try:
            import llama_cpp.llama_speculative  # noqa: F401
        except ImportError as e:
            return f"llama_cpp.llama_speculative cannot be imported ({e})"
        return None
    tool = "llama-completion" if name == "llama.cpp" else "llama-speculative-simple"
    if setup.tools_dir is None:
        return "no llama.cpp tools directory (the patched build's key is unknown)"
    if not (setup.tools_dir / tool).is_file():
        return f"{tool} not built in {setup.tools_dir} (`edgessd setup --peer-tools` builds it)"
    if name == "llama.cpp-draft" and setup.draft_path is None:
        return (f"no draft model for {setup.model_name or setup.model_path.name} "
                f"(drafting pairs: {', '.join(f'{d} for {t}' for t, d in DRAFT_FOR.items())})")
    return None


def tool_command(name: str, setup: PeerSetup, prompt: str, n_predict: int, seed: int) -> list[str]:
    """The command line of a llama.cpp peer (greedy, same threads, context and offload).

    The prompt goes in ``-p``: ``-f`` drops a trailing newline, and chat templates end in one.
    """
    common = ["-m", str(setup.model_path), "-p", prompt, "-n", str(n_predict), "--temp", "0",
              "--seed", str(seed), "-t", str(setup.n_threads), "-c", str(setup.n_ctx)]
    if setup.n_gpu_layers:  # a CPU build warns about any -ngl
        common += ["-ngl", str(setup.n_gpu_layers)]
    if name == "llama.cpp":
        return [str(setup.tools_dir / "llama-completion"), *common, "-no-cnv", "--no-display-prompt"]
    spec = [str(setup.tools_dir / "llama-speculative-simple"), *common]
    if name in NGRAM_TYPES:
        return [*spec, "--spec-type", NGRAM_TYPES[name]]
    if name == "llama.cpp-draft":
        assert setup.draft_path is not None, "checked by why_unavailable"
        return [*spec, "-md", str(setup.draft_path), "--spec-type", "draft-simple",
                *(["-ngld", str(setup.n_gpu_layers)] if setup.n_gpu_layers else [])]
    raise AssertionError(f"not a llama.cpp peer: {name}")


def parse_completion(stdout: str, stderr: str) -> PeerResult:
    """llama-completion's output: the generated text on stdout, perf lines on stderr."""
    m = RE_EVAL.search(stderr)
    if not m:
        raise PeerError("llama-completion printed no eval time line")
    text = stdout.removesuffix("\n\n")
    eos = text.endswith(" [end of text]\n")
    # each sampled token but the last is decoded; an end-of-generation token is not emitted
    n_gen = int(m.group(2)) + (0 if eos else 1)
    return PeerResult(n_gen, float(m.group(4)), text.removesuffix(" [end of text]\n"))


def parse_speculative(stdout: str, stderr: str, prompt: str) -> PeerResult:
    """llama-speculative-simple's output: prompt and text on stdout, stats on stderr."""
    both = stdout + "\n" + stderr
    m = RE_DECODED.search(both)
    if not m:
        raise PeerError("llama-speculative-simple printed no 'decoded ... tokens' line")
    n_gen, speed = int(m.group(1)), float(m.group(3))
    drafted, accepted = RE_DRAFTED.search(both), RE_ACCEPT.search(both)
    n_drafted = int(drafted.group(1)) if drafted else None
    n_accepted = int(accepted.group(1)) if accepted else None
    cycles = n_gen - n_accepted if n_accepted is not None else None  # each cycle emits accepted + 1
    return PeerResult(n_gen, speed, _after_prompt(stdout, prompt), n_drafted, n_accepted, cycles)


def _after_prompt(stdout: str, prompt: str) -> str | None:
    """The generated text: what the tool printed after echoing the prompt (special tokens shown)."""
    for probe in (prompt, prompt[-64:], prompt[-24:]):
        i = stdout.find(probe)
        if probe and i >= 0:
            return stdout[i + len(probe):].removesuffix("\n\n")
    return None


def run_tool(name: str, setup: PeerSetup, prompt: str, n_predict: int, seed: int, timeout: float) -> PeerResult:
    """One llama.cpp peer run on one rendered prompt."""
    cmd = tool_command(name, setup, prompt, n_predict, seed)
    setup.commands.setdefault(name, [a if a != prompt else "PROMPT" for a in cmd])
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=timeout,
                           stdin=subprocess.DEVNULL, env=stock_env())
    except subprocess.TimeoutExpired:
        raise PeerError(f"{Path(cmd[0]).name} timed out after {timeout:.0f} s") from None
    if r.returncode != 0:
        last = next((ln for ln in reversed(r.stderr.strip().splitlines()) if ln.strip()), "")
        raise PeerError(f"{Path(cmd[0]).name} exited with {r.returncode}: {last[:200]}")
    if name == "llama.cpp":
        return parse_completion(r.stdout, r.stderr)
    return parse_speculative(r.stdout, r.stderr, prompt)


def run_lcp_lookup(setup: PeerSetup, prompts: list[str], n_predict: int, timeout: float) -> list[PeerResult]:
    """llama-cpp-python's prompt lookup decoding over all ``prompts``, in one child process."""
    pred = 2 if setup.backend == "cpu" or setup.n_gpu_layers == 0 else 10
    job = {"model": str(setup.model_path), "n_ctx": setup.n_ctx, "n_threads": setup.n_threads,
           "n_gpu_layers": setup.n_gpu_layers, "n_predict": n_predict, "num_pred_tokens": pred, "prompts": prompts}
    cmd = [sys.executable, "-m", "edgessd.benchmark.lcp_worker"]
    setup.commands.setdefault("llama-cpp-python-lookup", [*cmd, f"(num_pred_tokens={pred}, max_ngram_size=2)"])
    try:
        r = subprocess.run(cmd, input=json.dumps(job), capture_output=True, text=True, timeout=timeout,
                           env=stock_env())
    except subprocess.TimeoutExpired:
        raise PeerError(f"llama-cpp-python lookup timed out after {timeout:.0f} s") from None
    if r.returncode != 0:
        last = next((ln for ln in reversed(r.stderr.strip().splitlines()) if ln.strip()), "")
        raise PeerError(f"llama-cpp-python lookup exited with {r.returncode}: {last[:200]}")
    out = []
    for line in r.stdout.splitlines():
        d = json.loads(line)
        out.append(PeerResult(d["n_generated"], d["gen_tok_s"], d["text"], d["n_drafted"], d["n_accepted"],
                              d["n_cycles"]))
    if len(out) != len(prompts):
        raise PeerError(f"llama-cpp-python lookup returned {len(out)} results for {len(prompts)} prompts")
    return out
