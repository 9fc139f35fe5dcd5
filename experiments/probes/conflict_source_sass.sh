# usage: OUT=DIR [DIR=name] bash experiments/probes/conflict_source_sass.sh
# Our Triton kernels the lane evaluation of iosim.costs.banks says conflict, and some it says do not
# (experiments/probes/conflict_kernels.py), under ncu's SourceCounters: every SASS line with its warp instructions and
# shared-memory wavefronts, which experiments/bank_conflicts.py holds the evaluation against (written before it ran).
export PYTHONPATH=.:${PYTHONPATH:-}
DIR=${DIR:-conflict_sass} PREFIX=conflict ARGS=experiments/probes/conflict_kernels.py NVTX="conflict-.*" \
    SECTIONS="SourceCounters LaunchStats" bash experiments/probes/launch_source_sass.sh
rm -f $OUT/${DIR:-conflict_sass}/conflict_src.ncu-rep
