set -u
PY=/opt/torch/.venv/bin/python3; [ -x $PY ] || PY=python3
NCU_DIR=$(ls -d /opt/nvidia/nsight-compute/*/ 2>/dev/null | sort | tail -n 1); command -v ncu >/dev/null || export PATH="$NCU_DIR:$PATH"
# usage: [SHAPE="B H N D"] [DIR=name] [CAUSAL=1] bash experiments/probes/sdpa_source_sass.sh  (default 4 16 4096 128,
# sdpa_sass); CAUSAL=1: with is_causal (the kernels' causal instantiations)
SHAPE=${SHAPE:-"4 16 4096 128"}; DIR=${DIR:-sdpa_sass}; CAUSAL=${CAUSAL:-0}
mkdir -p $OUT/$DIR
cat > /tmp/child.py <<'PYEOF'
import os, torch, torch.nn.functional as F
from torch.nn.attention import sdpa_kernel, SDPBackend
torch.manual_seed(0)
B, H, N, D = map(int, os.environ["SHAPE"].split())
causal = os.environ.get("CAUSAL", "0") == "1"
q = torch.randn(B, H, N, D, device="cuda", dtype=torch.float16, requires_grad=True)
k = torch.randn_like(q, requires_grad=True); v = torch.randn_like(q, requires_grad=True)
do = torch.randn_like(q)
for name, be in (("cudnn", SDPBackend.CUDNN_ATTENTION), ("flash", SDPBackend.FLASH_ATTENTION)):
    with sdpa_kernel(be):
        o = F.scaled_dot_product_attention(q, k, v, is_causal=causal); torch.autograd.grad(o, (q, k, v), do)
        torch.cuda.synchronize()
        torch.cuda.profiler.start(); torch.cuda.nvtx.range_push(name)
        o = F.scaled_dot_product_attention(q, k, v, is_causal=causal); torch.autograd.grad(o, (q, k, v), do)
        torch.cuda.synchronize(); torch.cuda.nvtx.range_pop(); torch.cuda.profiler.stop()
PYEOF
(date -u +%FT%TZ; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; $PY -c 'import torch;print(torch.__version__)'; ncu --version | tail -1; echo "SHAPE=$SHAPE (B H N D), CAUSAL=$CAUSAL") > $OUT/$DIR/provenance.txt
SHAPE="$SHAPE" CAUSAL="$CAUSAL" timeout 400 ncu --profile-from-start off --nvtx --clock-control none --section SourceCounters -f -o $OUT/$DIR/sdpa_src $PY /tmp/child.py > $OUT/$DIR/ncu.log 2>&1; echo "ncu rc=$?"
tail -5 $OUT/$DIR/ncu.log
timeout 200 ncu --import $OUT/$DIR/sdpa_src.ncu-rep --page source --print-source sass --csv > $OUT/$DIR/sdpa_sass.csv 2> $OUT/$DIR/export.err; echo "export rc=$?"; head -c 600 $OUT/$DIR/export.err
ls -la $OUT/$DIR; head -5 $OUT/$DIR/sdpa_sass.csv | cut -c1-300; wc -l $OUT/$DIR/sdpa_sass.csv
gzip -k $OUT/$DIR/sdpa_sass.csv; rm -f $OUT/$DIR/sdpa_sass.csv
