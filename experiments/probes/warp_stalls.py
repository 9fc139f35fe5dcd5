"""Forward kernels of one tile loop each, run once after a warm-up call, for Nsight Compute's warp-state and
scheduler sections: where their warps wait (barrier, scoreboard, wgmma, ...) on the same problem.

Run under ncu (experiments/probes/warp_stalls.sh does); the kernels are ours, Triton's tutorial in two forms and
two foreign kernels, all forward, B 4 x H 16, N 4096, d = 64 (and the tutorial's 128 x 64 at d = 128).
"""
import sys

import torch

from iosim.kernels.user_kernel import load_kernel

CASES = [("kernels/flash2.py:attention", 64), ("experiments/thirdparty_kernels/tutorial_fa.py:fwd_128x64_w4_s3", 64),
         ("experiments/thirdparty_kernels/tutorial_bp.py:fwd_128x64_w4_s3", 64),
         ("experiments/thirdparty_kernels/tutorial_fa.py:fwd_64x64_w4_s4", 64),
         ("experiments/foreign_kernels/F1_exp_maskall.py:attention", 64),
         ("experiments/foreign_kernels/F2_exp2_masksplit.py:attention", 64),
         ("kernels/flash2.py:attention", 128), ("experiments/thirdparty_kernels/tutorial_fa.py:fwd_128x64_w4_s3", 128)]


def main() -> int:
    torch.manual_seed(0)
    for n, (ref, d) in enumerate(CASES):
        q, k, v = (torch.randn(4, 16, 4096, d, device="cuda", dtype=torch.float16) for _ in range(3))
        fn = load_kernel(ref)
        fn(q, k, v, False)  # compiles (and autotunes where the file does)
        torch.cuda.synchronize()
        torch.cuda.nvtx.range_push(f"stallcase{n}")  # no '/' or '@' (ncu's NVTX filter syntax)
        fn(q, k, v, False)
        torch.cuda.nvtx.range_pop()
        torch.cuda.synchronize()
        print(f"stallcase{n}", ref, d, "ok", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
