#!/usr/bin/env bash
# Warp stall reasons of the forward kernels in warp_stalls.py (ncu: WarpStateStats, SchedulerStats, Occupancy), one
# profiled launch each (the second call of each case, NVTX-ranged), written as ncu's CSV detail page to
# $OUT/stalls/warp_stalls.csv. Needs the gitignored third-party kernel files (experiments/thirdparty_kernels/README.md).
set -u
: "${OUT:?set OUT}"
cd "$(dirname "$0")/../.."
PY=${PYTHON:-/opt/torch/.venv/bin/python3}
mkdir -p "$OUT/stalls"
timeout 500 ncu --clock-control none --nvtx --nvtx-include "regex:stallcase[0-9]+/" \
    --section WarpStateStats --section SchedulerStats --section Occupancy --section SpeedOfLight \
    --csv --page details "$PY" experiments/probes/warp_stalls.py > "$OUT/stalls/warp_stalls.csv" 2> "$OUT/stalls/warp_stalls.log"
echo "exit $?" >> "$OUT/stalls/warp_stalls.log"
ncu --version >> "$OUT/stalls/warp_stalls.log"
