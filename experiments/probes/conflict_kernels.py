"""Our Triton kernels whose compiled code the lane evaluation (iosim.costs.banks) says conflicts, and some it says do
not, each launched once on random data inside an NVTX range ``conflict-<name>``: flash-decoding's split and reduce at
2-64 splits and d = 64 and 128, standard attention's softmax and dS kernels at three row lengths, the flash2 backward
at d = 256 with 64 x 32 tiles (8 warps). Run under ``ncu --section SourceCounters`` by conflict_source_sass.sh; the
wavefronts ncu counts per SASS line are what ``experiments/bank_conflicts.py`` holds the evaluation against."""
import torch

from kernels import flash2, flash_decode, standard


def cases():
    g = torch.Generator(device="cuda").manual_seed(0)

    def randn(*shape):
        return torch.randn(*shape, device="cuda", generator=g, dtype=torch.float16)

    for d, splits in ((128, 2), (128, 4), (128, 16), (128, 64), (64, 8), (64, 64)):
        q, k, v = randn(1, 32, 1, d), randn(1, 8, 8192, d), randn(1, 8, 8192, d)
        yield f"decode-d{d}-s{splits}", lambda q=q, k=k, v=v, s=splits: flash_decode.attention(q, k, v, splits=s)
    for n in (1000, 2048, 4096):
        q, k, v = randn(1, 4, n, 64), randn(1, 4, n, 64), randn(1, 4, n, 64)
        q.requires_grad_(True)

        def run(q=q, k=k, v=v):
            out = standard.attention(q, k, v)
            out.backward(torch.randn_like(out))
        yield f"standard-n{n}", run
    q, k, v = (randn(1, 4, 2048, 256).requires_grad_(True) for _ in range(3))

    def bwd256():
        out = flash2.attention(q, k, v)  # its default backward tiles at d = 256: 64 x 32, 8 warps
        out.backward(torch.randn_like(out))
    yield "flash2-bwd-d256", bwd256


def main():
    for name, fn in cases():
        fn()  # compile and warm outside the range
        torch.cuda.synchronize()
        torch.cuda.nvtx.range_push(f"conflict-{name}")
        fn()
        torch.cuda.synchronize()
        torch.cuda.nvtx.range_pop()
        print(name, "ok", flush=True)


if __name__ == "__main__":
    torch.cuda.cudart().cudaProfilerStart()
    main()
    torch.cuda.cudart().cudaProfilerStop()
