"""FlashAttention (Dao et al. 2022), Algorithm 1: K/V blocks outer, Q blocks inner, O/ℓ/m in HBM.

Mirrors ``kernels/flash1.py``: ``zeros`` O (fp32), ``zeros`` ℓ, ``fill`` m = −∞ (Algorithm 1, line 2),
then ``flash1_fwd`` with one CTA per (batch, head) as in FlashAttention-1: for each K/V block j it
reads K_j, V_j once, and for every Q block i (causal: from the first block reaching the diagonal)
reads Q_i, O_i, ℓ_i, m_i and writes O_i, ℓ_i, m_i back (lines 8–13); finally ``cast`` O to the
input dtype. The backward pass reuses FlashAttention-2's kernels, as the Triton module does.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from iosim.schedule import flash2
from iosim.schedule.common import FP32, TensorSet, elementwise, extents, regs_estimate
from iosim.schedule.ir import CausalMode, Flops, Kernel, Program
from iosim.schedule.problem import RunConfig, Tiling

STATE = ("O32", "l", "m")  # per-row state re-read and re-written on every inner iteration


@dataclass(frozen=True)
class Flash1Kernel(Kernel):
    """One CTA per slice; its program is the double loop of Algorithm 1, not the generic tile loop.

    For each K/V block j (``keys``) it reads K_j, V_j once, then for every Q block i from
    :meth:`inner_start` on reads Q_i (``query``) and reads and writes back the ``state`` rows i.
    """

    program: ClassVar[Program] = Program.DOUBLE_LOOP

    seq_q: int = 0
    seq_k: int = 0
    query: str = "Q"
    keys: tuple = ("K", "V")
    state: tuple = STATE

    @property
    def tr(self) -> int:
        return -(-self.seq_q // self.block_i)

    @property
    def tc(self) -> int:
        return -(-self.seq_k // self.block_j)

    def inner_start(self, j: int) -> int:
        """The first Q block whose rows see K/V block ``j`` (causal), else 0."""
        if self.causal is CausalMode.NONE:
            return 0
        return min(self.tr, max(0, (j * self.block_j - self.causal_offset) // self.block_i))

    def pairs(self) -> int:
        return sum(self.tr - self.inner_start(j) for j in range(self.tc))

    def total_flops(self) -> Flops:
        return self.iter_flops * float(self.pairs() * self.slices)


def main_kernel(ts: TensorSet, config: RunConfig, tl: Tiling) -> Kernel:
    p = config.problem
    br, bc, d, eb = tl.block_m, tl.block_n, p.head_dim, p.elem_bytes
    ts.add("Q", p.bh, p.seq_q, d, eb, br)
    ts.add("K", p.bh_kv, p.seq_k, d, eb, bc)
    ts.add("V", p.bh_kv, p.seq_k, d, eb, bc)
    return Flash1Kernel(
        name="flash1_fwd", slices=p.bh, ti=1, tj=1, block_i=br, block_j=bc, block_u=br, patterns=(),
        loop_extent=p.seq_q,
        # per (j, i): S = Q_i K_jᵀ and P̃ V_j on tensor cores; softmax statistics and the rescale of
        # O_i (line 12) in SIMT; one exp per score and two per row.
        iter_flops=Flops(tensor=4.0 * br * bc * d, simt=5.0 * br * bc + 3.0 * br * d, sfu=br * bc + 2 * br),
        iter_sram=br * d * (eb + FP32) + 2 * bc * d * eb,
        causal=CausalMode.STOP if p.causal else CausalMode.NONE,
        causal_offset=p.causal_offset, kv_group=p.group, heads=p.heads, kv_heads=p.kv_heads,
        warps=tl.warps, stages=tl.stages, smem_bytes=eb * d * 2 * bc * tl.stages + br * d * (eb + FP32),
        regs_per_thread=regs_estimate(br * bc + br * d, 0, tl.warps),
        extents=(("Q", p.seq_q, d),) + extents(ts, ("K", "V", "O32", "l", "m")),
        seq_q=p.seq_q, seq_k=p.seq_k,
    )


def build(ts: TensorSet, config: RunConfig) -> list:
    p, tl = config.problem, config.tiling
    ts.add("O32", p.bh, p.seq_q, p.head_dim, FP32, tl.block_m)
    ts.add("l", p.bh, p.seq_q, 1, FP32, tl.block_m)
    ts.add("m", p.bh, p.seq_q, 1, FP32, tl.block_m)
    kernels = [
        elementwise("zeros_o", ts, (), ("O32",), p.bh, p.seq_q, p.head_dim, simt_per_elem=0, aten="fill"),
        elementwise("zeros_l", ts, (), ("l",), p.bh, p.seq_q, 1, simt_per_elem=0, aten="fill"),
        elementwise("fill_m", ts, (), ("m",), p.bh, p.seq_q, 1, simt_per_elem=0, aten="fill"),
        main_kernel(ts, config, tl),
    ]
    ts.add("O", p.bh, p.seq_q, p.head_dim, p.elem_bytes)
    kernels.append(elementwise("cast_o", ts, ("O32",), ("O",), p.bh, p.seq_q, p.head_dim, aten="copy"))
    if p.backward:
        # FlashAttention-2's backward needs the logsumexp L = m + log ℓ: one more elementwise kernel.
        ts.add("LSE", p.bh, p.seq_q, 1, FP32)
        kernels.append(elementwise("lse", ts, ("m", "l"), ("LSE",), p.bh, p.seq_q, 1, simt_per_elem=2))
        kernels += flash2.backward_kernels(ts, config, config.backward_tiling)
    return kernels
