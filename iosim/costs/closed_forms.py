"""Closed forms beside the simulator: the papers' HBM access counts, exact tiled counts, the roofline.

Three kinds of formula, all pure functions of the problem (no engine):
- ``paper_*``: the FlashAttention paper's counts as printed — Algorithm 0/3 (standard, 4Nd + 4N²
  forward, 8Nd + 7N² backward elements), Algorithm 1 (2Nd + T_c(2Nd + 2N) reads, T_c(Nd + 2N) + Nd +
  2N writes) and FlashAttention-2's literal Q-outer loop (Nd + 2Nd·T_r reads, Nd + N writes) —
  in bytes of the input dtype. These are what "HBM accesses" means when no cache exists.
- :func:`no_cache_bytes`: the exact bytes every kernel iosim models moves when there is no L2 —
  each CTA fetching its own tiles, ragged tiles clipped, the real dtypes of O/ℓ/m (fp32), the
  elementwise kernels around the main ones. The simulator with a zero-sized L2 must equal it.
- :func:`roofline_time`: the time no implementation can beat on a profile.
"""
from __future__ import annotations

from iosim.schedule.problem import ConfigError, RunConfig
from iosim.schedule.tiling import decode_plan_blocks, decode_split_blocks

FP32 = 4


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def paper_standard(config: RunConfig) -> dict:
    """Algorithm 0 (and 3 with backward): elements read and written, times the element size, all heads."""
    p = config.problem
    n, d = p.seq_q, p.head_dim
    reads, writes = 3 * n * d + 2 * n * n, n * d + 2 * n * n
    if p.backward:
        reads, writes = reads + 5 * n * d + 5 * n * n, writes + 3 * n * d + 2 * n * n
    k = p.bh * p.elem_bytes
    return {"read": reads * k, "write": writes * k}


def paper_flash1(config: RunConfig, block_n: int) -> dict:
    """Algorithm 1 as written, with T_c = ⌈N / B_c⌉ passes over Q, O, ℓ, m."""
    p = config.problem
    n, d, tc = p.seq_q, p.head_dim, _cdiv(p.seq_k, block_n)
    reads, writes = 2 * n * d + tc * (2 * n * d + 2 * n), tc * (n * d + 2 * n) + n * d + 2 * n
    if p.backward:  # Algorithm 4: T_c passes over Q, O, dO, dQ (read and written)
        reads, writes = reads + 2 * n * d + tc * (4 * n * d + 2 * n), writes + tc * n * d + 2 * n * d
    k = p.bh * p.elem_bytes
    return {"read": reads * k, "write": writes * k}


def paper_flash2(config: RunConfig, block_m: int, block_n: int = 128) -> dict:
    """FlashAttention-2 as written: forward reads Q once and K, V once per Q block, writes O and L once;
    backward (Algorithm 2) computes D = rowsum(dO∘O), then per K/V block re-reads Q, O, dO, dQ, L, D
    and writes dQ back, writing dK and dV once."""
    p = config.problem
    n, d, tr, tc = p.seq_q, p.head_dim, _cdiv(p.seq_q, block_m), _cdiv(p.seq_k, block_n)
    reads, writes = n * d + tr * 2 * n * d, n * d + n
    if p.backward:
        reads += 2 * n * d + 2 * n * d + tc * (4 * n * d + 2 * n)
        writes += n + tc * n * d + 2 * n * d
    return {"read": reads * p.bh * p.elem_bytes, "write": writes * p.bh * p.elem_bytes}


def paper_bytes(config: RunConfig) -> dict:
    """The paper formula that matches ``config.algo`` (with the algorithm's default tiles)."""
    config = config.resolved()
    if config.algo.startswith("standard"):
        return paper_standard(config)
    if config.algo == "flash1":
        return paper_flash1(config, config.tiling.block_n)
    bwd = config.backward_tiling or config.tiling
    return paper_flash2(config, config.tiling.block_m, bwd.block_n)


# -- exact per-kernel counts without a cache --------------------------------------------------------
def no_cache_bytes(config: RunConfig) -> dict:
    """Bytes read from and written to HBM by every kernel of ``config.algo`` when nothing is cached."""
    config = config.resolved()
    p = config.problem
    total = {"read": 0, "write": 0}

    def add(r, w):
        total["read"] += r
        total["write"] += w

    if config.algo.startswith("standard"):
        _standard(p, config.tiling, config.algo == "standard_eager", add)
    elif config.algo == "flash_decode":
        _flash_decode(p, config.tiling, add)
    elif config.algo == "flash1":
        _flash1(p, config.tiling, add)
        if p.backward:
            add(2 * p.bh * p.seq_q * FP32, p.bh * p.seq_q * FP32)  # LSE = m + log ℓ
            _flash2_bwd(p, config.backward_tiling, add, config.dq)
    else:
        _flash2_fwd(p, config.tiling, add)
        if p.backward:
            _flash2_bwd(p, config.backward_tiling, add, config.dq)
    return total


def _flash_decode(p, t, add):
    """Each split CTA reads its group's query rows and its share of K/V; with two or more splits every
    query row's fp32 partial output and logsumexp go out once per split and come back in the combine.
    Per request: its own cache length, and with a window only the blocks from the one holding the
    window's first key; splits with no block of a request do nothing."""
    if t.splits is None:
        raise ConfigError("splits", "flash_decode's counts need the splits (a schedule built for a GPU has them)")
    e, d, bn = p.elem_bytes, p.head_dim, t.block_n
    per, used = decode_split_blocks(decode_plan_blocks(p.seq_k, bn, p.window), t.splits)
    q = p.heads * p.seq_q * d * e  # one request's query rows (and its output)
    for nk in p.lengths:
        first = (max(nk - p.window, 0) if p.window else 0) // bn * bn
        mine = _cdiv(_cdiv(nk, bn) - first // bn, per)  # splits holding a block of this request
        partials = p.heads * p.seq_q * mine * (d + 1) * FP32 if used > 1 else 0
        add(mine * q + 2 * p.kv_heads * (nk - first) * d * e, partials or q)  # the split kernel
        if partials:
            add(partials, q)  # the combine


def _diagonal_stop(i: int, bm: int, bn: int, nk: int, offset: int) -> int:
    """K/V blocks of ``bn`` rows that Q block ``i`` of ``bm`` rows sees under a causal mask (row r sees keys up
    to r + ``offset``), clipped to the ``nk`` keys."""
    return min(max(0, _cdiv((i + 1) * bm + offset, bn)), _cdiv(nk, bn))


def _diagonal_start(j: int, bn: int, bm: int, nq: int, offset: int) -> int:
    """The first Q block of ``bm`` rows that sees K/V block ``j`` of ``bn`` rows under a causal mask."""
    return min(max(0, (j * bn - offset) // bm), _cdiv(nq, bm))


def _flash2_fwd(p, t, add):
    """Each Q block reads its K/V blocks (causal: up to the diagonal; a window: from the block holding
    its first row's oldest key), the last one clipped at the request's length; requests of a
    variable-length batch each have their own length."""
    bm, bn, d, e = t.block_m, t.block_n, p.head_dim, p.elem_bytes
    ragged = p.seq_lens is not None
    for nq in p.lengths if ragged else (p.seq_q,):
        nk = nq if ragged else p.seq_k
        kv_rows = 0
        for i in range(_cdiv(nq, bm)):
            stop = _diagonal_stop(i, bm, bn, nk, p.causal_offset) if p.causal else _cdiv(nk, bn)
            start = max(0, i * bm - p.window + 1) // bn if p.window else 0
            kv_rows += min(nk, stop * bn) - min(nk, start * bn)
        heads = p.heads if ragged else p.bh
        add(heads * (nq * d * e + 2 * kv_rows * d * e), heads * nq * (d * p.out_bytes + FP32))  # O: fp16 for fp8


def _flash2_bwd(p, t, add, dq: str = "atomic"):
    """FlashAttention-2's backward: each K/V block re-reads the Q rows it sees (causal: from the diagonal's
    block on) with dO, LSE and D; ``dq`` ``atomic`` adds dQ into an fp32 buffer there (read and written per
    visible row), ``separate`` recomputes it in a kernel over Q blocks that re-reads K/V as the forward does, ``fused`` in a
    second loop of the same kernel over Q blocks of the K/V block's rows (the tiles swapped)."""
    bm, bn, d, e = t.block_m, t.block_n, p.head_dim, p.elem_bytes
    nq, nk, bh = p.seq_q, p.seq_k, p.bh
    atomic = dq == "atomic"
    if atomic:
        add(0, bh * nq * d * FP32)  # zeros: dQ accumulator
    add(2 * bh * nq * d * e, bh * nq * FP32)  # D = rowsum(dO ∘ O)
    q_rows = sum(nq - min(nq, _diagonal_start(j, bn, bm, nq, p.causal_offset) * bm if p.causal else 0)
                 for j in range(_cdiv(nk, bn)))
    per_row = 2 * d * e + 2 * FP32  # Q, dO, LSE, D
    acc = d * FP32 if atomic else 0  # dQ row: read and written back by the atomic add
    kv_out = bh if p.group > 1 else p.bh_kv
    add(bh * (2 * nk * d * e + q_rows * (per_row + acc)), bh * q_rows * acc + 2 * kv_out * nk * d * e)
    if not atomic:  # dQ over Q blocks: Q, dO, LSE, D once, K/V as the forward streams them, dQ written once
        if dq == "fused":  # the K/V-outer loop's CTAs go on to Q blocks of their own rows: the tiles swapped
            bm, bn = bn, bm
        kv_rows = sum(min(nk, _diagonal_stop(i, bm, bn, nk, p.causal_offset) * bn) if p.causal else nk
                      for i in range(_cdiv(nq, bm)))
        add(bh * (nq * per_row + 2 * kv_rows * d * e), bh * nq * d * e)
    if p.group > 1:
        add(2 * bh * nk * d * e, 2 * p.bh_kv * nk * d * e)
    if atomic:
        add(bh * nq * d * FP32, bh * nq * d * e)  # cast dQ


def _flash1(p, t, add):
    br, bc, d, e = t.block_m, t.block_n, p.head_dim, p.elem_bytes
    nq, nk, bh = p.seq_q, p.seq_k, p.bh
    add(0, bh * nq * (d * FP32 + 2 * FP32))  # O = 0, ℓ = 0, m = -inf
    q_rows = sum(nq - min(nq, _diagonal_start(j, bc, br, nq, p.causal_offset) * br if p.causal else 0)
                 for j in range(_cdiv(nk, bc)))
    state = d * FP32 + 2 * FP32  # O_i, ℓ_i, m_i per row
    add(bh * (2 * nk * d * e + q_rows * (d * e + state)), bh * q_rows * state)
    add(bh * nq * d * FP32, bh * nq * d * e)  # cast O


def _standard(p, t, eager, add):
    bm, bn, d, e = t.block_m, t.block_n, p.head_dim, p.elem_bytes
    nq, nk, bh = p.seq_q, p.seq_k, p.bh
    nn = bh * nq * nk * e
    tm, tn, tk = _cdiv(nq, bm), _cdiv(nk, bn), _cdiv(nk, bm)

    def outer():  # S-shaped output from two N×d operands, one CTA per tile
        add(bh * (tn * nq * d * e + tm * nk * d * e), nn)

    outer()  # S = QKᵀ
    if eager:
        add(nn, nn)  # S * scale
        add(nn, nn)  # ATen's softmax: each row read once (held in registers, as the crossbar counters show)
    else:
        add(nn, nn)  # softmax
    add(nn + bh * tm * nk * d * e, bh * nq * d * e)  # O = PV
    if not p.backward:
        return
    kv_out = bh if p.group > 1 else p.bh_kv
    add(nn + bh * tk * nq * d * e, kv_out * nk * d * e)  # dV = PᵀdO
    outer()  # dP = dO Vᵀ
    if eager:
        add(2 * nn, nn)  # elementwise over dP and P
        add(2 * nn, nn)  # ATen softmax backward
        add(nn, nn)  # scale backward
        add(nn + bh * tk * nq * d * e, kv_out * nk * d * e)  # dK = dSᵀQ
        add(nn + bh * tm * nk * d * e, bh * nq * d * e)  # dQ = dS K
        if p.group > 1:
            add(2 * bh * nk * d * e, 2 * p.bh_kv * nk * d * e)
        return
    add(2 * nn, nn)  # dS
    add(nn + bh * tm * nk * d * e, bh * nq * d * e)  # dQ = dS K
    add(nn + bh * tk * nq * d * e, kv_out * nk * d * e)  # dK = dSᵀQ
    if p.group > 1:
        add(2 * bh * nk * d * e, 2 * p.bh_kv * nk * d * e)


# -- bounds -------------------------------------------------------------------------------------------
def compulsory_bytes(config: RunConfig) -> dict:
    """Inputs read once and outputs written once: what an unbounded cache leaves for HBM (a
    variable-length batch: each request's own rows; a decode window: only the window's keys)."""
    p = config.problem
    e = p.elem_bytes
    if p.seq_lens is not None and p.seq_q == p.seq_k:  # a prefill: each request's queries are its keys
        rows_q = sum(p.seq_lens)
    else:
        rows_q = p.batch * p.seq_q
    rows_k = sum(p.lengths)
    if p.window is not None and not p.causal:  # a decode sees the window's last keys only
        rows_k = sum(min(n, p.window) for n in p.lengths)
    q, kv = p.heads * rows_q * p.head_dim * e, p.kv_heads * rows_k * p.head_dim * e
    reads, writes = q + 2 * kv, p.heads * rows_q * p.head_dim * p.out_bytes  # O (fp16 for fp8 inputs)
    if p.backward:
        reads, writes = reads + q, writes + q + 2 * kv  # dO in; dQ, dK, dV out
    return {"read": reads, "write": writes}


def roofline_time(config: RunConfig, profile) -> float:
    """Lower bound: the convention's FLOPs at the tensor peak, or compulsory bytes at peak bandwidth."""
    b = compulsory_bytes(config)
    flops = config.problem.flops()
    dtype = config.problem.dtype
    if dtype not in profile.tensor_flops:
        raise ConfigError("dtype", f"{dtype} needs {dtype} tensor cores: the {profile.id} profile has none")
    return max(flops / profile.tensor_flops[dtype], (b["read"] + b["write"]) / profile.hbm_bandwidth)


__all__ = ["paper_standard", "paper_flash1", "paper_flash2", "paper_bytes", "no_cache_bytes", "compulsory_bytes",
           "roofline_time"]
