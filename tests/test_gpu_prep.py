"""The GPU run's preparation: stand-in GGUFs keep a real model's shapes and types and decode
to finite logits; the carried header ends where the real tensor data begins.

The whole two-call run is rehearsed on the CPU by ``bash bench/gpu/dryrun.sh`` (minutes, not
part of the suite).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from edgessd import registry
from edgessd._capi import Context, Model

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench" / "gpu"))

import prepare  # noqa: E402
import standin  # noqa: E402

SMOL = "smollm2-135m"


def tensor_table(path: Path) -> list[tuple[str, tuple, int]]:
    import gguf

    r = gguf.GGUFReader(path)
    return [(t.name, tuple(int(x) for x in t.shape), int(t.tensor_type)) for t in r.tensors], r.data_offset


def test_a_standin_has_the_real_shapes_and_types_and_decodes_finitely(tmp_path):
    real = registry.resolve(SMOL)
    info = prepare.standin_header(SMOL, tmp_path)
    assert info["header_bytes"] + info["data_bytes"] == real.stat().st_size
    out = standin.write_standin(tmp_path / info["file"], info["data_bytes"], tmp_path / "smol-random.gguf", seed=1)
    assert out.stat().st_size == real.stat().st_size
    (want, want_off), (got, got_off) = tensor_table(real), tensor_table(out)
    assert got == want and got_off == want_off == info["header_bytes"]
    with open(real, "rb") as a, open(out, "rb") as b:
        a.seek(want_off)
        b.seek(want_off)
        assert a.read(1 << 16) != b.read(1 << 16)  # the weights are not the real ones
    model = Model(out)
    ctx = Context(model, n_ctx=128, n_batch=32, n_threads=2)
    try:
        ctx.decode(model.tokenize("def add(a, b):"), 0)
        assert np.all(np.isfinite(ctx.logits()[0]))
    finally:
        ctx.close()
        model.close()


def test_a_bad_header_is_one_error_line(tmp_path):
    import lzma

    bad = tmp_path / "bad.head.xz"
    bad.write_bytes(lzma.compress(b"not a gguf"))
    assert standin.main([str(bad), "16", str(tmp_path / "x.gguf")]) == 2
    assert not (tmp_path / "x.gguf").exists() and not (tmp_path / "x.gguf.tmp").exists()
