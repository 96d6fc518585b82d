#!/usr/bin/env bash
# GPU run, call 2 of 2: assemble smollm2, check it, then measure. Plan and timings: call1.sh.
#   run(command="bash bench/gpu/call2.sh", carry=[".gpu/call2"], timeout_s=480)
# It needs call 1's build (.gpu/dev on the same, still warm, machine).
#
# Steps, each writing into .gpu/dev/results/ (packed as $OUT/results.tar.gz, with summary.md and
# summary.json beside it: what comes back from $OUT is at most 8 files):
#   1. smollm2-135m from the two halves, sha256 checked against the registry's
#   2. edgessd profile smollm2-135m -ngl $NGL: t(1), V(k), sublayer costs on this GPU
#   3. gpu_checks.py: skip masks, lossless greedy, graph lanes, CUDA-graph captures per cycle
#   4. edgessd bench: plain, lookup, static, planner, auto (llama.cpp's own tools are not built)
#   5. stand-ins with random weights and the exact shapes and types of smollm2-135m and
#      qwen2.5-coder-0.5b/1.5b, each profiled; replay.py replays the greedy outputs recorded
#      on the CPU with each stand-in's GPU costs: PREDICTED speedups (smollm2's is checked
#      against its measured one)
#   6. summarize.py: summary.md / summary.json
# Environment: OUT, EDGESSD_GPU_NGL (99; the rehearsal uses 0), EDGESSD_GPU_QUICK=1 (the
# rehearsal's smaller profile and bench, so that it fits a 2-core CPU).
set -euo pipefail
cd "$(dirname "$0")/../.."
C1=.gpu/call1 C2=.gpu/call2 DEV=.gpu/dev
OUT=${OUT:-$DEV/out}
R=$DEV/results
V=$DEV/venv/bin/python
NGL=${EDGESSD_GPU_NGL:-99}
rm -rf "$R" && mkdir -p "$R" "$OUT"
LOG=$R/call2.log
: >"$LOG"
say() { echo "[$(date -u +%T)] $*" | tee -a "$LOG"; }
T0=$(date +%s)
step() { say "step $1 ($(( $(date +%s) - T0 )) s)"; }
test -x "$V" && $V -c 'import llama_cpp' 2>/dev/null \
  || { echo "call2: no build from call 1 here (a fresh machine?): run call1.sh first, then call2.sh at once" >&2; exit 2; }

export EDGESSD_CACHE_DIR=$PWD/$DEV/cache PYTHONPATH=$PWD PYTHONUNBUFFERED=1
ES="$V -m edgessd.cli.main"
MODELS=$EDGESSD_CACHE_DIR/models
mkdir -p "$MODELS"
if [ -n "${EDGESSD_GPU_QUICK:-}" ]; then
  PROF="-c 256 --k-max 8 --reps 1" BENCH="--per-category 1 -n 24 --repeat 1"
else
  PROF="-c 2048 --k-max 16 --reps 5" BENCH="--per-category 2 -n 64 --repeat 1"
fi

step "1: assemble"
cat $C1/smollm2-135m.gguf.part1 $C2/smollm2-135m.gguf.part2 >"$MODELS/smollm2-135m.gguf.tmp"
WANT=$($V -c 'import json; print(json.load(open(".gpu/call1/manifest.json"))["model"]["sha256"])')
GOT=$(sha256sum "$MODELS/smollm2-135m.gguf.tmp" | cut -d' ' -f1)
[ "$GOT" = "$WANT" ] || { echo "call2: assembled smollm2 has sha256 $GOT, expected $WANT" >&2; exit 2; }
mv "$MODELS/smollm2-135m.gguf.tmp" "$MODELS/smollm2-135m.gguf"
say "sha256 ok: $GOT"

step "2: profile smollm2"
$ES profile smollm2-135m -ngl "$NGL" $PROF --json >"$R/profile-smollm2-135m.json" 2>"$R/profile-smollm2-135m.log"

step "3: gpu checks (auto plans from the profile just measured)"
$V bench/gpu/gpu_checks.py smollm2-135m -ngl "$NGL" --json "$R/checks.json" >"$R/checks.log" 2>&1

step "4: bench"
$ES bench smollm2-135m --prompts bench/prompts/bench.jsonl $BENCH --methods plain,lookup,static,planner,auto \
  -ngl "$NGL" --json "$R/bench-smollm2-135m.json" --md "$R/bench-smollm2-135m.md" >"$R/bench.log" 2>&1

step "5: stand-ins"
mkdir -p "$DEV/standins"
for m in smollm2-135m qwen2.5-coder-0.5b qwen2.5-coder-1.5b; do
  read -r HEAD DATA < <($V -c "import json; s=json.load(open('$C1/manifest.json'))['standins']['$m']; print(s['file'], s['data_bytes'])")
  F=$DEV/standins/$m-random.gguf
  $V bench/gpu/standin.py "$C1/standins/$HEAD" "$DATA" "$F"
  $ES profile "$F" -ngl "$NGL" $PROF --json >"$R/profile-standin-$m.json" 2>"$R/profile-standin-$m.log"
  rm -f "$F"
  $V bench/replay.py "$m" --profile "$R/profile-standin-$m.json" --record "$C1/records/$m.json" --categories all \
    -n "$($V -c 'import json; print(json.load(open(".gpu/call1/manifest.json"))["bench"]["n_predict"])')" \
    --json "$R/replay-$m.json" --md "$R/replay-$m.md" >>"$R/replay.log" 2>&1
  say "stand-in $m profiled and replayed"
done

step "6: summary"
$V bench/gpu/summarize.py "$R" --out "$OUT/summary.md"
cp "$OUT/summary.md" "$OUT/summary.json" "$R/"
tar -czf "$OUT/results.tar.gz" -C "$DEV" results
say "call 2 done in $(( $(date +%s) - T0 )) s"
