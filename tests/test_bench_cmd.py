"""``edgessd bench``: a real run of the default model writes every output; bad input is one
line; peers that cannot run say why; the tools' real output parses; power is never faked."""
from __future__ import annotations

import json
import shutil
import stat

import numpy as np
import pytest
from conftest import REPO, run_cli

PROMPTS = REPO / "bench" / "prompts" / "bench.jsonl"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _pick(qids: list[str], dest, turns: int | None = None):
    rows = {}
    for line in PROMPTS.read_text().splitlines():
        d = json.loads(line)
        if d["question_id"] in qids:
            if turns:
                d["turns"] = d["turns"][:turns]
            rows[d["question_id"]] = d
    dest.write_text("".join(json.dumps(rows[q]) + "\n" for q in qids))
    return dest


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    """One real run: smollm2-135m, two categories, plain/lookup/auto/swift, and a peer without tools."""
    tmp = tmp_path_factory.mktemp("bench")
    prompts = _pick(["code-001", "qa-005"], tmp / "two.jsonl", turns=1)
    out = {k: tmp / f"out.{k}" for k in ("json", "md", "png")}
    r = run_cli("bench", "smollm2-135m", "--prompts", str(prompts), "-n", "20",
                "--methods", "plain,lookup,auto,swift,llama.cpp", "--repeat", "1", "-t", "2",
                "--tools-dir", str(tmp / "no-tools"), "--json", str(out["json"]), "--md", str(out["md"]),
                "--plot", str(out["png"]))
    return r, out


def test_bench_writes_json_rows_markdown_and_png(bench_run):
    r, out = bench_run
    assert r.returncode == 0, r.stderr
    rep = json.loads(out["json"].read_text())
    rows = rep["rows"]
    assert len(rows) == 2 * 4  # two prompts x plain, lookup, auto, swift (llama.cpp could not run)
    for row in rows:
        for key in ("method", "category", "question_id", "n_generated", "gen_tok_s", "speedup", "mean_accepted",
                    "acceptance", "identical"):
            assert key in row
        assert row["identical"] is True, row  # greedy methods reproduce plain's tokens
        assert 0 < row["n_generated"] <= 20 and row["gen_tok_s"] > 0
    assert {r_["category"] for r_ in rows} == {"code", "qa"}
    plain_all = next(s for s in rep["summary"] if s["method"] == "plain" and s["category"] == "all")
    assert plain_all["speedup"] == pytest.approx(1.0) and plain_all["identical"] == 2
    lookup = [x for x in rows if x["method"] == "lookup"]
    assert any(x["n_drafted"] > 0 for x in lookup)
    assert out["png"].read_bytes()[:8] == PNG_MAGIC
    md = out["md"].read_text()
    assert "| method | category | prompts | tok/s | speedup |" in md and "| lookup | qa |" in md
    assert md in r.stdout  # printed as well


def test_bench_records_device_build_and_the_unrunnable_peer(bench_run):
    r, out = bench_run
    rep = json.loads(out["json"].read_text())
    dev = rep["device"]
    for key in ("cpu", "cores_physical", "cores_logical", "backend", "gpu", "preset"):
        assert key in dev
    assert dev["threads"] == 2 and dev["cpu"]
    assert rep["build"]["llama_cpp_python"] and "key" in rep["build"]
    assert rep["settings"]["n_predict"] == 20 and rep["command"][:2] == ["edgessd", "bench"]
    assert rep["unavailable"]["llama.cpp"].startswith("llama-completion not built in")
    assert "- llama.cpp: n/a: llama-completion not built" in out["md"].read_text()


@pytest.mark.skipif(shutil.which("tegrastats") is not None, reason="this machine has tegrastats")
def test_bench_reports_power_as_unavailable_without_tegrastats(bench_run):
    r, out = bench_run
    rep = json.loads(out["json"].read_text())
    assert rep["power"]["available"] is False and "tegrastats not found" in rep["power"]["reason"]
    assert all(row["tok_per_joule"] is None for row in rep["rows"])
    assert "- power: n/a: tegrastats not found" in out["md"].read_text()
    assert "tok/J" not in out["md"].read_text()


def test_bench_all_turns_carries_plains_reply(tmp_path):
    prompts = _pick(["qa-005"], tmp_path / "two-turns.jsonl")
    out = tmp_path / "o.json"
    r = run_cli("bench", "smollm2-135m", "--prompts", str(prompts), "-n", "6", "--methods", "plain,lookup",
                "--repeat", "1", "--turns", "all", "-t", "2", "--json", str(out))
    assert r.returncode == 0, r.stderr
    rows = json.loads(out.read_text())["rows"]
    assert sorted((x["method"], x["turn"]) for x in rows) == [("lookup", 1), ("lookup", 2), ("plain", 1), ("plain", 2)]
    assert all(x["identical"] for x in rows)


@pytest.mark.parametrize("args,needle", [
    (("--prompts", "/no/such/prompts.jsonl"), "prompt file not found"),
    (("--prompts", str(PROMPTS), "--methods", "plain,warp"), "unknown method 'warp'"),
    (("--prompts", str(PROMPTS), "--stream", "sideways"), "--stream"),
])
def test_bench_bad_input_is_one_line_with_exit_code_2(args, needle):
    r = run_cli("bench", "smollm2-135m", *args)
    assert r.returncode == 2, r
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgessd: error: ") and needle in lines[0], r.stderr


def test_methods_expand_and_plain_comes_first():
    from edgessd.benchmark.methods import IN_PROCESS
    from edgessd.benchmark.peers import PEERS
    from edgessd.benchmark.suite import parse_methods

    assert parse_methods("lookup,auto") == ["plain", "lookup", "auto"]
    assert parse_methods("all") == ["plain", *[m for m in IN_PROCESS if m != "plain"], *PEERS]
    assert parse_methods("auto,peers")[:2] == ["plain", "auto"]


def test_mixed_stream_is_a_seeded_permutation():
    from edgessd.benchmark.suite import select_prompts

    grouped = select_prompts(PROMPTS, 2, "by-category", 0)
    mixed = select_prompts(PROMPTS, 2, "mixed", 0)
    assert len(grouped) == 16 and [p.category for p in grouped[:2]] == ["code", "code"]
    assert sorted(p.question_id for p in mixed) == sorted(p.question_id for p in grouped)
    assert mixed == select_prompts(PROMPTS, 2, "mixed", 0) and mixed != grouped


def test_in_place_search_scores_like_block_matchness_and_restores_the_cache():
    """SWIFT's search scores sets in the engine's own context; the decode loop's cache must survive."""
    from edgessd.acceptance import block_matchness
    from edgessd.benchmark.methods import score_sets_in_place
    from edgessd.engine import Engine, default_skip_set
    from edgessd.skipset import SkipSet

    eng = Engine("smollm2-135m", n_ctx=512, n_threads=2, learn="off")
    msgs = [{"role": "user", "content": "List three primary colors and one use of each."}]
    prompt = eng.tokenize(msgs)
    res = eng.generate(msgs, n_predict=20, mode="plain")
    history = np.array(prompt + res.tokens)
    cands = [default_skip_set(30), SkipSet.of([], range(1, 29, 2))]
    scores = score_sets_in_place(eng, history, len(prompt), cands)
    assert eng.ctx.kv_pos_max() == len(history) - 2  # history[:-1] is cached again
    again = eng.generate(msgs, n_predict=20, mode="plain")  # reuses the rebuilt cache
    assert again.tokens == res.tokens
    for cand, score in zip(cands, scores):
        ref = block_matchness(eng.ctx, list(history[:-1]), cand.flags(30), len(prompt) - 1, history[1:])
        assert score == pytest.approx(ref)
    eng.close()


def test_swift_searches_after_16_tokens_and_stays_greedy(bench_run):
    r, out = bench_run
    rep = json.loads(out["json"].read_text())
    for swift in (x for x in rep["rows"] if x["method"] == "swift"):
        assert swift["mode"].startswith("swift→") and swift["skip"] in rep["method_details"]["swift"]["candidates"]
        assert swift["n_drafted"] > 0 and swift["identical"] is True


# -- peers: the n/a path, and parsing real output ----------------------------------------------------


def _setup(tmp_path, **kw):
    from edgessd.benchmark.peers import PeerSetup

    base = dict(model_path=tmp_path / "m.gguf", model_name="smollm2-135m", tools_dir=tmp_path / "bin", n_threads=2,
                n_ctx=2048, n_gpu_layers=0, backend="cpu")
    return PeerSetup(**(base | kw))


def test_peers_say_why_they_cannot_run(tmp_path):
    from edgessd.benchmark.peers import why_unavailable

    s = _setup(tmp_path)
    assert "llama-completion not built in" in why_unavailable("llama.cpp", s)
    assert "llama-speculative-simple not built" in why_unavailable("llama.cpp-ngram-mod", s)
    (tmp_path / "bin").mkdir()
    for tool in ("llama-completion", "llama-speculative-simple"):
        (tmp_path / "bin" / tool).write_text("")
    assert why_unavailable("llama.cpp", s) is None
    assert why_unavailable("llama.cpp-draft", s).startswith("no draft model for smollm2-135m")
    assert why_unavailable("llama.cpp-draft", _setup(tmp_path, draft_path=tmp_path / "d.gguf")) is None
    assert "no llama.cpp tools directory" in why_unavailable("llama.cpp", _setup(tmp_path, tools_dir=None))


def test_a_failing_tool_is_a_peer_error_with_its_last_line(tmp_path):
    from edgessd.benchmark.peers import PeerError, run_tool

    (tmp_path / "bin").mkdir()
    tool = tmp_path / "bin" / "llama-speculative-simple"
    tool.write_text("#!/bin/sh\necho 'error: invalid argument: --spec-type' >&2\nexit 1\n")
    tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    with pytest.raises(PeerError, match="exited with 1: error: invalid argument: --spec-type"):
        run_tool("llama.cpp-ngram-simple", _setup(tmp_path), "hello", 8, 0, timeout=30)


# -- power -------------------------------------------------------------------------------------------


def test_tegrastats_lines_parse_and_absence_is_reported(monkeypatch, tmp_path):
    from edgessd.benchmark.power import PowerMeter, detect, parse_tegrastats

    # line layouts as NVIDIA's tegrastats documentation shows them (Orin Nano; Nano; AGX Orin)
    orin = ("RAM 2448/7620MB (lfb 2x4MB) SWAP 0/3810MB (cached 0MB) CPU [2%@729,0%@729] GR3D_FREQ 0% "
            "cpu@47.5C VDD_IN 4872mW/4872mW VDD_CPU_GPU_CV 523mW/523mW VDD_SOC 1413mW/1413mW")
    nano = "RAM 1600/3964MB CPU [5%@102,3%@102] EMC_FREQ 0% GR3D_FREQ 0% POM_5V_IN 2414/2414 POM_5V_GPU 0/0"
    agx = "RAM 3000/30000MB GR3D_FREQ 0% VDD_GPU_SOC 3206mW/3206mW VDD_CPU_CV 400mW/400mW VIN_SYS_5V0 2615mW/2615mW"
    assert parse_tegrastats(orin) == (4872.0, "VDD_IN")
    assert parse_tegrastats(nano) == (2414.0, "POM_5V_IN")
    assert parse_tegrastats(agx) == (6221.0, "sum of VDD_CPU_CV+VDD_GPU_SOC+VIN_SYS_5V0")
    assert parse_tegrastats("RAM 1600/3964MB CPU [5%@102]") is None
    monkeypatch.setenv("PATH", str(tmp_path))
    status = detect()
    assert status.available is False and status.reason.startswith("tegrastats not found")
    meter = PowerMeter(status).start()
    assert meter.energy_j(0.0, 1.0) is None
    meter.stop()


# Real output of the tools built by `edgessd setup --peer-tools` (this vendored llama.cpp, CPU, 2 threads, smollm2-135m,
# prompt "<|im_start|>user\nName three colors.<|im_end|>\n<|im_start|>assistant", -n 16 --temp 0);
# stderr trimmed to the lines around the figures, as printed (log timestamps included).
COMPLETION_STDOUT = "\n1. Red\n2. Blue\n3. Green [end of text]\n\n\n"
COMPLETION_STDERR = "\n".join([
    "0.04.975.077 I generate: n_ctx = 2048, n_batch = 2048, n_predict = 16, n_keep = 0",
    "0.04.975.077 I ",
    "0.43.124.305 I common_perf_print:    sampling time =       2.42 ms",
    "0.43.124.307 I common_perf_print:    samplers time =       1.02 ms /    25 tokens",
    "0.43.124.314 I common_perf_print:        load time =    4695.96 ms",
    "0.43.124.315 I common_perf_print: prompt eval time =    4523.86 ms /    12 tokens "
    "(  376.99 ms per token,     2.65 tokens per second)",
    "0.43.124.317 I common_perf_print:        eval time =   29168.67 ms /    12 runs   "
    "( 2430.72 ms per token,     0.41 tokens per second)",
    "0.43.124.317 I common_perf_print:       total time =   38149.66 ms /    24 tokens", ""])
SPEC_PROMPT = "<|im_start|>user\nName three colors.<|im_end|>\n<|im_start|>assistant"
SPEC_STDOUT = "\n\n" + SPEC_PROMPT + "\n1. Red\n2. Blue\n3. Green\n\n\n\n"
SPEC_STDERR = "\n".join([
    "warning: no usable GPU found, --gpu-layers option will be ignored",
    "0.00.689.702 I cmn          init: llama threadpool init, n_threads = 2",
    "0.02.804.763 I encoded   12 tokens in    0.230 seconds, speed:   52.147 t/s",
    "0.02.804.797 I decoded   13 tokens in    1.561 seconds, speed:    8.326 t/s",
    "0.02.804.817 I ",
    "0.02.804.836 I n_draft   = 3",
    "0.02.804.856 I n_predict = 13",
    "0.02.804.875 I n_drafted = 0",
    "0.02.804.894 I n_accept  = 0",
    "0.02.804.914 I accept    = -nan%",
    "0.02.805.145 I common_perf_print: prompt eval time =     413.97 ms /    14 tokens "
    "(   29.57 ms per token,    33.82 tokens per second)",
    "0.02.805.168 I common_perf_print:        eval time =    1388.30 ms /    12 runs   "
    "(  115.69 ms per token,     8.64 tokens per second)", ""])


def test_llama_completion_output_parses():
    from edgessd.benchmark.peers import PeerError, parse_completion

    res = parse_completion(COMPLETION_STDOUT, COMPLETION_STDERR)
    assert res.gen_tok_s == pytest.approx(0.41)  # the eval line, not the prompt eval line
    assert res.n_generated == 12  # 12 decodes; the end-of-text token is not emitted
    assert res.text == "\n1. Red\n2. Blue\n3. Green" and res.mean_accepted is None
    with pytest.raises(PeerError, match="no eval time line"):
        parse_completion("", "error: failed to load model\n")


def test_llama_speculative_simple_output_parses():
    from edgessd.benchmark.peers import PeerError, parse_speculative
    from edgessd.benchmark.suite import prefix_identical

    res = parse_speculative(SPEC_STDOUT, SPEC_STDERR, SPEC_PROMPT)
    assert (res.n_generated, res.gen_tok_s, res.n_drafted, res.n_accepted) == (13, pytest.approx(8.326), 0, 0)
    assert res.mean_accepted == 0.0 and res.acceptance is None  # nothing drafted: no acceptance rate
    assert res.text.rstrip() == "\n1. Red\n2. Blue\n3. Green"
    assert prefix_identical(res.text, "\n1. Red\n2. Blue\n3. Green") is True
    assert prefix_identical(res.text, "\n1. Red\n2. Green") is False
    with pytest.raises(PeerError, match="no 'decoded"):
        parse_speculative("", "error: unknown value for --spec-type: 'ngram-mod'\n", SPEC_PROMPT)


def test_markdown_lists_where_a_method_parted_from_plain(bench_run):
    from edgessd.benchmark import report

    r, out = bench_run
    rep = json.loads(out["json"].read_text())
    assert "Not identical to plain" not in report.markdown(rep)  # every greedy method matched plain
    lookup = next(x for x in rep["rows"] if x["method"] == "lookup")
    lookup["identical"], lookup["first_diff"] = False, 7
    md = report.markdown(rep)
    assert f"- lookup, {lookup['question_id']} turn 1: from token 7, in 1 repeat(s)" in md
