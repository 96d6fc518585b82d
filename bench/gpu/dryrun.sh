#!/usr/bin/env bash
# CPU rehearsal of the two-call GPU run: every step but the CUDA build, on this machine.
#
#   bash bench/gpu/dryrun.sh            # after `make setup`; prepares .gpu/ first if needed
#
# It copies what the device tool would send (tracked and untracked-not-ignored files) into a
# scratch folder, adds the carried .gpu/call1, and runs call1.sh there with the repo's
# .venv python as the "image" python: the carried source is configured with CMake for CUDA
# (proving it complete) and the cached CPU wheel is installed instead of a CUDA build. Then
# .gpu/call2 is added and call2.sh runs every measurement with -ngl 0 and smaller sizes
# (EDGESSD_GPU_QUICK). It fails unless each call's results are within the device's limits
# (at most 8 files back) and the summary holds every section.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
cd "$REPO"
PY=$REPO/.venv/bin/python
[ -x "$PY" ] || { echo "dryrun: run make setup first" >&2; exit 2; }
[ -f .gpu/call1/manifest.json ] && [ -f .gpu/call2/smollm2-135m.gguf.part2 ] || $PY bench/gpu/prepare.py
SIM=$(mktemp -d /tmp/edgessd-gpu-dryrun-XXXXXX)
trap 'rm -rf "$SIM"' EXIT
git ls-files -co --exclude-standard -z | while IFS= read -r -d '' f; do
  [ -f "$f" ] && mkdir -p "$SIM/$(dirname "$f")" && cp -p "$f" "$SIM/$f"
done
mkdir -p "$SIM/.gpu" && cp -r .gpu/call1 "$SIM/.gpu/"
WHEEL=$(EDGESSD_BACKEND=cpu $PY patches/build.py --build-only | tail -1)
T0=$(date +%s)
(cd "$SIM" && OUT=$SIM/out1 EDGESSD_GPU_PYTHON=$PY EDGESSD_GPU_DRYRUN=$WHEEL EDGESSD_GPU_NOPIP=1 bash bench/gpu/call1.sh)
T1=$(date +%s)
cp -r .gpu/call2 "$SIM/.gpu/"
(cd "$SIM" && OUT=$SIM/out2 EDGESSD_GPU_NGL=0 EDGESSD_GPU_QUICK=1 bash bench/gpu/call2.sh)
T2=$(date +%s)
for o in out1 out2; do
  n=$(find "$SIM/$o" -type f | wc -l)
  [ "$n" -le 8 ] || { echo "dryrun: $o holds $n files; the device returns at most 8" >&2; exit 1; }
done
for section in "V(k)/t(1)" "measured" "PREDICTED" "prediction method" "Checks"; do
  grep -q "$section" "$SIM/out2/summary.md" || { echo "dryrun: summary lacks '$section'" >&2; exit 1; }
done
tar -tzf "$SIM/out2/results.tar.gz" >/dev/null
echo "dryrun: passed (call 1 $((T1 - T0)) s, call 2 $((T2 - T1)) s on this CPU); summary:"
cat "$SIM/out2/summary.md"
mkdir -p .gpu/dryrun && cp "$SIM/out2/summary.md" "$SIM/out2/summary.json" "$SIM/out1/build.json" .gpu/dryrun/
