set -u
PY=/opt/torch/.venv/bin/python3; [ -x $PY ] || PY=python3
NCU_DIR=$(ls -d /opt/nvidia/nsight-compute/*/ 2>/dev/null | sort | tail -n 1); command -v ncu >/dev/null || export PATH="$NCU_DIR:$PATH"
# usage: SHAPE="B H N D" DIR=name [CAUSAL=1] OUT=... bash experiments/probes/sdpa_split_sass.sh
# The source page (every SASS line with the warp instructions it executed) of SDPA's flash backend's forward at a
# shape where FlashAttention-2 splits the K/V length: flash_fwd_splitkv_kernel and its combine kernel, one call;
# CAUSAL=1: with is_causal (the kernel's causal instantiation, whose first blocks a CTA runs are masked).
SHAPE=${SHAPE:?set SHAPE=\"B H N D\"}; DIR=${DIR:?set DIR}; CAUSAL=${CAUSAL:-0}
mkdir -p $OUT/$DIR
cat > /tmp/split_child.py <<'PYEOF'
import os, torch, torch.nn.functional as F
from torch.nn.attention import sdpa_kernel, SDPBackend
torch.manual_seed(0)
B, H, N, D = map(int, os.environ["SHAPE"].split())
causal = os.environ.get("CAUSAL", "0") == "1"
q = torch.randn(B, H, N, D, device="cuda", dtype=torch.float16)
k = torch.randn_like(q); v = torch.randn_like(q)
with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
    F.scaled_dot_product_attention(q, k, v, is_causal=causal); torch.cuda.synchronize()
    torch.cuda.profiler.start()
    F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    torch.cuda.synchronize(); torch.cuda.profiler.stop()
PYEOF
(date -u +%FT%TZ; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; $PY -c 'import torch;print(torch.__version__)'; ncu --version | tail -1; echo "SHAPE=$SHAPE (B H N D), CAUSAL=$CAUSAL, fp16, forward, SDPBackend.FLASH_ATTENTION") > $OUT/$DIR/provenance.txt
SHAPE="$SHAPE" CAUSAL="$CAUSAL" timeout 200 ncu --profile-from-start off --clock-control none --section SourceCounters --section LaunchStats -f -o $OUT/$DIR/split_src $PY /tmp/split_child.py > $OUT/$DIR/ncu.log 2>&1; echo "ncu rc=$?"
tail -3 $OUT/$DIR/ncu.log
timeout 100 ncu --import $OUT/$DIR/split_src.ncu-rep --page source --print-source sass --csv > $OUT/$DIR/sdpa_sass.csv 2> $OUT/$DIR/export.err; echo "export rc=$?"
timeout 100 ncu --import $OUT/$DIR/split_src.ncu-rep --page details --csv > $OUT/$DIR/launch.csv 2>> $OUT/$DIR/export.err
wc -l $OUT/$DIR/sdpa_sass.csv; grep -c "" $OUT/$DIR/launch.csv
gzip -f $OUT/$DIR/sdpa_sass.csv; rm -f $OUT/$DIR/split_src.ncu-rep
