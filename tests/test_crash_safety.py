"""No data lost: a SIGKILL at any moment leaves the old file or the new one, never half of one;
two processes filling the same cache at once do not corrupt it; anchors learned online are on
disk the moment they are learned.

Everything runs in real processes that are really killed: DomainIndex.save and save_profile
in a loop, `edgessd calibrate`, `edgessd models pull` (a real fetch into a private cache).
The random kill times come from a seeded generator; the seed is in every failure message
(set EDGESSD_TEST_SEED to replay one).
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import EDGESSD, REPO

from edgessd import device, registry
from edgessd.domains import DomainIndex, DomainSet, load_index
from edgessd.features import FeatureSpec
from edgessd.fsutil import sha256_file
from edgessd.profiler import SCHEMA, Profile, load_profile, save_profile
from edgessd.skipset import SkipSet

SMOL = "smollm2-135m"
SEED = int(os.environ.get("EDGESSD_TEST_SEED", time.time_ns() % 2**32))


@pytest.fixture
def rng() -> random.Random:
    return random.Random(SEED)


def synthetic_index(seed: int, n: int = 6, dim: int = 8, sha: str = "ab" * 32) -> DomainIndex:
    r = np.random.default_rng(seed)
    anchors = r.standard_normal((n, dim)).astype(np.float32)
    anchors /= np.linalg.norm(anchors, axis=1, keepdims=True)
    names = ["code"] * (n // 2) + ["chat"] * (n - n // 2)
    domains = {"code": [DomainSet(SkipSet.of([seed % 7], [3]), 1.0 + seed, 0.5, 4)],
               "chat": [DomainSet(SkipSet.of([], [seed % 5]), 0.5, 0.3, 4)]}
    return DomainIndex(sha, FeatureSpec(), dim, anchors, names, domains, ood_distance=0.5, k=1,
                       meta={"seed": seed})


def same_index(a: DomainIndex, b: DomainIndex) -> bool:
    return (a.anchor_domains == b.anchor_domains and a.domains == b.domains and a.meta == b.meta
            and np.allclose(a.anchors, b.anchors, atol=1e-6))  # hnswlib renormalises (cosine space)


def spawn(code: str, *args: str, env: dict | None = None) -> subprocess.Popen:
    """A Python child in its own process group (so a kill takes its children too)."""
    return subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=REPO, env={**os.environ, **(env or {})}, start_new_session=True)


def kill(proc: subprocess.Popen) -> None:
    """SIGKILL the child's whole process group (pip under a pull too), and reap it."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()


def wait_line(proc: subprocess.Popen, expected: str, timeout: float = 60) -> None:
    """Block until the child prints ``expected`` (it has imported and is about to write)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.strip() == expected:
            return
        if not line and proc.poll() is not None:
            raise AssertionError(f"child ended (rc {proc.returncode}): {proc.stderr.read()[-2000:]}")
    raise AssertionError(f"child never printed {expected!r}")


# -- saves killed at random moments ---------------------------------------------------------------------
SAVE_LOOP = r"""
import sys
from edgessd.domains import load_index
from edgessd.profiler import load_profile, save_profile
a, b, prof_file, target, prof_target = sys.argv[1:6]
indexes = [load_index(a), load_index(b)]
prof = load_profile(prof_file)
print("ready", flush=True)
i = 0
while True:
    indexes[i % 2].save(target)
    prof.rebuild_ms = float(i)
    save_profile(prof, prof_target)
    i += 1
"""


def test_saves_killed_at_random_moments_leave_the_old_file_or_the_new(tmp_path, rng):
    a, b = synthetic_index(1), synthetic_index(2)
    a.save(tmp_path / "a")
    b.save(tmp_path / "b")
    prof = Profile(schema=SCHEMA, model_sha256="ab" * 32, model_name="m.gguf", device=device.fingerprint(1),
                   n_layer=2, ctx=[64], t1_ms=[5.0], attn_ms=[0.2], mlp_ms=[0.3], base_ms=[1.0],
                   verify_ms=[[5.0, 8.0]], rebuild_ms=-0.0, attn_fit={"a": 0.2, "b": 0.0, "rmse_ms": 0.0},
                   mlp_fit={"mean": 0.3, "rmse_ms": 0.0}, match_attn=[0.9, 0.8], match_mlp=[0.7, 0.6], seconds=1.0)
    save_profile(prof, tmp_path / "prof-template.json")
    target, prof_target = tmp_path / "index", tmp_path / "profile.json"
    a.save(target)  # there is always an old one
    save_profile(prof, prof_target)
    for kill_no in range(10):
        child = spawn(SAVE_LOOP, str(tmp_path / "a"), str(tmp_path / "b"), str(tmp_path / "prof-template.json"),
                      str(target), str(prof_target))
        wait_line(child, "ready")
        time.sleep(rng.uniform(0.0, 0.15))
        kill(child)
        where = f"kill {kill_no}, EDGESSD_TEST_SEED={SEED}"
        loaded = load_index(target)  # never an IndexFileError
        assert same_index(loaded, a) or same_index(loaded, b), where
        assert load_profile(prof_target).rebuild_ms >= 0, where
    a.save(target)  # the next save tidies the anchors files killed saves left: only the one named stays
    named = json.loads((target / "index.json").read_text())["index_file"]
    assert [p.name for p in target.glob("anchors-*.bin")] == [named]


def test_two_processes_saving_one_index_at_once_leave_a_whole_one(tmp_path):
    a, b = synthetic_index(3), synthetic_index(4)
    a.save(tmp_path / "a")
    b.save(tmp_path / "b")
    code = SAVE_LOOP.replace("prof = load_profile(prof_file)", "").replace(
        "    prof.rebuild_ms = float(i)\n    save_profile(prof, prof_target)\n", "")
    target = tmp_path / "index"
    one = spawn(code, str(tmp_path / "a"), str(tmp_path / "b"), "-", str(target), "-")
    two = spawn(code, str(tmp_path / "b"), str(tmp_path / "a"), "-", str(target), "-")
    for child in (one, two):
        wait_line(child, "ready")
    time.sleep(1.5)
    kill(one)
    kill(two)
    loaded = load_index(target)
    assert same_index(loaded, a) or same_index(loaded, b)


def test_reading_an_index_while_another_process_saves_it_never_fails(tmp_path):
    a, b = synthetic_index(5), synthetic_index(6)
    a.save(tmp_path / "a")
    b.save(tmp_path / "b")
    target = tmp_path / "index"
    a.save(target)
    code = SAVE_LOOP.replace("prof = load_profile(prof_file)", "").replace(
        "    prof.rebuild_ms = float(i)\n    save_profile(prof, prof_target)\n", "")
    writer = spawn(code, str(tmp_path / "a"), str(tmp_path / "b"), "-", str(target), "-")
    failures: dict[str, int] = {}
    loads = 0
    try:
        wait_line(writer, "ready")
        start = time.monotonic()  # at least 3 s and 100 loads beside the writer; a busy machine takes longer
        while (time.monotonic() - start < 3.0 or loads < 100) and time.monotonic() - start < 120:
            try:
                load_index(target)
                loads += 1
            except Exception as e:  # noqa: BLE001 - counted: the test is about which ones happen
                failures[type(e).__name__] = failures.get(type(e).__name__, 0) + 1
    finally:
        kill(writer)
    assert loads >= 100 and failures == {}, f"{loads} loads, failures {failures}"


def test_anchors_learned_by_two_processes_are_both_kept(tmp_path):
    synthetic_index(7).save(tmp_path)
    first, second = load_index(tmp_path), load_index(tmp_path)  # two chat sessions on one model
    found = DomainSet(SkipSet.of([2], [2]), 1.5, 0.7, 4)
    v = np.ones(8, np.float32) / np.sqrt(8)
    first.learn(v, found)
    first.save(tmp_path)
    second.learn(-v, found)
    second.save(tmp_path)
    assert len(load_index(tmp_path).learned) == 2


@pytest.mark.parametrize("factor", [2, 1000])
def test_a_sidecar_dim_that_disagrees_with_the_anchors_file_is_an_index_file_error(tmp_path, factor):
    synthetic_index(8).save(tmp_path)
    side = tmp_path / "index.json"
    side.write_text(side.read_text().replace('"dim": 8', f'"dim": {8 * factor}'))
    code = ("import sys\nfrom edgessd.domains import load_index, IndexFileError\n"
            "try:\n    idx = load_index(sys.argv[1])\nexcept IndexFileError:\n    print('refused')\n"
            "else:\n    print('loaded', idx.anchors.shape)\n")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, cwd=REPO,
                       timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "refused", (r.returncode, r.stdout, r.stderr[-500:])


# -- anchors learned online ----------------------------------------------------------------------------
LEARN_AND_CRASH = r"""
import os, signal, sys
import numpy as np
from pathlib import Path
from edgessd import registry
from edgessd.domains import DomainIndex, DomainSet, index_dir
from edgessd.engine import Engine
from edgessd.features import FeatureSpec
from edgessd.fsutil import sha256_file
from edgessd.skipset import SkipSet
model = Path(sys.argv[1])
eng = Engine(model, n_ctx=512, n_threads=1, learn="on")
sha = registry.model_sha256(model)
spec = FeatureSpec(last_layers=4)
near = eng.prompt_feature("Write a Python function that adds two numbers.", spec)
# every prompt is out of domain (threshold 0); the nearest domain's set is useless, the other's good
DomainIndex(sha, spec, len(near), np.stack([near, -near]), ["near", "far"],
            {"near": [DomainSet(SkipSet.of(range(30), range(30)), 0.1, 0.05, 4)],
             "far": [DomainSet(SkipSet.of([], [20]), 2.0, 0.8, 4)]}, ood_distance=0.0, k=1).save(index_dir(sha))
eng.reset()
r = eng.generate("Write a Python function that multiplies two numbers.", n_predict=16, mode="layerskip")
print("generated", r.domain, len(r.tokens), flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # a crash right after the reply: nothing else gets to run
"""


def test_an_anchor_learned_online_survives_a_crash(tmp_path):
    smol = registry.resolve(SMOL)
    cache = tmp_path / "cache"
    r = subprocess.run([sys.executable, "-c", LEARN_AND_CRASH, str(smol)], capture_output=True, text=True,
                       cwd=REPO, env={**os.environ, "EDGESSD_CACHE_DIR": str(cache)}, timeout=300)
    assert r.returncode == -signal.SIGKILL and r.stdout.startswith("generated near? 16"), (r.stdout, r.stderr)
    idx = load_index(cache / "index" / registry.spec(SMOL).sha256[:16], model_sha256=registry.spec(SMOL).sha256)
    assert len(idx.learned) == 1 and idx.anchor_domains[:2] == ["near", "far"]
    assert idx.best_set(idx.learned[0]).skip == SkipSet.of([], [20])  # the better set, learned for this prompt


# -- edgessd calibrate killed at random moments ----------------------------------------------------------
CALIBRATE = ("calibrate", SMOL, "--domains", "code", "--search-prompts", "1", "--candidates", "2", "--sizes", "0.3",
             "-n", "4", "-t", "1")


def calibrate_proc(out: Path) -> subprocess.Popen:
    return subprocess.Popen([*EDGESSD, *CALIBRATE, "-o", str(out)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, cwd=REPO, start_new_session=True)


def test_calibrate_killed_at_a_random_moment_leaves_no_index_or_a_whole_one(tmp_path, rng):
    out = tmp_path / "index"
    proc = calibrate_proc(out)
    time.sleep(rng.uniform(0.5, 12.0))  # a full run takes about 12 s here
    kill(proc) if proc.poll() is None else proc.wait()
    if (out / "index.json").exists():
        assert load_index(out).model_sha256 == registry.spec(SMOL).sha256, f"EDGESSD_TEST_SEED={SEED}"


def test_calibrate_killed_while_saving_leaves_the_old_index_or_the_new(tmp_path, rng):
    out = tmp_path / "index"
    old = synthetic_index(9, dim=8)
    old.save(out)
    before = set(os.listdir(out))
    proc = calibrate_proc(out)
    deadline = time.monotonic() + 180
    while proc.poll() is None and time.monotonic() < deadline:
        if set(os.listdir(out)) - before:  # the save has begun: its first temporary file
            time.sleep(rng.uniform(0.0, 0.01))
            break
        time.sleep(0.001)
    saw = sorted(set(os.listdir(out)) - before)
    kill(proc)
    print("new entries when killed:", saw, "left:", sorted(set(os.listdir(out)) - before))
    loaded = load_index(out)
    assert same_index(loaded, old) or loaded.model_sha256 == registry.spec(SMOL).sha256, (saw, SEED)


# -- edgessd models pull killed at random moments, and two at once ------------------------------------------
def pull_proc(cache: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([*EDGESSD, "models", "pull", SMOL, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO, start_new_session=True,
                            env={**os.environ, "EDGESSD_CACHE_DIR": str(cache)})


def test_two_pulls_at_once_fetch_once_and_agree(tmp_path):
    cache = tmp_path / "cache"
    procs = [pull_proc(cache) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    target = cache / "models" / f"{SMOL}.gguf"
    assert [o[0].strip() for o in outs] == [str(target)] * 2
    assert sum("part 1/1" in err for _, err in outs) == 1  # the second waited on the lock, then reused it
    assert sha256_file(target) == registry.spec(SMOL).sha256
    assert sorted(p.name for p in target.parent.iterdir()) == [f".{SMOL}.lock", f"{SMOL}.gguf",
                                                               f"{SMOL}.gguf.verified.json"]


def test_pulls_killed_at_random_moments_leave_the_old_model_or_the_new(tmp_path, rng):
    cache = tmp_path / "cache"
    target = cache / "models" / f"{SMOL}.gguf"
    first = pull_proc(cache)
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    good = registry.spec(SMOL).sha256
    t_full = 5.0
    for kill_no in range(3):
        proc = pull_proc(cache, "--force")
        time.sleep(rng.uniform(0.3, t_full))
        kill(proc)
        assert sha256_file(target) == good, f"kill {kill_no}, EDGESSD_TEST_SEED={SEED}"
    again = pull_proc(cache)  # verifies the file (its stamp may be stale) and removes killed pulls' leftovers
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0 and out.strip() == str(target), err
    assert sorted(p.name for p in target.parent.iterdir()) == [f".{SMOL}.lock", f"{SMOL}.gguf",
                                                               f"{SMOL}.gguf.verified.json"]



PREPARE_INDEX = r"""
import sys
import numpy as np
from pathlib import Path
from edgessd import registry
from edgessd.domains import DomainIndex, DomainSet, index_dir
from edgessd.engine import Engine
from edgessd.features import FeatureSpec
from edgessd.skipset import SkipSet
model = Path(sys.argv[1])
eng = Engine(model, n_ctx=512, n_threads=1)
spec = FeatureSpec(last_layers=4)
near = eng.prompt_feature("Write a Python function that adds two numbers.", spec)
DomainIndex(registry.model_sha256(model), spec, len(near), np.stack([near, -near]), ["near", "far"],
            {"near": [DomainSet(SkipSet.of(range(30), range(30)), 0.1, 0.05, 4)],
             "far": [DomainSet(SkipSet.of([], [20]), 2.0, 0.8, 4)]}, ood_distance=0.0, k=1
            ).save(index_dir(registry.model_sha256(model)))
"""


@pytest.mark.parametrize("flags,learned", [(("--learn", "on"), 1), (("--learn", "on", "--no-learn"), 0),
                                           (("--learn", "off"), 0)])
def test_the_learn_switch_decides_whether_an_out_of_domain_prompt_is_saved(tmp_path, flags, learned):
    smol = registry.resolve(SMOL)
    env = {**os.environ, "EDGESSD_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("EDGESSD_NO_LEARN", None)
    prep = subprocess.run([sys.executable, "-c", PREPARE_INDEX, str(smol)], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=300)
    assert prep.returncode == 0, prep.stderr
    r = subprocess.run([*EDGESSD, "generate", str(smol), "-p", "Write a Python function that multiplies two numbers.",
                        "-n", "16", "--temp", "0", "--mode", "layerskip", "-t", "1", *flags],
                       capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    sha = registry.spec(SMOL).sha256
    idx = load_index(tmp_path / "cache" / "index" / sha[:16], model_sha256=sha)
    assert len(idx.learned) == learned, (flags, r.stderr[-500:])
