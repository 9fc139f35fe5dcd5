"""PyTorch SDPA's fused backends as schedules iosim models: FlashAttention-2's, on the kernels each backend runs.

Both backends follow FlashAttention-2's memory schedule (a Q-outer forward; a K/V-outer backward that
adds dQ into an fp32 buffer, with ``D = rowsum(dO∘O)`` and a cast around it), so their bytes are
flash2's on their own tiles (``REFERENCE_TILES`` in :mod:`iosim.schedule.tiling`). What differs is
their code (:func:`iosim.costs.code.reference_codes`: what their kernels executed), how a CTA overlaps
its work, and the order of their loops:

- ``sdpa_cudnn`` on sm_90: the kernels cuDNN generates at run time, ``flash_fprop_wgmma_*`` and
  ``flash_bprop_wgmma_*``: persistent (one CTA of 384 threads per SM), a producer warpgroup loading by
  TMA beside two consumer warpgroups (FlashAttention-3's design; their code reallocates registers
  between them, ``USETMAXREG``). The forward's consumers hold 64 Q rows each against 128 K/V rows a
  step (128 Q rows a CTA, which its crossbar bytes confirm); the backward holds 128 K/V rows a CTA
  and steps 64 Q rows at a time, reducing dQ by TMA (``UTMAREDG``).
- ``sdpa_flash``: FlashAttention-2's CUDA kernels in libtorch (``Flash_fwd_kernel_traits<d, bm, bn,
  warps>``, ``Flash_bwd_kernel_traits<d, bm, bn, warps, ...>``), whose loops walk their blocks from
  the last down ("we iterate over the blocks in reverse order", ``flash_fwd_kernel.h``; the backward
  starts at ``m_block_max - 1``): a causal CTA starts at its diagonal. Its backward is handed dO and O
  as the (B, N, H, d) views of the caller's (B, H, N, d) tensors and copies both to contiguous memory
  first (``_flash_attention_backward``: "CUDA code assumes that dout is contiguous"; two strided ATen
  copies of a query-sized tensor each in every measured run), and its ``flash_bwd_dot_do_o_kernel``
  clears the fp32 dQ accumulator as it computes ``D`` (``Clear_dQaccum``): no fill kernel of its own.
  Where its forward's CTAs would fill under 80 % of two a SM, it splits the K/V length
  (``set_params_splitkv``: ``num_splits_heuristic`` over 64-row query blocks, K/V blocks of 256, 128 or 64
  keys for d up to 64, 128 or more): ``flash_fwd_splitkv_kernel``, grid (query blocks, splits, B·H),
  each CTA its share of its query block's K/V blocks, writing fp32 partial outputs and logsumexps, then
  ``flash_fwd_splitkv_combine_kernel`` (4, 8 or 16 rows a CTA for d a multiple of 128, of 64, other)
  reading them back into O and the logsumexp: ``flash2_fwd_split`` and ``flash2_fwd_combine``.

Only sm_90 and the head dimensions whose kernels' code was read are modelled.
"""
from __future__ import annotations

from dataclasses import replace

from iosim.schedule.common import FP32, extents
from iosim.schedule.common import elementwise as copy_kernel
from iosim.schedule.ir import EPI, LOOP, PRO, READ, WRITE, Flops, Kernel, Pattern
from iosim.schedule.problem import SDPA_IMPLS, ConfigError, Problem, RunConfig
from iosim.schedule.tiling import decode_split_blocks, decode_splits

REFERENCE_ARCH = "sm_90"  # the kernels these describe are cuDNN's and FlashAttention-2's choices on Hopper
REVERSED = {"sdpa_flash": ("flash2_fwd", "flash2_fwd_split", "flash2_bwd")}  # loops that walk their blocks from the last down
SPLIT_ROWS = 64  # kBlockM of FlashAttention-2's split-KV forward (and of its num_splits heuristic's query blocks)


def split_block_n(head_dim: int) -> int:
    """K/V rows a block of FlashAttention-2's split-KV forward (``run_mha_fwd_splitkv_dispatch``: kBlockN)."""
    return 256 if head_dim <= 64 else 128 if head_dim <= 128 else 64


def flash_masking(problem: Problem, block_m: int, block_n: int) -> tuple[bool, bool, int]:
    """(causal, even, masking steps) of FlashAttention-2's instantiation for ``problem`` at ``block_m`` query rows and
    ``block_n`` keys a block: ``Is_causal``, ``Is_even_MN`` (both lengths whole blocks) and the blocks each forward
    CTA runs masked before its loop (``n_masking_steps``: where causal, as many as its rows span key blocks, one
    more where ragged; one where only ragged; none where neither)."""
    even = problem.seq_q % block_m == 0 and problem.seq_k % block_n == 0
    causal = bool(problem.causal)
    return causal, even, (-(-block_m // block_n) + (not even) if causal else int(not even))


def split_masking(problem: Problem) -> tuple[bool, bool, int]:
    """:func:`flash_masking` of the split-KV forward (64 query rows a block, :func:`split_block_n` keys)."""
    return flash_masking(problem, SPLIT_ROWS, split_block_n(problem.head_dim))


def combine_rows(head_dim: int) -> int:
    """Query rows a CTA of its combine kernel (``flash_fwd_splitkv_combine_kernel``'s kBlockM)."""
    return 4 if head_dim % 128 == 0 else 8 if head_dim % 64 == 0 else 16


def flash_splits(problem: Problem, sm_count: int | None) -> int:
    """The K/V splits libtorch's FlashAttention-2 forward runs ``problem`` with on ``sm_count`` SMs (1: none; also
    where the SMs are not known): its heuristic over the 64-row query blocks of every head."""
    if sm_count is None or problem.seq_lens is not None:
        return 1
    n_blocks = -(-problem.seq_k // split_block_n(problem.head_dim))
    ctas = problem.bh * -(-problem.seq_q // SPLIT_ROWS)
    return decode_split_blocks(n_blocks, decode_splits(ctas, sm_count, n_blocks))[1]


def check_reference(config: RunConfig, arch: str) -> None:
    """Refuse, naming the field, a configuration the reference kernels do not run as modelled."""
    impl, p = config.impl, config.problem
    if impl is None:
        return
    if f"sm_{str(arch).removeprefix('sm_')}" != REFERENCE_ARCH:
        raise ConfigError("impl", f"{impl} is modelled on {REFERENCE_ARCH} (Hopper) only, not {arch}")
    if p.seq_lens is not None or p.page_size is not None or p.window is not None:
        raise ConfigError("impl", f"{impl} is modelled for dense batches without a window or pages")
    if p.seq_q != p.seq_k:
        raise ConfigError("impl", f"{impl} is modelled with seq_q == seq_k (its decode kernels split K/V)")


def reference_config(impl: str, problem: Problem, arch: str, mode: str = "plain") -> RunConfig:
    """The configuration that models SDPA backend ``impl`` on ``problem`` on a GPU of ``arch``."""
    config = RunConfig(algo="flash2", problem=problem, mode=mode, impl=impl)
    check_reference(config, arch)
    return config


def reference_kernels(kernels: list, impl: str | None, ts=None) -> list:
    """``kernels`` of flash2's schedule as backend ``impl`` launches them (loops reversed where it does; with the
    schedule's TensorSet ``ts``, FlashAttention-2's split-KV forward where its tiling has splits,
    :func:`split_forward`, and its backward as libtorch runs it, :func:`flash_backward`)."""
    if impl == "sdpa_flash" and ts is not None:
        splits = ts.config.tiling.splits or 1
        if splits > 1:
            kernels = split_forward(kernels, ts, splits)
        if any(k.name == "flash2_bwd_pre" for k in kernels):
            kernels = flash_backward(kernels, ts)
    reversed_ = REVERSED.get(impl, ())
    return [replace(k, reverse=True) if k.name in reversed_ else k for k in kernels]


def split_forward(kernels: list, ts, splits: int) -> list:
    """flash2's forward as FlashAttention-2's split-KV kernels run it: CTA (query block i, split j) streams the
    K/V blocks [j·per, (j+1)·per) of its head (up to its diagonal where causal) and writes its rows' fp32 partial
    output and logsumexp (``Opart``: a row's d + 1 values for each split), then a combine kernel reads each row's
    partials and writes O and the logsumexp."""
    p = ts.config.problem
    d, bn, bm = p.head_dim, split_block_n(p.head_dim), SPLIT_ROWS
    per, _ = decode_split_blocks(-(-p.seq_k // bn), splits)
    fwd = next(k for k in kernels if k.name == "flash2_fwd")
    ts.add("Q", p.bh, p.seq_q, d, p.elem_bytes, bm)
    ts.add("K", p.bh_kv, p.seq_k, d, p.elem_bytes, bn)
    ts.add("V", p.bh_kv, p.seq_k, d, p.elem_bytes, bn)
    ts.add("Opart", p.bh, p.seq_q, splits * (d + 1), FP32, bm)
    split = replace(
        fwd, name="flash2_fwd_split", ti=-(-p.seq_q // bm), tj=splits, block_i=bm, block_j=d + 1, block_u=bn,
        split_blocks=per,
        patterns=(Pattern("Q", PRO, READ, "i"), Pattern("K", LOOP, READ, "u", kv=True),
                  Pattern("V", LOOP, READ, "u", kv=True), Pattern("Opart", EPI, WRITE, "i", "j")),
        iter_flops=Flops(tensor=4.0 * bm * bn * d, simt=5.0 * bm * bn + bm * d, sfu=bm * bn),
        end_flops=Flops(simt=2.0 * bm * d, sfu=bm), iter_sram=(bm + 2 * bn) * d * p.elem_bytes,
        smem_bytes=p.elem_bytes * d * (bm + 2 * bn * fwd.stages), extents=extents(ts, ("Q", "K", "V", "Opart")))
    rows = combine_rows(d)
    for name in ("O", "LSE"):  # the combine's row tiles on its outputs
        ts.add(name, *ts.specs[name][:4], rows)
    combine = Kernel(
        name="flash2_fwd_combine", slices=p.bh, ti=-(-p.seq_q // rows), tj=1, block_i=rows, block_j=1, block_u=1,
        patterns=(Pattern("Opart", PRO, READ, "i"), Pattern("O", EPI, WRITE, "i"), Pattern("LSE", EPI, WRITE, "i")),
        # per row: the splits' logsumexps' max and sum of exps, each split's scale, and d rescaled adds a split
        end_flops=Flops(simt=rows * splits * (2.0 * d + 4.0), sfu=rows * splits),
        warps=4, smem_bytes=rows * splits * FP32, regs_per_thread=64, extents=extents(ts, ("Opart", "O", "LSE")),
        # its logsumexps first, then one split's partials a pass of a loop over the splits whose count is known
        # only at run time (``combine_attn_seqk_parallel``: load, scale, accumulate, next split): each split's
        # load waits for the one before, a round trip each after the logsumexps'
        lookups=splits)
    out = []
    for k in kernels:
        out += [split, combine] if k is fwd else [k]
    return out


def flash_backward(kernels: list, ts) -> list:
    """flash2's backward as libtorch's FlashAttention-2 runs it: dO and O copied to contiguous tensors (``dOc``,
    ``Oc``: ATen's strided copy, as their (B, N, H, d) views are not) before the preprocess, which reads the
    copies, as does the main kernel, and clears the dQ accumulator itself (the fill kernel dropped, its writes the
    preprocess's)."""
    p = ts.config.problem
    renamed = {"dO": "dOc", "O": "Oc"}
    copies = []
    for src, dst in renamed.items():
        spec = ts.specs[src]
        ts.add(dst, spec[0], spec[1], spec[2], spec[3])
        copies.append(copy_kernel(f"copy_{src}", ts, (src,), (dst,), p.bh, p.seq_q, p.head_dim, aten="strided"))
    out = []
    for k in kernels:
        if k.name == "zeros_dq":
            continue
        if k.name.startswith("flash2_bwd"):
            pats = tuple(replace(pt, tensor=renamed.get(pt.tensor, pt.tensor)) for pt in k.patterns)
            if k.name == "flash2_bwd_pre":
                out += copies
                if "dQacc" in ts.specs:
                    pats += (Pattern("dQacc", EPI, WRITE, "i"),)
                    ts.add("dQacc", *ts.specs["dQacc"][:4], k.block_i)
            k = replace(k, patterns=pats, extents=extents(ts, tuple(dict.fromkeys(pt.tensor for pt in pats))))
        out.append(k)
    return out


__all__ = ["SDPA_IMPLS", "REFERENCE_ARCH", "check_reference", "reference_config", "reference_kernels"]
