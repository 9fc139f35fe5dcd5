#!/usr/bin/env bash
# One GPU session for the H100 data set, in order, each step under its own time limit so the whole
# stays under ~9 minutes (a device command may run 10):
#   a) kernel correctness on the GPU      -> $OUT/pytest_gpu.log                       (≤ 100 s)
#   b) calibration of the GPU's profile   -> $OUT/h100-sxm-calibrated.yaml (or h200-…)  (≤  45 s)
#   c) the measurement grid (ncu)         -> $OUT/measurements.json + .csv              (≤ 320 s)
#   d) our kernels against SDPA           -> $OUT/bench_kernels.txt                     (≤  60 s)
# A step that fails or runs out of time does not stop the next. Every step writes under $OUT as it
# goes: the measurement file is rewritten atomically after each batch of cases, so a machine killed
# at its time limit still leaves every finished batch. Progress of b) and c) goes to $OUT/session.log.
# At most 6 files land in $OUT (the device tool returns 8); ncu's reports stay in /tmp/iosim-ncu-*.
# Run from anywhere: OUT=/some/dir bash experiments/gpu_session.sh
# Needs iosim installed with the kernels extra in $PYTHON (installing is the caller's job).
set -u
: "${OUT:?set OUT to the folder for results}"
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
[ -x /opt/torch/.venv/bin/python3 ] && [ -z "${PYTHON:-}" ] && PY=/opt/torch/.venv/bin/python3
if ! "$PY" -c 'import iosim.kernels' 2>/dev/null; then
    echo "gpu_session: $PY cannot import iosim.kernels; install it first: $PY -m pip install --no-deps --no-build-isolation -e ." >&2
    exit 2
fi
LOG="$OUT/session.log"
NCU_DIR=$(ls -d /opt/nvidia/nsight-compute/*/ 2>/dev/null | sort | tail -n 1)
command -v ncu >/dev/null || { [ -n "$NCU_DIR" ] && export PATH="$NCU_DIR:$PATH"; }

step() {  # step NAME LIMIT_S COMMAND...: run with a time limit, log its status, never fail the script
    local name=$1 limit=$2; shift 2
    local t0=$SECONDS
    echo "=== $name (limit ${limit}s) $(date -u +%FT%TZ)" >>"$LOG"
    timeout --signal=TERM --kill-after=15 "$limit" "$@"
    local rc=$?
    echo "=== $name: exit $rc after $((SECONDS - t0)) s" >>"$LOG"
}

{
    echo "gpu_session $(date -u +%FT%TZ) on $(hostname)"
    nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader 2>&1
    "$PY" -c 'import torch, triton; print("torch", torch.__version__, "triton", triton.__version__)' 2>&1
    ncu --version 2>&1 | tail -n 1
} >>"$LOG"

step "a) pytest -m gpu" 100 "$PY" -m pytest tests/test_kernels.py -m gpu -q -p no:cacheprovider \
    >"$OUT/pytest_gpu.log" 2>&1
# The base profile follows the GPU actually lent (an H200 stands in when no H100 is free).
case "$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1)" in
    *H200*) PROFILE=h200 ;;
    *A100*80GB*) PROFILE=a100-sxm4-80gb ;;
    *A100*) PROFILE=a100-sxm4-40gb ;;
    *) PROFILE=h100-sxm ;;
esac
step "b) calibrate ($PROFILE)" 45 "$PY" -m iosim.kernels.calibrate --base "hardware_profiles/$PROFILE.yaml" \
    --out "$OUT/$PROFILE-calibrated.yaml" >>"$LOG" 2>&1
step "c) measurement grid" 320 "$PY" -m iosim.kernels.harness --out "$OUT" --grid default >>"$LOG" 2>&1
step "d) bench_kernels" 60 "$PY" experiments/bench_kernels.py >"$OUT/bench_kernels.txt" 2>&1
echo "done $(date -u +%FT%TZ), $SECONDS s in all" >>"$LOG"
ls -la "$OUT" >>"$LOG"
