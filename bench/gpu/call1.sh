#!/usr/bin/env bash
# GPU run, call 1 of 2: build edgessd's patched llama.cpp for sm_90 on the GPU machine.
#
# Plan (12 minutes of GPU time in all, machine start included; the two calls must follow
# each other within the machine's 30 s warm window, since call 2 uses what call 1 built):
#   call 1  machine start and transfer                      ~2 min   (the device notes: a minute or more)
#           venv over the image's packages, carried wheels   ~0.5 min (hnswlib compiles, in parallel)
#           llama-cpp-python + ggml-cuda for sm_90, 16 cores ~4 min   (estimate: ggml-cuda's .cu files are
#                                                                      most of it; see bench/results/cuda-build-*.json
#                                                                      for the 2-core time of two archs)
#   call 2  transfer (warm machine)                          ~0.3 min
#           model assembly and sha256                        <0.1 min
#           gpu_checks.py (masks, lossless, lanes, graphs)   ~0.5 min
#           profile smollm2 -ngl 99                          ~0.5 min
#           bench: 5 methods x 16 prompts x 64 tokens        ~1.5 min
#           3 stand-ins written (1.7 GB) and profiled        ~1.5 min
#           replays and summary                              ~0.2 min
#   total                                                    ~11 min, ~1 min to spare
#
# Prepared here by `.venv/bin/python bench/gpu/prepare.py` (writes .gpu/call1 and .gpu/call2).
# Run from the repo root with the device tool, carrying .gpu/call1:
#   run(command="bash bench/gpu/call1.sh", carry=[".gpu/call1"], timeout_s=540)
# then at once:
#   run(command="bash bench/gpu/call2.sh", carry=[".gpu/call2"], timeout_s=480)
# Rehearsed end to end on a CPU by bench/gpu/dryrun.sh (every step but the CUDA build).
#
# Environment: OUT (results folder, the device tool sets it), EDGESSD_GPU_PYTHON (the
# image's python3), EDGESSD_GPU_DRYRUN=WHEEL (rehearsal: configure only, install WHEEL),
# EDGESSD_GPU_NOPIP=1 (take the path of an interpreter without ensurepip; the rehearsal does).
set -euo pipefail
cd "$(dirname "$0")/../.."
C1=.gpu/call1 DEV=.gpu/dev
OUT=${OUT:-$DEV/out}
PY=${EDGESSD_GPU_PYTHON:-python3}
mkdir -p "$DEV" "$OUT"
LOG=$OUT/call1.log
: >"$LOG"
say() { echo "[$(date -u +%T)] $*" | tee -a "$LOG"; }
T0=$(date +%s)

test -f $C1/manifest.json || { echo "call1: $C1 is missing: run bench/gpu/prepare.py and carry .gpu/call1" >&2; exit 2; }
(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || echo "no nvidia-smi") >"$OUT/gpu.txt" 2>&1
say "gpu: $(cat "$OUT/gpu.txt"); cores: $(nproc)"

# a venv whose own site-packages come first, with the image's packages (numpy, torch's
# nvidia-cublas, scikit-build-core, cmake, ninja, pytest) behind them through a .pth file
# (an interpreter without ensurepip gets a venv without pip, filled by the image's pip)
rm -rf "$DEV/venv"
V=$DEV/venv/bin/python
if [ -z "${EDGESSD_GPU_NOPIP:-}" ] && $PY -m venv "$DEV/venv" >/dev/null 2>&1; then
  export EDGESSD_GPU_PIP="$V -m pip"
else
  rm -rf "$DEV/venv" && $PY -m venv --without-pip "$DEV/venv"
  export EDGESSD_GPU_PIP="$PY -m pip --python $V"
fi
$PY -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' >"$($V -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/image-site.pth"
say "venv ready ($(( $(date +%s) - T0 )) s)"

# wheels first: hnswlib's sdist builds against the pybind11 among them
($EDGESSD_GPU_PIP install -q --no-index --no-deps $C1/wheels/*.whl \
  && $EDGESSD_GPU_PIP install -q --no-index --no-deps --no-build-isolation $C1/wheels/*.tar.gz) >"$OUT/wheels.log" 2>&1 &
WHEELS=$!

rm -rf "$DEV/src" && mkdir -p "$DEV/src"
tar -xJf $C1/llama-src.tar.xz -C "$DEV/src"
SRC=$(echo "$DEV"/src/llama_cpp_python-*)
say "source unpacked: $SRC"
if [ -n "${EDGESSD_GPU_DRYRUN:-}" ]; then
  $V bench/gpu/device_build.py "$SRC" --arch 90-real --json "$OUT/build.json" --log "$OUT/build.log" --dry-run "$EDGESSD_GPU_DRYRUN"
else
  $V bench/gpu/device_build.py "$SRC" --arch 90-real --json "$OUT/build.json" --log "$OUT/build.log"
fi
wait $WHEELS || { cat "$OUT/wheels.log" >&2; exit 2; }
$V -c 'import llama_cpp, gguf, hnswlib, diskcache; print("imports ok")' | tee -a "$LOG"
say "call 1 done in $(( $(date +%s) - T0 )) s"
