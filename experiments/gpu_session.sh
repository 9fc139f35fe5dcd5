#!/usr/bin/env bash
# One GPU session for the H200 data set, in order, each step under its own time limit (a hang costs
# one step, not the session); everything lands under $OUT:
#   a) kernel correctness on the GPU            -> $OUT/pytest_gpu.log                      (≤ 120 s)
#   b) ncu's metric list for the GPU            -> $OUT/ncu-query-metrics.txt               (≤  60 s)
#   c) calibration of the GPU's profile         -> $OUT/h200-calibrated.yaml (or <base>-…)  (≤ 120 s)
#   d) the L2 request-coalescer probe (ncu)     -> $OUT/lrc/lrc_probe.json                  (≤ 300 s)
#   e) the h200 measurement grid (ncu)          -> $OUT/h200/measurements.json + .csv       (≤ 570 s)
#   f) the foreign kernels' grid (ncu)          -> $OUT/foreign/measurements.json + .csv    (≤ 400 s)
#   g) instruction mixes (kernels/sass.py)      -> $OUT/mixes/                              (≤ 300 s)
#   h) the L2 dirty-limit/capacity probe (ncu)  -> $OUT/l2/l2_probe.json                    (≤ 300 s)
#   rw) lines stored again every pass: write-back and copies (ncu) -> $OUT/rewrite/rewrite_probe.json  (≤ 120 s)
#   i) ATen's code: softmax and its backward by row length, fills, casts, copies, group sums (ncu) -> $OUT/aten/aten_probe.json (≤ 300 s)
#   j) causal CTA timelines (%globaltimer)      -> $OUT/trace/causal_trace-*.json           (≤ 300 s)
#   k) inference kernels on the GPU             -> $OUT/pytest_gpu_inference.log            (≤ 120 s)
#   l) DRAM read and copy rates alone           -> $OUT/run-dram-calibrated.yaml        (≤ 120 s)
#   m) the variable-length grid (ncu)           -> $OUT/varlen/measurements.json + .csv     (≤ 500 s)
#   n) the sliding-window grid (ncu)            -> $OUT/window/measurements.json + .csv     (≤ 400 s)
#   o) tiny kernels' durations under ncu        -> $OUT/launch/launch_probe.json            (≤ 120 s)
#   p) FlexAttention on a paged cache (ncu)     -> $OUT/paged_flex/measurements.json + .csv (≤ 400 s)
#   q) decode CTAs alone on their SMs (ncu)     -> $OUT/lone/measurements.json + .csv       (≤ 300 s)
#   dh) the decode and paged grids (ncu), held out on the H100 -> $OUT/decode/, $OUT/paged/ (≤ 330 + 220 s)
#   r) the Hopper (TMA) forward: GPU tests, its tiles and the kernels beside SDPA
#                                                -> $OUT/hopper/*.txt, pytest_gpu_hopper.log  (≤ 500 s)
#   s) the Hopper backward: GPU tests and its tiles -> $OUT/hopper/bwd_tiles_d128.txt        (≤ 300 s)
#   t) every kernel beside SDPA in one run, the hopper grid (ncu)
#                                                -> $OUT/hopper/bench_all.txt, $OUT/hopper/ncu/ (≤ 900 s)
#   u) SDPA's kernels' SASS at d = 64 (ncu source page) -> $OUT/sdpa_sass_d64/             (≤ 300 s)
#   v) SDPA cuDNN and flash on held-out shapes (ncu) -> $OUT/sdpa/measurements.json + .csv  (≤ 560 s)
#   w) the Hopper kernel's fp8 forward: GPU tests, its compiled code, the fp8 grid (ncu)
#                                                -> $OUT/fp8/{pytest_gpu_fp8.log,mixes/,measurements.json} (≤ 500 s)
#   x) the tile loop in fp8 beside fp16 (calibrate --only "fp8 tiles") -> $OUT/fp8/fp8_tiles.yaml (≤ 200 s)
#   y) the fp8 tile loop's occupancy series and the calibration loops' compiled code
#                                                -> $OUT/fp8/fp8_occupancy.yaml, $OUT/fp8/calmix/ (≤ 400 s)
#   z) the held-out long causal foreign kernels (F1, F4, F5, F8; or the cases in $HELDOUT) again, to see
#      how far DRAM bytes repeat from run to run -> $OUT/heldout_repeat/<case>-r$REPEAT/measurements.json (≤ 4 × 150 s)
#   tp) kernels written by others (experiments/thirdparty_kernels, files not committed: see its README):
#      launchers checked against SDPA, their code compiled here, the manifest measured (ncu)
#                                                -> $OUT/thirdparty/{check.log,mixes/,measurements.json} (≤ 560 s)
#   tpa) the tutorial as published, autotuner included: its configs' code compiled into the committed mixes
#      file, its launchers checked, its manifest measured (ncu), iosim's own pick by simulation
#                                                -> $OUT/thirdparty/autotuned/ (≤ 680 s)
#   tpb) the tutorial's older block-pointer form, autotuned and at one config: launchers checked, compiled into
#      the committed mixes file, measured (ncu)  -> $OUT/thirdparty/blockptr/ (≤ 560 s)
#   tpf) FlagAttention's forward (flag_attn.py, not committed): launchers checked, compiled, measured (ncu)
#                                                -> $OUT/thirdparty/flag/{check.log,mixes/,measurements.json} (≤ 560 s)
#   tpfb) FlagAttention's forward and backward (dQ in a kernel of its own): launchers and gradients checked, compiled,
#      measured (ncu)                            -> $OUT/thirdparty/flag_bwd/{check.log,measurements.json} (≤ 560 s)
#   tpfl) FlagAttention's A100 launchers, which pick their tiles by length, at held-out shapes (flag_attn.py, not
#      committed): launchers checked, compiled, measured (ncu) -> $OUT/thirdparty/flag_bylength/ (≤ 560 s)
#   tps) sglang's prefill attention (sglang_prefill.py, not committed): launcher checked, compiled, measured (ncu)
#                                                -> $OUT/thirdparty/sglang/{check.log,mixes/,measurements.json} (≤ 560 s)
#   tpfr) FlagAttention at held-out shapes after the softmax refit (flag_attn.py, not committed): launchers checked,
#      compiled, measured (ncu)                  -> $OUT/thirdparty/flag_refit/ (≤ 560 s)
#   ev) kernels/flash2.py at held-out shapes the L2 must evict, both codes' predictions written before it ran
#                                                -> $OUT/evicting/{mixes/,measurements.json} (≤ 570 s)
#   cv) kernels/flash2.py, short causal forward + backward where two convoy rules differ, both predictions
#      written before it ran                     -> $OUT/convoy/{mixes/,measurements.json} (≤ 510 s)
#   ip) the calibrated tile loop beside the same loop with a compile-time tile index (no integer division a pass),
#      both loops' code                          -> $OUT/index_probe/index_probe.json (≤ 300 s)
#   ips) the same at every point of the GPU's calibrated tile series (h200: 24 tiles, depths and CTAs an SM)
#                                                -> $OUT/index_probe_series/index_probe.json (≤ 560 s)
#   wp) the calibrated tile loop, kernels/flash2.py and the foreign F2 at 64 x 64 tiles, 4 warps: one lockstep wave
#      against eight waves of the same FLOPs, and a plain grid, each timed by do_bench and alone after an idle pause
#      (as ncu times one call); the calibrated loop so at every point of the GPU's tile series
#                                                -> $OUT/wave_probe/wave_probe.json (≤ 560 s)
#   hd) head dims iosim's kernels did not take before 2026-12-04: kernels/flash2.py at d = 256 (GPU tests, the
#      held-out manifest_head_dims.yaml), each case predicted before it ran -> $OUT/head_dims/ (≤ 560 s)
#   tpl) lmdeploy's prefill attention (lmdeploy_prefill.py, not committed): launcher checked, compiled, measured (ncu)
#                                                -> $OUT/thirdparty/lmdeploy/{check.log,mixes/,measurements.json} (≤ 560 s)
#   hds) sglang's prefill attention (sglang_prefill.py, not committed) at d = 80, 96 (padded) and 256: launcher
#      checked, compiled, measured (ncu)         -> $OUT/thirdparty/sglang_head_dims/ (≤ 560 s)
#   br) causal attention with seq_k != seq_q: FlagAttention's launchers (flag_attn.py, not committed; its diagonal
#      bottom-right) checked against SDPA with that mask, then manifest_flag_chunked.yaml (ncu)
#      -> $OUT/thirdparty/flag_chunked/; the foreign kernels' manifest_offset.yaml (top-left) -> $OUT/offset/ (≤ 560 s)
#   off) kernels/flash2.py causal with seq_k != seq_q (top-left): its GPU tests (big5), then the held-out
#      manifest_offset.yaml (ncu)                 -> $OUT/heldout_offset/ (≤ 400 s)
#   sg) small grids (16-256 CTAs): kernels/flash2.py's and four foreign kernels' manifest_small.yaml (ncu)
#                                                -> $OUT/heldout_small/, $OUT/small_foreign/ (≤ 400 s)
#   dq) our flash2 backward with dQ in a kernel of its own beside the atomic one: GPU tests, the dq grid (ncu)
#                                                -> $OUT/dq/{pytest_gpu_dq.log,measurements.json} (≤ 400 s)
#   sm) loops that move much through shared memory, its wavefronts counted (ncu): the smem grid, its cases'
#      code compiled here                        -> $OUT/smem/{measurements.json,mixes/} (≤ 560 s)
#   lt) the softmax tile loops 3 and 4 stages deep (SOFTMAX_TILES_DEEP; run 15 of 2026-12-04 also timed the miss-cost
#      series at ten more tiles, see experiments/measurements/h200/calibration/README.md) and the calibration
#      loops' compiled code                      -> $OUT/lone_tiles/{lone_tiles.yaml,calmix/} (≤ 480 s)
#   cav) kernels others wrote at held-out shapes, in and out of the regimes iosim's caveats name (sglang_prefill.py,
#      flag_attn.py: not committed), manifest_caveats.yaml (ncu) -> $OUT/thirdparty/caveats/ (≤ 500 s)
#   per) a persistent forward (foreign_kernels/F9_persistent.py: a CTA an SM, tiles taken in turn) at held-out shapes,
#      manifest_persistent.yaml (ncu) -> $OUT/persistent/ (≤ 500 s)
#   per2) F10_persistent_counter.py (tiles drawn from an atomic counter) and F9 at held-out shapes,
#      manifest_persistent_heldout.yaml (ncu) -> $OUT/persistent/heldout/ (≤ 500 s)
#   unr) F11_two_tiles.py (two K/V tiles a loop pass) at held-out shapes, manifest_unrolled.yaml (ncu)
#      -> $OUT/unrolled/ (≤ 500 s)
#   spf) foreign kernels whose d = 128 code spills (B1's backward, F7) at held-out shapes, manifest_spill.yaml
#      (ncu) -> $OUT/spill_heldout/ (≤ 500 s)
#   ssm) SDPA flash and cuDNN where FlashAttention-2 splits the K/V length, and forward + backward at new shapes,
#      the sdpa_small grid (ncu), predicted before it ran -> $OUT/sdpa_small/ (≤ 500 s)
#   spl) SDPA flash at more shapes where FlashAttention-2 splits the K/V length, the sdpa_split grid (ncu), predicted
#      before it ran -> $OUT/sdpa_split/ (≤ 300 s)
#   spl2) SDPA flash at six more shapes where it splits, the sdpa_split2 grid (ncu), predicted before it ran
#      -> $OUT/sdpa_split2/ (≤ 300 s)
#   sma) standard attention (ours, eager) on small problems, the small grid (ncu), predicted before it ran
#      -> $OUT/small/ (≤ 300 s)
#   cvp) the calibration's tile loop with groups of 1-32 CTAs reading the same tiles, one and two CTAs an SM, from the L2
#      and from DRAM: what a missed pass costs a convoy   -> $OUT/convoy_probe/convoy_probe.json (≤ 300 s)
#   cvs) the convoy probe with groups of 1-64, the loop bare and with the online softmax
#      -> $OUT/convoy_softmax/convoy_probe.json (≤ 400 s)
#   wmp) kernels/flash2.py's forward on shapes that fit the L2, timed with its inputs cold and warm: what its
#      misses cost it                              -> $OUT/warm_probe/warm_probe.json (≤ 200 s)
#   stp) the calibration's tile loop at 4-132 CTAs, from the L2 and from DRAM: a pass's miss cost against the load
#      DRAM is under                              -> $OUT/stream_probe/stream_probe.json (≤ 300 s)
#   pp) groups of CTAs reading the same tiles in lockstep over loops of 16-2048 passes: L2 lookups a load (ncu) and
#      each pair's end-time gap (%globaltimer)   -> $OUT/pair_probe/pair_probe.json (≤ 480 s)
#   lct) kernels/flash2.py's causal forward traced (%globaltimer) at the held-out foreign kernels' configurations:
#      F1's and F5's at N = 128K, F4's at 96K (d = 128, 8 heads) -> $OUT/trace_long_tiles/ (≤ 560 s)
#   lcm) the same configurations compiled by the GPU's Triton, then measured (ncu), manifest_long_tiles.yaml,
#      predicted before it ran        -> $OUT/mixes_long_tiles/, $OUT/heldout/long_tiles/measurements.json (≤ 680 s)
#   bias) a user's forward that adds a bias tile to every block of scores (tests/data/user_kernel_bias.py): its three
#      launchers against float64 on the GPU, then the held-out manifest_bias.yaml compiled by the GPU's Triton and
#      measured (ncu), predicted before it ran    -> $OUT/mixes_bias/, $OUT/heldout/bias/{check.log,measurements.json}
#                                                   (≤ 800 s)
#   pace) long causal forwards at lengths no committed set has (manifest_pace.yaml), compiled by the GPU's Triton and
#      measured (ncu), predicted before it ran    -> $OUT/mixes_pace/, $OUT/heldout/pace/measurements.json (≤ 680 s)
#   hc) kernels/flash2.py's plain causal forward at 64K and 128K with 2-32 heads (manifest_head_count.yaml), compiled by
#      the GPU's Triton and measured (ncu), predicted before it ran -> $OUT/mixes_head_count/, $OUT/heldout/head_count/
#      (≤ 680 s)
#   hc1) the same down to one head, at 48K-128K (manifest_head_count_one.yaml) -> $OUT/mixes_head_count_one/,
#      $OUT/heldout/head_count_one/ (≤ 680 s)
#   hh) kernels/flash2.py's causal forward in heads order at 64K-128K (manifest.yaml, the H200's held-out heads cases),
#      measured (ncu), predicted before it ran; its code is committed (Triton 3.6) -> $OUT/heldout/heads/ (≤ 480 s)
#   ba) the backward's atomics at d = 128 (the calibration series' 128x64x128w8 point at 1-4 stages, and the d = 64
#      point again beside it): iosim calibrate --only, merged into the profile with --add-from
#                                                 -> $OUT/bwd_atomics/{bwd_atomics.yaml,calibrate.log} (≤ 120 s)
#   bsm) the backward's softmax series (tile_bwd_softmax_*: the five-matmul loop with kernels/flash2.py's own SIMT work,
#      dQ in registers and added atomically, d = 64 and 128) beside the bare loop's atomics points, and the
#      calibration loops' code compiled by the GPU's Triton: does the backward's softmax work hide under its products
#      and cover its atomics (our d = 128 backward is 7-12 % slow on every held-out set, with and without dQ atomics)
#                                                 -> $OUT/bwd_softmax/{bwd_softmax.yaml,calibrate.log,calmix/} (≤ 240 s)
#   bl) long causal forward + backward (manifest_bwd_long.yaml: the backward's streamed rows beyond the L2), compiled
#      by the GPU's Triton and measured (ncu), predicted before it ran -> $OUT/mixes_bwd_long/,
#      $OUT/heldout/bwd_long/measurements.json (≤ 680 s)
#   bd) kernels/flash2.py's forward + backward at d = 128 on new shapes (manifest_bwd_d128.yaml), compiled by the GPU's
#      Triton and measured (ncu), predicted before it ran -> $OUT/mixes_bwd_d128/, $OUT/heldout/bwd_d128/ (≤ 680 s)
#   bh) the H200's d = 128 forward + backward held out after its atomics point (manifest_bwd_h200.yaml: flash2's code
#      at three new shapes, the foreign B2 and B3), compiled by the GPU's Triton and measured (ncu), predicted before it
#      ran -> $OUT/mixes_bwd_h200/, $OUT/heldout/bwd_h200/ (≤ 680 s)
#   tj) each CTA's own pace: causal traces at 32K where every load hits, a stamp every 8 K/V blocks, four tilings
#      (experiments/cta_pace.py reads them)       -> $OUT/trace_jitter/ (≤ 400 s; four files of the eight the device
#      returns a call: run it with no step that writes more than three)
#   fl1) FlagAttention's forward + backward at the held-out shapes again (flag_attn.py, not committed), now with the L1's
#      global-load sectors and hits (the dQ kernel's plain LDG loads shared by an SM's CTAs, session 55): launchers
#      checked, measured (ncu)                    -> $OUT/thirdparty/flag_l1/{check.log,measurements.json} (≤ 400 s)
#   svar) FlashAttention-2's split-KV forward (SDPA flash) in its causal and ragged-length instantiations, d = 64 and
#      128, at shapes no committed set has: each kernel's source page (ncu SourceCounters, every SASS line with the
#      warp instructions it executed)     -> $OUT/sdpa_split_sass_variants/{causal,causal_even,ragged}_d{64,128}/
#      (≤ 6 × 240 s; about 110 s; the device returns 8 files a call: tar the folder into $OUT)
#   scau) SDPA's cuDNN and flash forward + backward (not split) in their causal instantiations, B2 × H8, N 3072, d = 64
#      and 128: each kernel's source page              -> $OUT/sdpa_sass_causal/d{64,128}/ (≤ 2 × 300 s)
#   hmp) the calibration's tile loop (plain and online softmax) at FlashAttention-2's CUDA tiles, one and two CTAs an SM,
#      compiled as wgmma and, with DISABLE_MMA_V3=1, as mma.sync (HMMA)   -> $OUT/hmma_probe/hmma_probe.json (≤ 420 s)
#   l1p) the L1's replacement policy: cycles of 32-512 KiB an SM read 16 times by plain loads, 1 and 2 CTAs an SM,
#      alone and with products after the loop whose shared memory sets carve-outs of 132 and 228 KiB (C = 124 and 28 KiB), L1 hit
#      sectors (ncu; LRU hits all or none, random replacement exp(-m F/C)); then the same through local memory
#      (ld.local, as spills reload) at each carve-out, plain and stored back every pass  -> $OUT/l1_probe/l1_probe.json
#      (≤ 300 s; about 50 s)
# A step that fails or runs out of time does not stop the next. Measurement files are rewritten
# atomically after each batch of cases, so a step cut short keeps every finished batch. Progress
# goes to $OUT/session.log. All steps take longer than one 10-minute device command: name the steps
# to run as arguments, e.g. `bash experiments/gpu_session.sh a b c d` then `... e` then `... f g`
# then `... h` (no argument: all of them).
# Run from anywhere: OUT=/some/dir bash experiments/gpu_session.sh [STEP...]
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

want() {  # want STEP: whether the step letter was asked for (all when no argument was given)
    [ "$#" -ge 1 ] || return 0
    [ -z "$STEPS" ] && return 0
    case " $STEPS " in *" $1 "*) return 0 ;; esac
    return 1
}
STEPS="$*"

# The base profile follows the GPU actually lent.
case "$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1)" in
    *H100*) PROFILE=h100-sxm ;;
    *A100*80GB*) PROFILE=a100-sxm4-80gb ;;
    *A100*) PROFILE=a100-sxm4-40gb ;;
    *) PROFILE=h200-sxm ;;
esac
CAL_NAME=${PROFILE%-sxm}

want a && step "a) pytest -m gpu" 120 "$PY" -m pytest tests/test_kernels.py tests/test_user_kernel.py -m gpu -q \
    -p no:cacheprovider >"$OUT/pytest_gpu.log" 2>&1
want b && step "b) ncu --query-metrics" 60 sh -c \
    'ncu --query-metrics --devices 0 || ncu --query-metrics --chip gh100' >"$OUT/ncu-query-metrics.txt" 2>&1
want c && step "c) calibrate ($PROFILE)" 120 "$PY" -m iosim calibrate --base "hardware_profiles/$PROFILE.yaml" \
    --out "$OUT/$CAL_NAME-calibrated.yaml" >>"$LOG" 2>&1
want d && step "d) lrc probe" 300 "$PY" -m iosim.kernels.lrc_probe --out "$OUT/lrc" >>"$LOG" 2>&1
want e && step "e) measurement grid h200" 570 "$PY" -m iosim measure --grid h200 --out "$OUT/h200" >>"$LOG" 2>&1
want f && step "f) measurement grid foreign" 400 "$PY" -m iosim measure --grid foreign --out "$OUT/foreign" \
    >>"$LOG" 2>&1
if want g; then
    if [ -f kernels/sass.py ]; then
        step "g) instruction mixes" 300 "$PY" -m iosim.kernels.sass --out "$OUT/mixes" >>"$LOG" 2>&1
    else
        echo "=== g) instruction mixes: skipped, kernels/sass.py does not exist" >>"$LOG"
    fi
fi
want h && step "h) l2 probe" 300 "$PY" -m iosim.kernels.l2_probe --out "$OUT/l2" >>"$LOG" 2>&1
want rw && step "rw) rewrite probe" 120 "$PY" -m iosim.kernels.rewrite_probe --out "$OUT/rewrite" >>"$LOG" 2>&1
want i && step "i) aten probe" 300 "$PY" -m iosim.kernels.aten_probe --out "$OUT/aten" >>"$LOG" 2>&1
want j && step "j) causal trace" 300 "$PY" -m iosim.kernels.causal_trace --out "$OUT/trace" --seq-len 131072 65536 \
    --order rows,heads >>"$LOG" 2>&1
want k && step "k) pytest -m gpu (inference)" 180 "$PY" -m pytest tests/test_varlen_kernels.py tests/test_flash_decode.py \
    -m gpu -q -p no:cacheprovider >"$OUT/pytest_gpu_inference.log" 2>&1
want l && step "l) calibrate DRAM" 120 "$PY" -m iosim calibrate --base "hardware_profiles/$PROFILE.yaml" \
    --only "DRAM,DRAM read stream" --out "$OUT/run-dram-calibrated.yaml" >>"$LOG" 2>&1
want m && step "m) measurement grid varlen" 500 "$PY" -m iosim measure --grid varlen --out "$OUT/varlen" >>"$LOG" 2>&1
want n && step "n) measurement grid window" 400 "$PY" -m iosim measure --grid window --out "$OUT/window" >>"$LOG" 2>&1
want o && step "o) launch probe" 120 "$PY" -m iosim.kernels.launch_probe --out "$OUT/launch" >>"$LOG" 2>&1
want p && step "p) measurement grid paged_flex" 400 "$PY" -m iosim measure --grid paged_flex --out "$OUT/paged_flex" \
    >>"$LOG" 2>&1
want q && step "q) measurement grid lone" 300 "$PY" -m iosim measure --grid lone --out "$OUT/lone" >>"$LOG" 2>&1
# held out on the H100, which has no decode set: predictions in experiments/measurements/h100/decode/, written before
want dh && step "dh) measurement grid decode" 330 "$PY" -m iosim measure --grid decode --out "$OUT/decode" >>"$LOG" 2>&1
want dh && step "dh) measurement grid paged" 220 "$PY" -m iosim measure --grid paged --out "$OUT/paged" >>"$LOG" 2>&1
if want r; then
    mkdir -p "$OUT/hopper"
    step "r) pytest -m gpu (hopper)" 120 "$PY" -m pytest tests/test_flash_hopper.py -q -p no:cacheprovider \
        >"$OUT/pytest_gpu_hopper.log" 2>&1
    step "r) hopper tiles" 120 "$PY" experiments/bench_kernels.py --seq 4096 --impls sdpa_cudnn hopper hopper_fp8 \
        --hopper-tiles 128x64x8x3 128x128x8x2 128x128x8x4 128x64x4x3 128x128x4x3 >"$OUT/hopper/tiles_d128.txt" 2>&1
    for d in 64 128; do
        for c in "" --causal; do
            step "r) kernels d=$d $c" 120 "$PY" experiments/bench_kernels.py --seq 1024 4096 16384 --head-dim "$d" $c \
                --impls flash2 sdpa_flash sdpa_cudnn hopper hopper_fp8 >"$OUT/hopper/bench_d$d${c:+_causal}.txt" 2>&1
        done
    done
fi
if want s; then
    mkdir -p "$OUT/hopper"
    step "s) pytest -m gpu (hopper)" 150 "$PY" -m pytest tests/test_flash_hopper.py -q -p no:cacheprovider \
        >"$OUT/pytest_gpu_hopper.log" 2>&1
    step "s) hopper backward tiles" 150 "$PY" experiments/bench_kernels.py --seq 4096 16384 --impls flash2 sdpa_cudnn hopper \
        --hopper-bwd-tiles 64x128x8x2tma 64x128x4x2 64x128x8x3 64x64x4x3 32x128x8x2 128x64x8x2 64x128x8x1 \
        >"$OUT/hopper/bwd_tiles_d128.txt" 2>&1
fi
if want t; then
    mkdir -p "$OUT/hopper"
    step "t) kernels, one run" 400 "$PY" experiments/bench_kernels.py --seq 1024 4096 16384 --head-dim 64 128 \
        --causal both --impls flash2 sdpa_flash sdpa_cudnn hopper hopper_fp8 >"$OUT/hopper/bench_all.txt" 2>&1
    step "t) measurement grid hopper" 500 "$PY" -m iosim measure --grid hopper --out "$OUT/hopper/ncu" >>"$LOG" 2>&1
fi
if want u; then
    OUT="$OUT" SHAPE="4 16 4096 64" DIR=sdpa_sass_d64 step "u) SDPA SASS d64" 300 bash experiments/probes/sdpa_source_sass.sh >>"$LOG" 2>&1
    rm -f "$OUT/sdpa_sass_d64/sdpa_src.ncu-rep"
fi
if want v; then
    step "v) measurement grid sdpa" 560 "$PY" -m iosim measure --grid sdpa --out "$OUT/sdpa" >>"$LOG" 2>&1
fi
if want w; then
    mkdir -p "$OUT/fp8/mixes"
    cp kernels/mixes/sm_90-triton-3.6.0.json.gz "$OUT/fp8/mixes/" 2>/dev/null  # the hopper grid's cases stay beside
    step "w) GPU tests fp8" 150 "$PY" -m pytest -q -x tests/test_flash_hopper.py -k "fp8" >"$OUT/fp8/pytest_gpu_fp8.log" 2>&1
    step "w) fp8 mixes" 150 "$PY" -m iosim.kernels.user_codes --grid fp8 --out "$OUT/fp8/mixes" >>"$LOG" 2>&1
    step "w) measurement grid fp8" 300 "$PY" -m iosim measure --grid fp8 --out "$OUT/fp8" >>"$LOG" 2>&1
fi
if want x; then
    mkdir -p "$OUT/fp8"
    step "x) fp8 tiles" 200 "$PY" -m iosim calibrate --base "$PROFILE" --out "$OUT/fp8/fp8_tiles.yaml" --only "fp8 tiles" \
        >"$OUT/fp8/fp8_tiles.log" 2>&1
fi
if want y; then
    mkdir -p "$OUT/fp8/calmix"
    step "y) fp8 occupancy" 300 "$PY" -m iosim calibrate --base "$PROFILE" --out "$OUT/fp8/fp8_occupancy.yaml" \
        --only "fp8 occupancy" >"$OUT/fp8/fp8_occupancy.log" 2>&1
    step "y) calibration mixes" 100 "$PY" -m iosim.kernels.sass --calibration --out "$OUT/fp8/calmix" >>"$LOG" 2>&1
fi
if want z; then
    R=${REPEAT:-2}
    SPECS=("foreign_kernels/F1_exp_maskall 8 131072 128" "foreign_kernels/F4_wideN_prescaleq 8 98304 128"
           "foreign_kernels/F5_narrowN_deep 8 131072 128" "foreign_kernels/F8_hinted_ptrs 4 262144 64")
    [ -n "${HELDOUT:-}" ] && IFS=';' read -ra SPECS <<<"$HELDOUT"  # "FILE HEADS N D;FILE HEADS N D"
    for spec in "${SPECS[@]}"; do
        set -- $spec
        case_dir="$OUT/heldout_repeat/$(basename "$1")-h$2-n$3-d$4-r$R"
        step "z) held-out $1 again (r$R)" 150 "$PY" -m iosim measure --kernel "experiments/$1.py:attention" \
            --algo flash2 --pass fwd --batch 1 --heads "$2" --seq-len "$3" --head-dim "$4" --causal --out "$case_dir" >>"$LOG" 2>&1
        rm -f "$case_dir/measurements.csv"  # the JSON's twin: the device returns few files
    done
fi
if want ev; then  # kernels/flash2.py at held-out shapes the L2 must evict (experiments/heldout_kernels/manifest_evicting.yaml)
    E="$OUT/evicting"
    mkdir -p "$E"
    step "ev) evicting mixes" 150 "$PY" -m iosim.kernels.user_codes --manifest experiments/heldout_kernels/manifest_evicting.yaml \
        --out "$E/mixes" >>"$LOG" 2>&1
    step "ev) evicting grid" 420 "$PY" -m iosim measure --manifest experiments/heldout_kernels/manifest_evicting.yaml \
        --out "$E" >>"$LOG" 2>&1
    rm -f "$E/measurements.csv"  # the JSON's twin: the device returns few files
fi
if want cv; then  # kernels/flash2.py, short causal fwd+bwd where convoy rules differ (experiments/heldout_kernels/manifest_convoy.yaml)
    V="$OUT/convoy"
    mkdir -p "$V"
    step "cv) convoy mixes" 150 "$PY" -m iosim.kernels.user_codes --manifest experiments/heldout_kernels/manifest_convoy.yaml \
        --out "$V/mixes" >>"$LOG" 2>&1
    step "cv) convoy grid" 360 "$PY" -m iosim measure --manifest experiments/heldout_kernels/manifest_convoy.yaml \
        --out "$V" >>"$LOG" 2>&1
    rm -f "$V/measurements.csv"  # the JSON's twin: the device returns few files
fi
want ip && step "ip) index probe" 300 "$PY" -m iosim.kernels.index_probe --out "$OUT/index_probe" >>"$LOG" 2>&1
want ips && step "ips) index probe, every calibrated tile point" 560 "$PY" -m iosim.kernels.index_probe --series "${PROFILE%%-*}" \
    --out "$OUT/index_probe_series" >>"$LOG" 2>&1
want wp && step "wp) wave probe" 560 "$PY" -m iosim.kernels.wave_probe --series "${PROFILE%%-*}" --out "$OUT/wave_probe" >>"$LOG" 2>&1
if want tp; then
    TP=experiments/thirdparty_kernels
    mkdir -p "$OUT/thirdparty"
    step "tp) third-party launchers vs SDPA" 120 "$PY" "$TP/check_gpu.py" >"$OUT/thirdparty/check.log" 2>&1
    step "tp) third-party mixes" 120 "$PY" -m iosim.kernels.user_codes --manifest "$TP/manifest.yaml" \
        --out "$OUT/thirdparty/mixes" >>"$LOG" 2>&1
    step "tp) third-party grid" 420 "$PY" -m iosim measure --manifest "$TP/manifest.yaml" --out "$OUT/thirdparty" \
        >>"$LOG" 2>&1
    rm -f "$OUT/thirdparty/measurements.csv"  # the JSON's twin: the device returns few files
fi
if want tpa; then
    TP=experiments/thirdparty_kernels
    A="$OUT/thirdparty/autotuned"
    mkdir -p "$A/mixes"
    cp "$TP/mixes/sm_90-triton-"*.json.gz "$A/mixes/" 2>/dev/null  # the file the new cases are merged into
    step "tpa) launchers vs SDPA" 120 "$PY" "$TP/check_gpu.py" >"$A/check.log" 2>&1
    step "tpa) autotuned mixes" 200 "$PY" -m iosim.kernels.user_codes --manifest "$TP/manifest_autotuned.yaml" \
        --out "$A/mixes" >>"$LOG" 2>&1
    step "tpa) autotuned grid" 240 "$PY" -m iosim measure --manifest "$TP/manifest_autotuned.yaml" --out "$A" \
        >>"$LOG" 2>&1
    rm -f "$A/measurements.csv"
    step "tpa) iosim's pick" 120 "$PY" -m iosim simulate --gpu h200 --kernel "$TP/tutorial_auto.py:attention" \
        --seq-len 4096 --head-dim 128 --batch 4 --heads 16 >"$A/simulate_pick.txt" 2>&1
fi
if want tpb; then
    TP=experiments/thirdparty_kernels
    B="$OUT/thirdparty/blockptr"
    mkdir -p "$B"
    step "tpb) launchers vs SDPA" 150 "$PY" "$TP/check_gpu.py" >"$B/check.log" 2>&1
    cp "$TP/mixes/sm_90-triton-3.6.0.json.gz" "$B/"  # the file the new cases are merged into, returned beside
    step "tpb) block-pointer mixes" 150 "$PY" -m iosim.kernels.user_codes --manifest "$TP/manifest_blockptr.yaml" \
        --out "$B" >>"$LOG" 2>&1
    step "tpb) block-pointer grid" 240 "$PY" -m iosim measure --manifest "$TP/manifest_blockptr.yaml" --out "$B" \
        >>"$LOG" 2>&1
    rm -f "$B/measurements.csv"
fi
third_party() {  # third_party STEP LABEL FILE MANIFEST DIR: launchers checked, compiled, measured (ncu) -> $OUT/thirdparty/DIR
    local tp=experiments/thirdparty_kernels f="$OUT/thirdparty/$5"
    mkdir -p "$f/mixes"
    step "$1) $2 launchers vs SDPA" 120 "$PY" "$tp/check_gpu.py" "$3" >"$f/check.log" 2>&1
    step "$1) $2 mixes" 120 "$PY" -m iosim.kernels.user_codes --manifest "$tp/$4" --out "$f/mixes" >>"$LOG" 2>&1
    step "$1) $2 grid" 320 "$PY" -m iosim measure --manifest "$tp/$4" --out "$f" >>"$LOG" 2>&1
    rm -f "$f/measurements.csv"  # the JSON's twin: the device returns few files
}
if want tpf; then
    third_party tpf FlagAttention flag_attn.py manifest_flag.yaml flag
fi
if want tpfb; then
    TP=experiments/thirdparty_kernels
    F="$OUT/thirdparty/flag_bwd"
    mkdir -p "$F" "$OUT/flag_bwd_mixes"
    step "tpfb) FlagAttention launchers and gradients vs SDPA" 120 "$PY" "$TP/check_gpu.py" flag_attn.py >"$F/check.log" 2>&1
    step "tpfb) FlagAttention backward mixes" 120 "$PY" -m iosim.kernels.user_codes --manifest "$TP/manifest_flag_bwd.yaml" \
        --out "$OUT/flag_bwd_mixes" >>"$LOG" 2>&1
    step "tpfb) FlagAttention backward grid" 420 "$PY" -m iosim measure --manifest "$TP/manifest_flag_bwd.yaml" --out "$F" >>"$LOG" 2>&1
    rm -f "$F/measurements.csv"  # the JSON's twin: the device returns few files
fi
if want tpfl; then
    third_party tpfl FlagAttention flag_attn.py manifest_flag_bylength.yaml flag_bylength
fi
if want tps; then
    third_party tps sglang sglang_prefill.py manifest_sglang.yaml sglang
fi
if want tpfr; then
    third_party tpfr FlagAttention flag_attn.py manifest_flag_refit.yaml flag_refit
fi
if want tpl; then
    third_party tpl lmdeploy lmdeploy_prefill.py manifest_lmdeploy.yaml lmdeploy
fi
if want hd; then  # kernels/flash2.py at d = 256 (experiments/heldout_kernels/manifest_head_dims.yaml)
    H="$OUT/head_dims"
    mkdir -p "$H"
    step "hd) d = 256 kernels on the GPU" 120 "$PY" -m pytest -q -p no:cacheprovider tests/test_kernels.py -m gpu \
        -k "big4" >"$H/pytest_gpu_d256.log" 2>&1
    step "hd) head dims mixes" 120 "$PY" -m iosim.kernels.user_codes --manifest experiments/heldout_kernels/manifest_head_dims.yaml \
        --out "$H/mixes" >>"$LOG" 2>&1
    step "hd) head dims grid" 300 "$PY" -m iosim measure --manifest experiments/heldout_kernels/manifest_head_dims.yaml \
        --out "$H" >>"$LOG" 2>&1
    rm -f "$H/measurements.csv"  # the JSON's twin: the device returns few files
fi
if want hds; then
    TP=experiments/thirdparty_kernels
    S="$OUT/thirdparty/sglang_head_dims"
    mkdir -p "$S/mixes"
    step "hds) sglang launcher vs SDPA at d = 80, 96, 256" 120 "$PY" "$TP/check_gpu.py" --head-dims 80,96,256 \
        sglang_prefill.py >"$S/check.log" 2>&1
    step "hds) sglang head dims mixes" 120 "$PY" -m iosim.kernels.user_codes --manifest "$TP/manifest_sglang_head_dims.yaml" \
        --out "$S/mixes" >>"$LOG" 2>&1
    step "hds) sglang head dims grid" 320 "$PY" -m iosim measure --manifest "$TP/manifest_sglang_head_dims.yaml" --out "$S" >>"$LOG" 2>&1
    rm -f "$S/measurements.csv"  # the JSON's twin: the device returns few files
fi
if want br; then
    TP=experiments/thirdparty_kernels
    S="$OUT/thirdparty/flag_chunked"
    mkdir -p "$S" "$OUT/offset"
    step "br) FlagAttention launchers at a chunked prefill vs SDPA" 120 "$PY" "$TP/check_gpu.py" --chunked flag_attn.py \
        >"$S/check.log" 2>&1
    step "br) FlagAttention chunked grid" 300 "$PY" -m iosim measure --manifest "$TP/manifest_flag_chunked.yaml" \
        --out "$S" >>"$LOG" 2>&1
    rm -f "$S/measurements.csv"  # the JSON's twin: the device returns few files
    step "br) foreign kernels, causal with Nq < Nk" 150 "$PY" -m iosim measure \
        --manifest experiments/foreign_kernels/manifest_offset.yaml --out "$OUT/offset" >>"$LOG" 2>&1
    rm -f "$OUT/offset/measurements.csv"
fi
if want off; then
    H="$OUT/heldout_offset"
    mkdir -p "$H"
    step "off) our kernels causal with Nq != Nk on the GPU" 120 "$PY" -m pytest -q -p no:cacheprovider tests/test_kernels.py \
        -m gpu -k "big5" >"$H/pytest_gpu_offset.log" 2>&1
    step "off) held-out offset grid" 280 "$PY" -m iosim measure --manifest experiments/heldout_kernels/manifest_offset.yaml \
        --out "$H" >>"$LOG" 2>&1
    rm -f "$H/measurements.csv"  # the JSON's twin: the device returns few files
fi
if want sg; then
    mkdir -p "$OUT/heldout_small" "$OUT/small_foreign"
    step "sg) small grids, our kernel" 200 "$PY" -m iosim measure --manifest experiments/heldout_kernels/manifest_small.yaml \
        --out "$OUT/heldout_small" >>"$LOG" 2>&1
    step "sg) small grids, foreign kernels" 200 "$PY" -m iosim measure --manifest experiments/foreign_kernels/manifest_small.yaml \
        --out "$OUT/small_foreign" >>"$LOG" 2>&1
    rm -f "$OUT/heldout_small/measurements.csv" "$OUT/small_foreign/measurements.csv"  # the JSONs' twins
fi
if want dq; then
    mkdir -p "$OUT/dq"
    step "dq) flash kernels with dQ apart on the GPU" 150 "$PY" -m pytest -q -p no:cacheprovider tests/test_kernels.py \
        -k "dq" >"$OUT/dq/pytest_gpu_dq.log" 2>&1
    step "dq) the dq grid" 400 "$PY" -m iosim measure --grid dq --out "$OUT/dq" >>"$LOG" 2>&1
    rm -f "$OUT/dq/measurements.csv"  # the JSON's twin: the device returns few files
fi
if want sm; then
    mkdir -p "$OUT/smem/mixes"
    step "sm) smem grid mixes" 120 "$PY" -m iosim.kernels.user_codes --grid smem --out "$OUT/smem/mixes" >>"$LOG" 2>&1
    step "sm) smem grid" 420 "$PY" -m iosim measure --grid smem --out "$OUT/smem" >>"$LOG" 2>&1
    rm -f "$OUT/smem/measurements.csv"  # the JSON's twin: the device returns few files
fi
if want lt; then
    mkdir -p "$OUT/lone_tiles/calmix"
    DEEP=$("$PY" -c 'from iosim.kernels.microbench import SOFTMAX_TILES_DEEP as T; print(",".join(f"softmax tiles {a}x{b}x{d}w{w}s{s}" for a, b, d, w, _, s in T))')
    step "lt) deep softmax tile loops" 400 "$PY" -m iosim calibrate --base "$PROFILE" --out "$OUT/lone_tiles/lone_tiles.yaml" \
        --only "$DEEP" >"$OUT/lone_tiles/lone_tiles.log" 2>&1
    step "lt) calibration mixes" 100 "$PY" -m iosim.kernels.sass --calibration --out "$OUT/lone_tiles/calmix" >>"$LOG" 2>&1
fi
held_out() {  # held_out NAME MANIFEST DIR: a manifest predicted before it runs, measured (ncu) -> $OUT/DIR
    mkdir -p "$OUT/$3"
    step "$1" 480 "$PY" -m iosim measure --manifest "$2" --out "$OUT/$3" >>"$LOG" 2>&1
    rm -f "$OUT/$3/measurements.csv"  # the JSON's twin: the device returns few files
}
want cav && held_out "cav) held-out caveat grid" experiments/thirdparty_kernels/manifest_caveats.yaml thirdparty/caveats
want per && held_out "per) held-out persistent kernel" experiments/foreign_kernels/manifest_persistent.yaml persistent
want per2 && held_out "per2) held-out persistent kernels, tiles bound or drawn" \
    experiments/foreign_kernels/manifest_persistent_heldout.yaml persistent/heldout
want unr && held_out "unr) held-out kernel with two blocks a pass" experiments/foreign_kernels/manifest_unrolled.yaml unrolled
want spf && held_out "spf) held-out spilling kernels" experiments/foreign_kernels/manifest_spill.yaml spill_heldout
grid_step() {  # grid_step NAME GRID DIR SECONDS: a measurement grid predicted before it runs, measured (ncu) -> $OUT/DIR
    mkdir -p "$OUT/$3"
    step "$1" "$4" "$PY" -m iosim measure --grid "$2" --out "$OUT/$3" >>"$LOG" 2>&1
    rm -f "$OUT/$3/measurements.csv"  # the JSON's twin: the device returns few files
}
want ssm && grid_step "ssm) SDPA at small grids and new backward shapes" sdpa_small sdpa_small 480
want spl && grid_step "spl) SDPA flash where it splits, held out" sdpa_split sdpa_split 300
want spl2 && grid_step "spl2) SDPA flash where it splits, held out again" sdpa_split2 sdpa_split2 300
want sma && grid_step "sma) standard attention on small problems" small small 300
want cvp && step "cvp) convoy probe" 300 "$PY" -m iosim.kernels.convoy_probe --out "$OUT/convoy_probe" >>"$LOG" 2>&1
want cvs && step "cvs) convoy probe, bare and softmax" 400 "$PY" -m iosim.kernels.convoy_probe --softmax both \
    --out "$OUT/convoy_softmax" >>"$LOG" 2>&1
want wmp && step "wmp) warm probe" 200 "$PY" -m iosim.kernels.warm_probe --out "$OUT/warm_probe" >>"$LOG" 2>&1
if want svar; then  # the split-KV forward's causal and ragged instantiations, at shapes no committed set has
    for v in "1 1 3000 64 1 causal_d64" "1 2 2048 64 1 causal_even_d64" \
             "1 4 1500 64 0 ragged_d64" "1 1 2500 128 1 causal_d128" \
             "1 2 2048 128 1 causal_even_d128" "1 4 1200 128 0 ragged_d128"; do
        set -- $v
        step "svar) split-KV source page B$1 H$2 N $3 d $4 causal $5" 240 env SHAPE="$1 $2 $3 $4" CAUSAL="$5" DIR="sdpa_split_sass_variants/$6" \
            OUT="$OUT" bash experiments/probes/sdpa_split_sass.sh >>"$LOG" 2>&1
    done
fi
if want scau; then  # SDPA's forward and backward kernels in their causal instantiations, at shapes no committed set has
    for v in "2 8 3072 64 d64" "2 8 3072 128 d128"; do
        set -- $v
        step "scau) causal source pages B$1 H$2 N $3 d $4" 300 env SHAPE="$1 $2 $3 $4" CAUSAL=1 DIR="sdpa_sass_causal/$5" \
            OUT="$OUT" bash experiments/probes/sdpa_source_sass.sh >>"$LOG" 2>&1
    done
fi
want hmp && step "hmp) tile loops as wgmma and as mma.sync" 420 "$PY" -m iosim.kernels.hmma_probe --out "$OUT/hmma_probe" \
    >>"$LOG" 2>&1
want stp && step "stp) stream probe" 300 "$PY" -m iosim.kernels.stream_probe --out "$OUT/stream_probe" >>"$LOG" 2>&1
if want lct; then
    mkdir -p "$OUT/trace_long_tiles"
    step "lct) traces at F1's and F5's configurations, 128K" 360 "$PY" -m iosim.kernels.causal_trace \
        --out "$OUT/trace_long_tiles" --seq-len 131072 --order rows --tiling 128x64w4s2 128x32w4s4 >>"$LOG" 2>&1
    step "lct) trace at F4's configuration, 96K" 200 "$PY" -m iosim.kernels.causal_trace \
        --out "$OUT/trace_long_tiles" --seq-len 98304 --order rows --tiling 64x128w4s3 >>"$LOG" 2>&1
fi
held_mixes() {  # held_mixes NAME MANIFEST KERNELS TAG: the manifest's code compiled by this Triton -> $OUT/mixes_TAG/
    # (what validate reads beside the kernels, KERNELS/mixes/: commit its cases there; the device returns no deeper path)
    mkdir -p "$OUT/mixes_$4"
    step "$1" 200 "$PY" -m iosim.kernels.user_codes --manifest "$2" --out "$OUT/mixes_$4" >>"$LOG" 2>&1
}
held_kernels() {  # held_kernels NAME MANIFEST TAG DIR: experiments/heldout_kernels/'s manifest compiled, then measured
    held_mixes "$1 mixes" "$2" experiments/heldout_kernels "$3"
    held_out "$1" "$2" "$4"
}
if want lcm; then
    held_mixes "lcm) long-tiles mixes" experiments/heldout_kernels/manifest_long_tiles.yaml experiments/heldout_kernels \
        long_tiles
    held_out "lcm) kernels/flash2.py at the foreign configurations" \
        experiments/heldout_kernels/manifest_long_tiles.yaml heldout/long_tiles
fi
if want bias; then
    mkdir -p "$OUT/heldout/bias"
    step "bias) bias kernel against float64" 120 "$PY" -c '
import importlib.util, torch
spec = importlib.util.spec_from_file_location("bias", "tests/data/user_kernel_bias.py")
m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
g = torch.Generator(device="cuda").manual_seed(0)
for fn, shared in (("attention", False), ("attention_wide", False), ("attention_shared", True)):
    q, k, v = (torch.randn(2, 4, 1000, 64, device="cuda", generator=g).half() for _ in range(3))
    b = torch.randn(*(() if shared else (2, 4)), 1000, 1000, device="cuda", generator=g).half()
    ref = torch.softmax(q.double() @ k.double().transpose(-1, -2) / 8 + b.double(), -1) @ v.double()
    err = ((getattr(m, fn)(q, k, v, bias=b).double() - ref).abs().max() / ref.abs().max()).item()
    print(fn, "max relative error", err, "ok" if err < 10 * 2 ** -11 else "FAILED")
' >"$OUT/heldout/bias/check.log" 2>&1
    held_mixes "bias) bias mixes" experiments/heldout_kernels/manifest_bias.yaml tests/data bias
    held_out "bias) held-out bias kernel" experiments/heldout_kernels/manifest_bias.yaml heldout/bias
fi
want pace && held_kernels "pace) long causal forwards at new lengths" experiments/heldout_kernels/manifest_pace.yaml pace \
    heldout/pace
want hc && held_kernels "hc) long causal forwards, 2-32 heads" experiments/heldout_kernels/manifest_head_count.yaml \
    head_count heldout/head_count
want hc1 && held_kernels "hc1) long causal forwards, 1-8 heads" experiments/heldout_kernels/manifest_head_count_one.yaml \
    head_count_one heldout/head_count_one
want hh && held_out "hh) heads order, long causal" experiments/heldout_kernels/manifest.yaml heldout/heads
if want bsm; then
    mkdir -p "$OUT/bwd_softmax"
    step "bsm) backward softmax series" 180 "$PY" -m iosim calibrate --base "hardware_profiles/$PROFILE.yaml" \
        --out "$OUT/bwd_softmax/bwd_softmax.yaml" --only "bwd softmax 128x64x64w8 c=1,bwd softmax 128x64x128w8 c=1,\
bwd atomics 128x64x64w8 c=1,bwd atomics 128x64x128w8 c=1" >"$OUT/bwd_softmax/calibrate.log" 2>&1
    step "bsm) calibration mixes" 100 "$PY" -m iosim.kernels.sass --calibration --out "$OUT/bwd_softmax/calmix" \
        >>"$LOG" 2>&1
fi
if want ba; then
    mkdir -p "$OUT/bwd_atomics"
    step "ba) backward atomics at d = 128" 120 "$PY" -m iosim calibrate --base "hardware_profiles/$PROFILE.yaml" \
        --out "$OUT/bwd_atomics/bwd_atomics.yaml" --only "bwd atomics 128x64x128w8 c=1,bwd atomics 128x64x128w8s1 c=1,\
bwd atomics 128x64x128w8s3 c=1,bwd atomics 128x64x128w8s4 c=1,bwd atomics 128x64x64w8 c=1" \
        >"$OUT/bwd_atomics/calibrate.log" 2>&1
fi
want bl && held_kernels "bl) long causal forward + backward" experiments/heldout_kernels/manifest_bwd_long.yaml bwd_long \
    heldout/bwd_long
want bd && held_kernels "bd) d = 128 forward + backward" experiments/heldout_kernels/manifest_bwd_d128.yaml bwd_d128 \
    heldout/bwd_d128
if want bh; then
    held_mixes "bh) d = 128 backward mixes, H200 held out" experiments/heldout_kernels/manifest_bwd_h200.yaml \
        experiments/heldout_kernels bwd_h200
    held_out "bh) d = 128 forward + backward, H200 held out" experiments/heldout_kernels/manifest_bwd_h200.yaml heldout/bwd_h200
fi
if want tj; then
    mkdir -p "$OUT/trace_jitter"
    step "tj) CTA pace traces, 32K" 400 "$PY" -m iosim.kernels.causal_trace --out "$OUT/trace_jitter" --seq-len 32768 \
        --order rows --chunk 8 --tiling 128x64w8s2 128x64w4s2 128x32w4s4 64x128w4s3 >>"$LOG" 2>&1
fi
if want fl1; then
    F="$OUT/thirdparty/flag_l1"
    mkdir -p "$F"
    step "fl1) FlagAttention launchers and gradients vs SDPA" 120 "$PY" experiments/thirdparty_kernels/check_gpu.py \
        flag_attn.py >"$F/check.log" 2>&1
    step "fl1) FlagAttention held-out grid with L1 counters" 280 "$PY" -m iosim measure \
        --manifest experiments/thirdparty_kernels/manifest_flag_bwd_heldout.yaml --out "$F" >>"$LOG" 2>&1
    rm -f "$F/measurements.csv"  # the JSON's twin: the device returns few files
fi
want l1p && step "l1p) L1 replacement probe" 300 "$PY" -m iosim.kernels.l1_probe --out "$OUT/l1_probe" >>"$LOG" 2>&1
want pp && step "pp) pair probe" 480 "$PY" -m iosim.kernels.pair_probe --out "$OUT/pair_probe" >>"$LOG" 2>&1
echo "done $(date -u +%FT%TZ), $SECONDS s in all" >>"$LOG"
ls -laR "$OUT" >>"$LOG"
