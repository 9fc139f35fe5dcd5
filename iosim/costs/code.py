"""Which compiled code a scheduled kernel runs: its committed SASS mix, as a :class:`KernelCode`.

iosim's own Triton kernels were compiled ahead of time per architecture and Triton version
(``python -m iosim.kernels.sass``) and their per-loop instruction mixes committed under
``iosim/costs/mixes/``; this module finds the variant a schedule kernel launches (same kernel,
dtype, warps, stages and constexprs) so the simulator never needs Triton. A user's own kernel brings
its code with it (:func:`kernel_code`). Standard attention's row kernels (``softmax``, ``ds``: a whole row in
registers) take the variant compiled for their row length; PyTorch's own passes (softmax, fills, copies, casts,
group sums) what ATen's kernels executed on the GPU (``iosim.kernels.aten_probe``).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
from importlib import resources
from types import MappingProxyType

from iosim.costs.issue import KernelCode, LoopCode, loop_code
from iosim.costs.sass import KernelMix, load_mixes
from iosim.schedule.references import flash_masking
from iosim.schedule.standard import BLOCK_K as STANDARD_BLOCK_K

REFERENCE_MIXES = "references-sm_90.json"  # SDPA's kernels' code per warp and iteration (experiments/reference_mixes.py)
KERNEL_DTYPES = {"decode_reduce": "fp32", "decode_reduce_ragged": "fp32"}  # kernels whose mix is keyed by another dtype than the problem's (fp32 partials)


def _expected(kernel, head_dim: int, tiling=None, page_size: int | None = None, problem=None) -> dict | None:
    """The constexprs our Triton kernel of that name was launched with for this schedule kernel
    (``tiling``: the schedule's resolved forward tiling, for the decode kernels' rows and splits; ``problem``:
    its row length, for standard attention's one-row-per-CTA kernels)."""
    causal = kernel.causal.value != ""
    name = kernel.name
    if name in ("softmax", "ds") and problem is not None:  # the whole row in registers: BLOCK is the row, to 2^k
        block = 1 << (problem.seq_k - 1).bit_length()
        return {"CAUSAL": problem.causal, "BLOCK": block} if name == "softmax" else {"BLOCK": block}
    if name == "decode_split":
        return {"D": head_dim, "BM": tiling.block_m, "BN": kernel.block_u, "ONE": tiling.splits == 1}
    if name == "decode_split_paged":
        return {"D": head_dim, "BM": tiling.block_m, "BN": kernel.block_u, "ONE": tiling.splits == 1,
                "PAGE": page_size}
    if name == "decode_reduce":
        return {"D": head_dim, "BS": 1 << (tiling.splits - 1).bit_length()}
    if name == "decode_split_ragged":
        return {"D": head_dim, "BM": tiling.block_m, "BN": kernel.block_u, "ONE": tiling.splits == 1,
                "PAGED": page_size is not None, "WINDOW": kernel.window > 0, "PAGE": page_size or 0}
    if name == "decode_reduce_ragged":
        return {"D": head_dim, "BS": 1 << (tiling.splits - 1).bit_length(), "BN": tiling.block_n,
                "WINDOW": kernel.window > 0}
    if name == "flash2_varlen_fwd":  # its row strides (heads·d) change addresses only: any heads' variant serves
        return {"D": head_dim, "BM": kernel.block_i, "BN": kernel.block_u, "CAUSAL": causal, "WINDOW": kernel.window > 0}
    if name == "flash2_fwd":
        return {"D": head_dim, "BM": kernel.block_i, "BN": kernel.block_u, "CAUSAL": causal,
                "HEADS_FIRST": kernel.order.value == "heads"}
    if name in ("flash2_bwd", "flash2_bwd_kv"):
        return {"D": head_dim, "BM": kernel.block_u, "BN": kernel.block_i, "CAUSAL": causal}
    if name == "flash2_bwd_q":
        return {"D": head_dim, "BM": kernel.block_i, "BN": kernel.block_u, "CAUSAL": causal}
    if name == "flash2_bwd_pre":
        return {"D": head_dim, "BM": kernel.block_i}
    if name == "flash1_fwd":
        return {"D": head_dim, "BM": kernel.block_i, "BN": kernel.block_j, "CAUSAL": causal}
    if name in ("pv", "dv", "dq", "dk"):
        return {"D": head_dim, "BM": kernel.block_i, "BK": kernel.block_u}
    if name in ("qk", "dp"):  # no loop in the schedule (the one over d stays inside the CTA), its resources
        return {"D": head_dim, "BM": kernel.block_i, "BN": kernel.block_j, "BK": min(STANDARD_BLOCK_K, head_dim)}
    return None


def _constexprs(key: str) -> dict:
    out = {}
    for part in key.split("|")[-1].split(","):
        if "=" in part:
            k, v = part.split("=", 1)
            out[k] = {"True": True, "False": False}.get(v, int(v) if v.lstrip("-").isdigit() else v)
    return out


@functools.lru_cache(maxsize=8)
def _index(arch: str, triton_version: str | None) -> tuple[dict, str]:
    try:
        found = load_mixes(arch, triton_version)
    except FileNotFoundError:
        return {}, ""
    index: dict = {}
    for mix in found.mixes:
        name, dtype, warps, stages = mix.key.split("|")[:4]
        index.setdefault((name, dtype, int(warps[1:]), int(stages[1:])), []).append(mix)
    return index, found.version


def compiled_codes(schedule, arch: str, triton_version: str | None = None) -> list:
    """A :class:`KernelCode` per kernel of ``schedule`` from the committed mixes (None where not found)."""
    index, version = _index(str(arch).removeprefix("sm_"), triton_version)
    problem = schedule.config.problem
    out = []
    for kernel in schedule.kernels:
        if schedule.config.algo == "standard_eager" and kernel.name in ("softmax", "softmax_bwd"):  # PyTorch's own
            out.append(aten_softmax_code(problem.seq_k, kernel.warps, arch, backward=kernel.name == "softmax_bwd"))
            continue
        want = _expected(kernel, problem.head_dim, schedule.config.tiling, problem.page_size, problem)
        dtype = KERNEL_DTYPES.get(kernel.name, problem.dtype)
        mixes = index.get((kernel.name, dtype, kernel.warps, kernel.stages), []) if want else []
        mix = next((m for m in mixes if all(_constexprs(m.key).get(k, v) == v for k, v in want.items())), None)
        code = None if mix is None else kernel_code(mix, f"sass: sm_{arch.removeprefix('sm_')}, triton {version}")
        if code is not None and kernel.name in ("qk", "dp") and code.loop.instructions:
            # the loop over d stays inside the CTA (the schedule has none): each CTA runs it d / BK times
            trips = -(-want["D"] // want["BK"])
            code = dataclasses.replace(code, outside=code.outside.plus(code.loop.scaled(trips)))
        out.append(code)
    return out


@functools.lru_cache(maxsize=4)
def _aten_table(arch: str) -> dict | None:
    try:
        return json.loads(resources.files("iosim.costs.mixes").joinpath(f"aten-sm_{arch}.json").read_text())
    except FileNotFoundError:
        return None


def _aten_softmax_variant(n: int, backward: bool = False) -> str:
    """Which of ATen's softmax kernels a row of ``n`` fp16 elements runs (aten/src/ATen/native/cuda/SoftMax.cu):
    forward, one warp a row up to 2048, then a 1024-thread block holding ceil(n / 1024) elements a thread in
    registers while that is under 10, else in shared memory; backward, one warp a row up to 1024, then a block
    holding the row in shared memory (the probe: softmax_warp_backward at 768, cunn_SoftMaxBackwardSmem from
    1536 to 12288)."""
    if backward:
        return "softmax_warp_backward" if n <= 1024 else "cunn_SoftMaxBackwardSmem"
    if n <= 2048:
        return "softmax_warp_forward"
    return "cunn_SoftMaxForwardReg" if -(-n // 1024) < 10 else "cunn_SoftMaxForwardSmem"


def aten_softmax_code(n: int, warps: int, arch: str, backward: bool = False) -> KernelCode | None:
    """PyTorch's softmax (``backward``: its backward, dS' from dP and P) of one row of ``n`` elements as a CTA of
    ``warps`` warps: the warp instructions per element its kernel for that length executed in
    ``iosim.kernels.aten_probe`` (between the probed lengths of the same kernel, interpolated in log n), None
    where the architecture or the pass was not probed."""
    table = _aten_table(str(arch).removeprefix("sm_"))
    section = "softmax_backward" if backward else "softmax_forward"
    if table is None or section not in table:
        return None
    variant = _aten_softmax_variant(n, backward)
    probed = sorted((int(k), v) for k, v in table[section].items() if variant in v["kernel"])
    if not probed:
        return None
    lo = max((p for p in probed if p[0] <= n), default=probed[0], key=lambda p: p[0])
    hi = min((p for p in probed if p[0] >= n), default=probed[-1], key=lambda p: p[0])
    w = 0.0 if hi[0] == lo[0] else (math.log(n) - math.log(lo[0])) / (math.log(hi[0]) - math.log(lo[0]))
    per_warp = n / warps  # elements each warp of the row's CTA handles

    def blend(a: float, b: float) -> float:
        return ((1 - w) * a + w * b) * per_warp

    pipes = {p: blend(v, hi[1]["pipes_per_element"].get(p, 0.0)) for p, v in lo[1]["pipes_per_element"].items()}
    total = blend(lo[1]["inst_per_element"], hi[1]["inst_per_element"])
    return KernelCode(loop=LoopCode(0.0), outside=LoopCode(total, MappingProxyType(pipes)),
                      source=f"ncu: ATen {variant}, {table['arch']}, torch {table['torch']}")


ELEMENT_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
GENERATED = ("fill", "normal", "uniform")  # ATen kernels that read nothing: their elements are made, not copied


def aten_code(kind: str, src_bytes: int, dst_bytes: int, group: float, elements: float, warps: int,
              arch: str) -> KernelCode | None:
    """A PyTorch pass of ATen kernel ``kind`` (:attr:`iosim.schedule.ir.Kernel.aten`: fill, normal, uniform, copy,
    strided, broadcast, sum, other) as a CTA of ``warps`` warps writing ``elements`` elements of ``dst_bytes`` bytes from
    ``src_bytes``-byte ones (a sum: ``group`` read per element written): the warp instructions per element its
    kernel executed in ``iosim.kernels.aten_probe``, the probed operation nearest in element sizes (a sum's
    per element written piecewise linear in its group, through the probed groups of 1 to 16). A contiguous copy of equal
    element sizes is a device-to-device memcpy, no kernel's instructions (the probe's clone launched none).
    Random numbers where no distribution kernel was probed take a fill's code. None where the architecture or kind
    was not probed."""
    table = _aten_table(str(arch).removeprefix("sm_"))
    if table is None or not kind or "elementwise" not in table:
        return None
    if kind == "copy" and src_bytes == dst_bytes:
        return KernelCode(loop=LoopCode(0.0), outside=LoopCode(0.0), source=f"ncu: ATen memcpy, {table['arch']}")
    found = [e for e in table["elementwise"].values() if e["kind"] == kind]
    if not found and kind in GENERATED:  # random numbers, where no distribution kernel was probed: a fill's code
        kind = "fill"
        found = [e for e in table["elementwise"].values() if e["kind"] == kind]
    if not found:
        return None

    def distance(e):  # both element sizes (a cast's direction decides its kernel), then the one read
        a, b = (ELEMENT_BYTES.get(t, 0) for t in e["dtypes"])
        return ((a != src_bytes) + (b != dst_bytes), a != src_bytes) if kind not in GENERATED else (b != dst_bytes, 0)

    best = min(distance(e) for e in found)
    near = [e for e in found if distance(e) == best]
    entry = min(near, key=lambda e: (abs(e["group"] - group), e["group"]))  # its pipes' shares (a sum's nearest group)
    per_element = entry["inst_per_element"]
    if kind == "sum":  # per element written: piecewise linear in the group through the probed ones of the nearest sizes
        per_element = max(0.0, _through(sorted({(e["group"], e["inst_per_element"]) for e in near}), group))
    scale = per_element / entry["inst_per_element"] if entry["inst_per_element"] else 0.0
    per_warp = elements / warps
    pipes = MappingProxyType({p: v * scale * per_warp for p, v in entry["pipes_per_element"].items()})
    return KernelCode(loop=LoopCode(0.0), outside=LoopCode(per_element * per_warp, pipes),
                      source=f"ncu: ATen {entry['kernel'].split('<')[0].split()[-1]}, {table['arch']}, torch {table['torch']}",
                      store_bytes=_store_bytes(table, kind, distance, group))


def _store_bytes(table: dict, kind: str, distance, group: float) -> float:
    """Crossbar bytes a store of ATen kernel ``kind`` moves per byte of output, by the probed operation of the
    nearest element sizes (a sum's piecewise linear in its group, as its instructions); 1 where not counted."""
    found = [e for e in (table.get("elementwise_stores") or {}).values() if e["kind"] == kind]
    if not found:
        return 1.0
    best = min(distance(e) for e in found)
    near = sorted({(e["group"], e["store_bytes"]) for e in found if distance(e) == best})
    return max(1.0, _through(near, group)) if kind == "sum" else near[0][1]


def _through(points: list, x: float) -> float:
    """Piecewise-linear through sorted ``(x, y)`` points, each end segment extended beyond it (one point: flat)."""
    merged: dict = {}
    for px, py in points:  # one point per x: the mean of those given there
        merged.setdefault(px, []).append(py)
    points = sorted((px, sum(ys) / len(ys)) for px, ys in merged.items())
    if len(points) == 1:
        return points[0][1]
    segment = next(((a, b) for a, b in zip(points, points[1:]) if x <= b[0]), (points[-2], points[-1]))
    (x0, y0), (x1, y1) = segment
    return y0 + (y1 - y0) * (x - x0) / (x1 - x0)


def masked_passes(bodies: list) -> float:
    """Passes of the masked loop body (the last of ``bodies``, :meth:`KernelMix.loop_bodies`) per block of the
    unmasked one (the first): the ratio of their products per pass where both recorded them, so a masked copy
    over half tiles runs two passes a block; 1 otherwise."""
    if len(bodies) < 2:
        return 1.0
    plain, masked = bodies[0].tensor_flops, bodies[-1].tensor_flops
    return plain / masked if plain and masked and plain > masked else 1.0


def kernel_code(mix: KernelMix, source: str) -> KernelCode:
    """A compiled kernel's cost description: its innermost loop (the unmasked one, and the masked one
    where the compiler emitted two loops one after the other), code outside loops, resources."""
    ordered = mix.loop_bodies()
    outside = loop_code(mix.outside)
    if not ordered:
        return KernelCode(loop=LoopCode(0.0), outside=outside, regs_per_thread=mix.n_regs,
                          shared_bytes=mix.shared_bytes, spill_bytes=mix.n_spill_bytes, local_bytes=mix.local_bytes,
                          source=source)
    masked = loop_code(ordered[-1]) if len(ordered) > 1 else None
    enclosing, counter = LoopCode(0.0), False
    for body in mix.loops:  # the loops around the tile loop: their own code, one pass each
        if not body.innermost and body.depth < ordered[0].depth:
            enclosing = enclosing.plus(loop_code(body))
            counter = counter or any(op in ("ATOM", "ATOMG", "RED", "REDG") for op in body.opcodes)  # global memory's
    return KernelCode(loop=loop_code(ordered[0]), masked=masked, masked_passes=masked_passes(ordered),
                      outside=outside, enclosing=enclosing, tile_counter=counter, pass_flops=ordered[0].tensor_flops,
                      regs_per_thread=mix.n_regs,
                      shared_bytes=mix.shared_bytes, spill_bytes=mix.n_spill_bytes, local_bytes=mix.local_bytes,
                      source=source, tma=any(body.opcode("UTMALDG") for body in ordered),
                      wgmma=any(body.opcode("HGMMA") for body in (*mix.loops, mix.outside)))


@functools.lru_cache(maxsize=2)
def _references() -> tuple[dict, str]:
    """({(impl, schedule kernel, head dim[, causal, even]): entry}, the architecture they were read on): an entry
    read from one instantiation of a kernel (``variant``: FlashAttention-2's kernels causal, or with ragged lengths)
    keyed by it too."""
    data = json.loads(resources.files("iosim.costs.mixes").joinpath(REFERENCE_MIXES).read_text())
    table = {}
    for e in data["kernels"]:
        v = e.get("variant")
        table[(e["impl"], e["kernel"], e["head_dim"]) + ((v["causal"], v["even"]) if v else ())] = e
    return table, data["arch"]


def reference_codes(schedule, impl: str) -> list:
    """A :class:`KernelCode` per kernel of ``schedule`` (an SDPA backend's, see
    :mod:`iosim.schedule.references`) from what its kernels executed on the GPU: the committed
    per-warp, per-iteration mix of the matching cuDNN or FlashAttention-2 kernel for the loop kernels
    (prologue and epilogue spread over the iterations of the launch they were read from), the instantiation the
    problem runs where one was read (:func:`~iosim.schedule.references.flash_masking`: its masked blocks priced
    apart), None for the elementwise ones (estimated from their FLOPs, like ours)."""
    table, arch = _references()
    problem = schedule.config.problem
    head_dim = problem.head_dim
    out = []
    for kernel in schedule.kernels:
        causal, even, _ = flash_masking(problem, kernel.block_i, kernel.block_u)
        e = table.get((impl, kernel.name, head_dim, causal, even)) or table.get((impl, kernel.name, head_dim))
        if e is None:
            out.append(None)
            continue
        loop = LoopCode(e["instructions"], MappingProxyType(dict(e["pipes"])), e["local_loads"], e["local_stores"])
        outside = LoopCode(e.get("outside_instructions", 0.0), MappingProxyType(dict(e.get("outside_pipes", {}))))
        # an instantiation's masked blocks: the loop's code and what its masking steps add (see reference_mixes.py)
        masked = None
        if "masked_extra_instructions" in e:
            masked = loop.plus(LoopCode(e["masked_extra_instructions"], MappingProxyType(dict(e["masked_extra_pipes"]))))
        launch = e["launch"]
        shape = f"B{launch['batch']}×H{launch['heads']}, N {launch['seq']}, d {head_dim}"
        if e.get("variant"):
            shape += ", causal" if e["variant"]["causal"] else ", ragged"
        out.append(KernelCode(loop=loop, outside=outside, masked=masked, masked_steps=e.get("masked_steps", 0),
                              regs_per_thread=e["registers"], shared_bytes=e["shared_bytes"],
                              source=f"ncu source page: {e['name'][:60]} ({shape}), {arch}",
                              tma=e["tma"], specialised=e["specialised"]))
    return out


__all__ = ["aten_softmax_code", "compiled_codes", "kernel_code", "reference_codes"]
