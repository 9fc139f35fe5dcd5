set -u
PY=/opt/torch/.venv/bin/python3; [ -x $PY ] || PY=python3
NCU_DIR=$(ls -d /opt/nvidia/nsight-compute/*/ 2>/dev/null | sort | tail -n 1); command -v ncu >/dev/null || export PATH="$NCU_DIR:$PATH"
# usage: OUT=DIR [DIR=name] bash experiments/probes/launch_source_sass.sh
# The launch probe's sums at 64 CTAs an SM (8448 CTAs) under ncu's SourceCounters and WarpStateStats sections: each SASS
# line's warp instructions and its warp-stall samples by reason, to see where a CTA summing across warps through shared
# memory waits (the launch probe's 4- and 8-warp sums cost their SM 130-1200 ns a CTA, 2 warps 40-70, within a warp 10-25)
# Other probes reuse it with PREFIX (file names), ARGS (what python runs), NVTX (the ranges profiled) and SECTIONS.
DIR=${DIR:-launch_sass}
PREFIX=${PREFIX:-launch}
ARGS=${ARGS:--m iosim.kernels.launch_probe --child}
NVTX=${NVTX:-launch-(reduce|reduce2|reduce8|rowsum|gather|idle)-(4|16)-8448}
SECTIONS=${SECTIONS:-SourceCounters WarpStateStats LaunchStats Occupancy}
mkdir -p $OUT/$DIR
(date -u +%FT%TZ; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; $PY -c 'import torch, triton; print(torch.__version__, triton.__version__)'; ncu --version | tail -1; echo "python $ARGS, NVTX ranges $NVTX") > $OUT/$DIR/provenance.txt
timeout 400 ncu --profile-from-start off --nvtx --nvtx-include "regex:$NVTX/" --clock-control none \
    $(for s in $SECTIONS; do printf -- '--section %s ' $s; done) -f -o $OUT/$DIR/${PREFIX}_src $PY $ARGS > $OUT/$DIR/ncu.log 2>&1; echo "ncu rc=$?"
tail -5 $OUT/$DIR/ncu.log
timeout 200 ncu --import $OUT/$DIR/${PREFIX}_src.ncu-rep --page source --print-source sass --csv > $OUT/$DIR/${PREFIX}_sass.csv 2> $OUT/$DIR/export.err; echo "export rc=$?"; head -c 600 $OUT/$DIR/export.err
timeout 200 ncu --import $OUT/$DIR/${PREFIX}_src.ncu-rep --page details --csv > $OUT/$DIR/${PREFIX}_details.csv 2>> $OUT/$DIR/export.err; echo "details rc=$?"
ls -la $OUT/$DIR; head -3 $OUT/$DIR/${PREFIX}_sass.csv | cut -c1-300; wc -l $OUT/$DIR/${PREFIX}_sass.csv
gzip -k $OUT/$DIR/${PREFIX}_sass.csv $OUT/$DIR/${PREFIX}_details.csv; rm -f $OUT/$DIR/${PREFIX}_sass.csv $OUT/$DIR/${PREFIX}_details.csv
