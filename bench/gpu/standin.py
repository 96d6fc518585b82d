#!/usr/bin/env python3
"""Write a stand-in GGUF: a real model's header (metadata, tokenizer, tensor shapes and
types) followed by random weights, so a model too large to carry can be profiled.

    python bench/gpu/standin.py HEADER.head.xz DATA_BYTES OUT.gguf [--seed 0]

V(k), t(1) and the sublayer costs depend on the tensors' shapes and types, not on their
values, so a stand-in's profile gives the real model's costs on this device. Its outputs
are meaningless, and so is its matchness: only the costs are used (bench/replay.py's
--profile). Every weight byte is drawn from [0x00, 0x3c): every f16 and f32 it forms (block
scales included) is then finite and below 1, so no NaN or infinity can change a kernel's path.
"""
from __future__ import annotations

import argparse
import lzma
import os
import sys
from pathlib import Path

import numpy as np

CHUNK = 64 * 2**20


def write_standin(header_xz: Path, data_bytes: int, out: Path, seed: int = 0) -> Path:
    head = lzma.decompress(Path(header_xz).read_bytes())
    if head[:4] != b"GGUF":
        raise ValueError(f"{header_xz} is not a GGUF header")
    rng = np.random.default_rng(seed)
    tmp = out.with_name(out.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(head)
            left = data_bytes
            while left > 0:
                n = min(CHUNK, left)
                f.write(rng.integers(0, 0x3C, size=n, dtype=np.uint8).tobytes())
                left -= n
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("header", type=Path)
    ap.add_argument("data_bytes", type=int)
    ap.add_argument("out", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    ns = ap.parse_args(argv)
    try:
        write_standin(ns.header, ns.data_bytes, ns.out, ns.seed)
    except (OSError, ValueError, lzma.LZMAError) as e:
        print(f"standin: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
