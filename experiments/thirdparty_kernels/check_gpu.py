"""Each launcher of this folder's kernels against PyTorch's SDPA in float32 on a GPU (random inputs, N = 1024 and
2048, causal and not): the largest absolute error per launcher (and, for the launchers in BACKWARD, of dQ, dK, dV
against SDPA's gradients), so that a wrong launcher is not measured.

    python experiments/thirdparty_kernels/check_gpu.py [--head-dims 64,128] [--chunked] [FILE.py ...]   (needs the
                                                 kernel files, see README.md; FILE: only those files' launchers; d = 64
                                                 and 128 unless --head-dims names others; --chunked: causal with 512
                                                 query rows against 2048 keys, the diagonal bottom-right, instead)
"""
import importlib.util
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
LAUNCHERS = {"tutorial_fa.py": ["fwd_128x64_w4_s3", "fwd_128x128_w8_s3", "fwd_64x64_w4_s4", "fwd_128x32_w4_s2",
                                "fwd_128x64_w4_s3_devdesc"],
             "tlk_flash.py": ["fwd"], "tutorial_auto.py": ["attention"],
             "tutorial_bp.py": ["attention", "fwd_128x64_w4_s3"],
             "flag_attn.py": ["fwd", "fwd_128x64_s3_w4", "fwd_128x128_s3_w8", "fwd_128x32_s2_w4", "fwd_64x64_s3_w4",
                              "fwd_bwd", "fwd_bwd_a100", "fwd_a100"],
             "sglang_prefill.py": ["fwd"], "lmdeploy_prefill.py": ["fwd"]}
BACKWARD = {"flag_attn.py": {"fwd_bwd", "fwd_bwd_a100"}}  # launchers whose gradients are checked too


def main() -> int:
    bad = 0
    args = sys.argv[1:]
    dims = (64, 128)
    if args[:1] == ["--head-dims"]:
        dims, args = tuple(int(d) for d in args[1].split(",")), args[2:]
    shapes = ((1024, 1024, False), (2048, 2048, True))  # (query rows, keys, causal)
    if args[:1] == ["--chunked"]:  # a chunked prefill: row i sees keys j <= i + Nk - Nq
        shapes, args = ((512, 2048, True),), args[1:]
    only = set(args)
    for file, names in LAUNCHERS.items():
        if only and file not in only:
            continue
        spec = importlib.util.spec_from_file_location(file[:-3], HERE / file)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        for name in names:
            for d in dims:
                for n, nk, causal in shapes:
                    torch.manual_seed(0)
                    grads = name in BACKWARD.get(file, ())
                    q, k, v = (torch.randn(2, 4, rows, d, device="cuda", dtype=torch.float16, requires_grad=grads)
                               for rows in (n, nk, nk))
                    try:
                        o = getattr(module, name)(q, k, v, causal=causal)
                    except Exception as e:  # e.g. a tile wider than the head dim
                        print(f"{file}:{name} d={d} n={n} nk={nk} causal={causal}: {type(e).__name__}: {str(e)[:120]}")
                        continue
                    q32, k32, v32 = (x.detach().float().requires_grad_(grads) for x in (q, k, v))
                    if n == nk:
                        ref = torch.nn.functional.scaled_dot_product_attention(q32, k32, v32, is_causal=causal)
                    else:  # the diagonal bottom-right
                        seen = torch.arange(nk, device="cuda")[None, :] <= torch.arange(n, device="cuda")[:, None] + nk - n
                        ref = torch.nn.functional.scaled_dot_product_attention(q32, k32, v32, attn_mask=seen)
                    err = (o.float() - ref).abs().max().item()
                    what = ""
                    if grads:
                        do = torch.randn_like(o)
                        o.backward(do)
                        ref.backward(do.float())
                        gerr = max((a.grad.float() - b.grad).abs().max().item() for a, b in ((q, q32), (k, k32), (v, v32)))
                        err = max(err, gerr)
                        what = f" (dQ, dK, dV: {gerr:.2e})"
                    bad += err > 2e-2
                    print(f"{file}:{name} d={d} n={n} nk={nk} causal={causal}: max |error| {err:.2e}{what}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
