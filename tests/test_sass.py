"""SASS instruction mixes: parsing, loop detection, pipe classification, committed data and one real sm_90 compile.

The fixtures under tests/data/sass_* are real compiles (Triton 3.9.0, sm_90a) of the tiny kernels quoted
in their headers. The checks compare against facts that do not come from the parser: each loaded element
takes one exp2 (one MUFU.EX2), a wgmma m64nNk16 covers 16 of K, and a K/V tile of BN·d fp16 moves in
16-byte cp.async (LDGSTS) chunks spread over every thread.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from iosim.costs.sass import (
    Instruction,
    KernelMix,
    LoopMix,
    access_bytes,
    available_versions,
    find_mix,
    kernel_mix,
    l1_cached,
    load_mixes,
    loop_ranges,
    mix_key,
    mma_flops,
    opcode_of,
    parse_functions,
    pipe_of,
    shared_bytes,
)

DATA = Path(__file__).parent / "data"
TWO_LOOPS = (DATA / "sass_two_loops.cuobjdump.sass").read_text()
NESTED = (DATA / "sass_nested.nvdisasm.sass").read_text()


def _count(text: str, pattern: str, lo: int, hi: int) -> int:
    """Instructions matching ``pattern`` at byte addresses [lo, hi], straight from the text."""
    found = re.findall(r"/\*([0-9a-f]{4,})\*/\s+([^;]*);", text)
    return sum(lo <= int(a, 16) <= hi and re.search(pattern, t) is not None for a, t in found)


# ---------------------------------------------------------------------------------------------
# Opcodes and pipes
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, opcode", [
    ("@P0 FFMA.FTZ R1, R2, R3, R4", "FFMA"), ("@!PT LDS.128 R4, [R2]", "LDS"),
    ("HGMMA.64x64x16.F32 R24, gdesc[UR4], R24", "HGMMA"), ("@!UP0 UIADD3 UR4, UR4, 0x1, URZ", "UIADD3"),
    ("MUFU.EX2 R5, R6", "MUFU"), ("BRA `(.L_x_3)", "BRA"),
])
def test_opcode_drops_predicate_and_modifiers(text, opcode):
    assert opcode_of(text) == opcode


@pytest.mark.parametrize("opcode, pipe", [
    ("HGMMA", "tensor"), ("HMMA", "tensor"), ("FFMA", "fma"), ("FMUL", "fma"), ("IMAD", "fma"),
    ("FMNMX", "alu"), ("ISETP", "alu"), ("LOP3", "alu"), ("MUFU", "xu"), ("I2F", "xu"),
    ("LDGSTS", "lsu"), ("LDSM", "lsu"), ("STG", "lsu"), ("ATOM", "lsu"), ("RED", "lsu"),
    ("UIADD3", "uniform"), ("ULDC", "uniform"), ("BRA", "cbu"), ("BAR", "cbu"), ("HADD2", "fp16"),
    ("DFMA", "fp64"), ("NOTANOPCODE", "other"),
])
def test_pipe_table(opcode, pipe):
    # The roles the Nsight Compute profiling guide gives each pipe (see the table's comment).
    assert pipe_of(opcode) == pipe


# ---------------------------------------------------------------------------------------------
# Loops
# ---------------------------------------------------------------------------------------------
def test_two_sequential_loops_unmasked_then_masked():
    mix = kernel_mix(TWO_LOOPS)
    assert mix.kernel == "two_loops"
    first, second = mix.loops
    assert first.depth == second.depth == 1 and first.innermost and second.innermost
    assert first.end < second.start  # sequential, in code order
    for loop in (first, second):
        # One exp2 per loaded element, however often ptxas unrolled the body.
        assert loop.opcode("MUFU") == loop.opcode("LDG") == _count(TWO_LOOPS, r"MUFU\.EX2", loop.start, loop.end) > 0
        assert loop.pipe("xu") == loop.opcode("MUFU")
        assert _count(TWO_LOOPS, r"BRA", loop.start, loop.end) >= 1
    assert second.pipe("alu") > first.pipe("alu")  # the mask's compares
    assert mix.outside.opcode("STG") == 1 and mix.outside.opcode("EXIT") >= 1


def test_counts_cover_every_executable_instruction_once():
    mix = kernel_mix(TWO_LOOPS)
    lines = re.findall(r"/\*([0-9a-f]{4,})\*/\s+([^;]*);", TWO_LOOPS)
    while lines[-1][1].strip() == "NOP":  # padding after the final self-branch
        lines.pop()
    assert lines[-1][1].strip() == f"BRA 0x{int(lines[-1][0], 16):x}"
    total = mix.outside.instructions + sum(loop.instructions for loop in mix.loops)
    assert total == len(lines) - 1
    assert sum(mix.outside.pipes.values()) == mix.outside.instructions


def test_nested_loops_report_depth():
    mix = kernel_mix(NESTED)  # nvdisasm format: branch targets are labels
    inner = [loop for loop in mix.loops if loop.depth == 2]
    assert len(inner) == 1 and inner[0].innermost
    outer = [loop for loop in mix.loops if loop.depth == 1 and loop.start <= inner[0].start and inner[0].end <= loop.end]
    assert len(outer) == 1 and not outer[0].innermost
    # The inner loop: one exp2 per load. The sqrt between inner passes is the outer loop's own work.
    assert inner[0].opcode("MUFU") == inner[0].opcode("LDG") == _count(NESTED, r"MUFU\.EX2", inner[0].start, inner[0].end)
    assert _count(NESTED, r"MUFU\.SQRT", inner[0].start, inner[0].end) == 0
    assert _count(NESTED, r"MUFU\.SQRT", outer[0].start, outer[0].end) >= 1
    assert outer[0].instructions == (_count(NESTED, r".", outer[0].start, outer[0].end) - inner[0].instructions)


def test_back_branches_to_one_target_form_one_loop():
    text = "\n".join(["Function : k", "/*0000*/ MOV R0, RZ ;", "/*0010*/ FADD R1, R1, 1 ;", "/*0020*/ @P0 BRA 0x10 ;",
                      "/*0030*/ FMUL R1, R1, R1 ;", "/*0040*/ @P1 BRA 0x10 ;", "/*0050*/ EXIT ;",
                      "/*0060*/ BRA 0x60 ;", "/*0070*/ NOP ;"])
    insns = parse_functions(text)["k"]
    assert loop_ranges(insns) == [(1, 4)]
    mix = kernel_mix(text)
    assert [loop.instructions for loop in mix.loops] == [4]
    assert mix.outside.opcodes == {"EXIT": 1, "MOV": 1}


def test_out_of_line_waits_after_the_last_exit_close_no_loop():
    """A TMA kernel's mbarrier waits: the body branches forward to a retry loop placed after the last EXIT,
    which branches back into the body. Neither that loop nor the jump back is a loop of the kernel: the
    body's own loop stays its innermost (found by hand in hopper_fwd's SASS, Triton 3.6 and 3.9)."""
    text = "\n".join(["Function : k", "/*0000*/ MOV R0, RZ ;",
                      "/*0010*/ SYNCS.PHASECHK.TRANS64.TRYWAIT P0, [UR4], R5 ;", "/*0020*/ @!P0 BRA 0x90 ;",
                      "/*0030*/ HGMMA.64x128x16.F32 R24, gdesc[UR12], R24 ;", "/*0040*/ FADD R1, R1, 1 ;",
                      "/*0050*/ @P1 BRA 0x10 ;", "/*0060*/ @!P2 EXIT ;", "/*0070*/ STG.E [R2], R1 ;",
                      "/*0080*/ EXIT ;",
                      "/*0090*/ SYNCS.PHASECHK.TRANS64.TRYWAIT P0, [UR4], R5 ;", "/*00a0*/ @!P0 BRA 0x90 ;",
                      "/*00b0*/ BRA 0x30 ;", "/*00c0*/ BRA 0xc0 ;"])
    insns = parse_functions(text)["k"]
    assert loop_ranges(insns) == [(1, 5)]
    mix = kernel_mix(text)
    assert [(loop.instructions, loop.depth, loop.innermost) for loop in mix.loops] == [(5, 1, True)]
    assert [body.instructions for body in mix.loop_bodies()] == [5]


def test_json_round_trip():
    mix = kernel_mix(NESTED, key="nested|fp16|w4|s3|BLOCK=128", n_regs=20, shared_bytes=0)
    again = KernelMix.from_dict(json.loads(json.dumps(mix.to_dict())))
    assert again == mix
    assert LoopMix.from_dict(json.loads(json.dumps(mix.loops[0].to_dict()))) == mix.loops[0]


@pytest.mark.parametrize("text, nbytes", [
    ("LDS R4, [R2]", 128), ("LDS.U16 R4, [R2]", 64), ("LDS.64 R4, [R2]", 256), ("LDS.U.128 R4, [R2+0x10]", 512),
    ("@P1 STS [R32+0x3800], R51", 128), ("STS.128 [R16+UR7+0x3000], R4", 512),
    ("LDSM.16.M88.4 R24, [R39+UR7+0x3000]", 512), ("LDSM.16.MT88.2 R20, [R20]", 256), ("STSM.16.M88.2 [R30], R24", 256),
    ("LDGSTS.E.BYPASS.LTC128B.128 [R45], desc[UR14][R10.64], P0", 512), ("SHFL.BFLY PT, R11, R8, 0x2, 0x1f", 128),
    ("@!PT LDS RZ, [RZ]", 0), ("LDG.E.128 R4, desc[UR4][R2.64]", 0), ("HGMMA.64x64x16.F32 R24, gdesc[UR4], R24", 0),
])
def test_shared_bytes_per_warp_instruction(text, nbytes):
    """32 threads x the element width the modifier names (4 bytes unless named); 128 bytes per 8x8 matrix of
    16-bit values for ldmatrix/stmatrix; nothing for global loads, wgmma operands or never-executed padding."""
    assert shared_bytes(Instruction(0, opcode_of(text), text)) == nbytes


@pytest.mark.parametrize("text, nbytes", [
    ("LDL R4, [R1+0x10]", 4), ("LDL.LU R4, [R1+0x10]", 4), ("LDL.LU.64 R4, [R1+0x18]", 8),
    ("LDL.128 R8, [R1+0x20]", 16), ("@P0 STL.64 [R1+0x8], R6", 8), ("STL [R1], R3", 4), ("STL.U8 [R1+0x3], R3", 1),
    ("@!PT LDL R0, [R1]", 0), ("LDGSTS.E.BYPASS.LTC128B.128 [R9+0x4000], desc[UR6][R2.64]", 16),
    ("@P1 LDG.E.U16 R5, desc[UR4][R2.64]", 2), ("LDG.E.64.CONSTANT R4, desc[UR4][R6.64]", 8),
])
def test_access_bytes_per_thread(text, nbytes):
    """A spill, a global load or an async copy moves the width its modifier names per thread (PTX
    ld/st/cp.async .b32/.b64/.b128): a 4-byte word unless named; never-executed padding moves nothing."""
    assert access_bytes(Instruction(0, opcode_of(text), text)) == nbytes


@pytest.mark.parametrize("text, cached", [
    ("LDG.E.128 R4, desc[UR4][R2.64]", True), ("@P0 LDG.E R9, desc[UR6][R4.64]", True),
    ("LDG.E.64.CONSTANT R4, desc[UR4][R6.64]", True), ("LDG.E.128.STRONG.GPU R8, desc[UR4][R2.64]", False),
    ("LDG.E.STRONG.SYS R3, desc[UR4][R2.64]", False), ("LDGSTS.E.BYPASS.LTC128B.128 [R9+0x4000], desc[UR6][R2.64]", False),
    ("LDGSTS.E.LTC128B.64 [R9], desc[UR6][R2.64]", True), ("UTMALDG.2D [UR8], [UR4]", False),
    ("STG.E.128 desc[UR4][R2.64], R4", False),
])
def test_which_global_loads_allocate_in_l1(text, cached):
    """PTX's cache operators as sm_90 SASS spells them: ``ld.global`` (.ca) and ``.nc`` allocate in L1, ``.cg``
    (``.STRONG.GPU``) and volatile (``.STRONG.SYS``) go to the L2 alone, ``cp.async.cg`` is ``.BYPASS``; TMA loads
    and stores are not loads through L1."""
    assert l1_cached(Instruction(0, opcode_of(text), text)) is cached


def test_a_loops_l1_loads_are_its_cached_global_loads():
    """A pass of FlagAttention's backward loop loads its tiles with plain LDG (cached in L1), its forward with
    LDG.STRONG.GPU (its ``.cg`` loads): the mix records the bytes of each kind."""
    insns = [Instruction(16 * i, opcode_of(t), t) for i, t in enumerate([
        "LDG.E.128 R4, desc[UR4][R2.64]", "LDG.E R9, desc[UR6][R4.64]", "LDG.E.128.STRONG.GPU R8, desc[UR4][R6.64]",
        "LDGSTS.E.BYPASS.LTC128B.128 [R9], desc[UR6][R2.64]", "STG.E.128 desc[UR4][R2.64], R4"])]
    mix = LoopMix.of(insns)
    assert (mix.global_load_bytes, mix.l1_load_bytes, mix.global_store_bytes) == (16 + 4 + 16 + 16, 16 + 4, 16)
    assert LoopMix.from_dict(json.loads(json.dumps(mix.to_dict()))).l1_load_bytes == 20
    from dataclasses import replace
    assert "l1_load_bytes" not in replace(mix, l1_load_bytes=None).to_dict()  # a mix from before: unknown


@pytest.mark.parametrize("text, flops", [
    ("HGMMA.64x128x16.F32 R24, gdesc[UR4], R24, gsb0", 2 * 64 * 128 * 16 / 4),  # a warpgroup's product, 4 warps
    ("HGMMA.64x16x16.F32 R24, gdesc[UR8], RZ, !UPT", 2 * 64 * 16 * 16 / 4),
    ("QGMMA.64x64x32.F32.E4M3.E4M3 R24, gdesc[UR4], R24", 2 * 64 * 64 * 32 / 4),
    ("HMMA.16816.F32 R4, R8, R12, R4", 2 * 16 * 8 * 16), ("HMMA.1688.F32 R4, R8, R12, R4", 2 * 16 * 8 * 8),
    ("FFMA R1, R2, R3, R4", 0), ("@!PT HGMMA.64x64x16.F32 R24, gdesc[UR4], R24", 0),
])
def test_mma_flops_by_shape(text, flops):
    """M·N·K of the instruction's shape, twice (a multiply and an add); wgmma's is the warpgroup's, one
    quarter per issuing warp; mma.sync's (HMMA.16816: m16n8k16) one warp's."""
    assert mma_flops(Instruction(0, opcode_of(text), text)) == flops


def test_masked_copy_over_half_tiles_is_the_masked_body():
    """The Triton tutorial's backward steps the causal diagonal in half tiles: its masked loop comes first and
    issues fewer instructions than the unmasked one, so fewest-instructions would swap them. The unmasked body
    is the one doing the most tensor-core work a pass; the masked one runs as many passes a block as its
    products are smaller."""
    from iosim.costs.code import kernel_code

    half = LoopMix(opcodes={"HGMMA": 8, "FSEL": 40}, pipes={"tensor": 8, "alu": 40}, instructions=300, depth=1,
                   tensor_flops=8 * 2 * 64 * 16 * 16 / 4)
    whole = LoopMix(opcodes={"HGMMA": 8}, pipes={"tensor": 8}, instructions=340, depth=1,
                    tensor_flops=8 * 2 * 64 * 32 * 16 / 4)
    mix = KernelMix(kernel="bwd", loops=(half, whole))
    assert mix.loop_bodies() == [whole, half]
    code = kernel_code(mix, "test")
    assert code.loop.instructions == 340 and code.masked.instructions == 300 and code.masked_passes == 2.0
    # the same tile in both (a forward's masked copy): the one with fewer instructions is the unmasked one
    same = LoopMix(opcodes={"HGMMA": 8, "FSEL": 40}, pipes={"tensor": 8}, instructions=400, depth=1,
                   tensor_flops=whole.tensor_flops)
    assert kernel_code(KernelMix(kernel="fwd", loops=(same, whole)), "test").masked_passes == 1.0
    assert KernelMix(kernel="fwd", loops=(same, whole)).loop_bodies() == [whole, same]


def test_spill_words_follow_widths():
    """A loop's spills in 4-byte words per thread: a 64-bit reload is two words."""
    from iosim.costs.issue import loop_code

    loop = LoopMix(opcodes={"LDL": 3, "STL": 2}, instructions=5, local_load_bytes=4 + 8 + 16, local_store_bytes=8 + 4)
    code = loop_code(loop)
    assert (code.local_loads, code.local_stores) == (7.0, 3.0)
    legacy = loop_code(LoopMix(opcodes={"LDL": 3, "STL": 2}, instructions=5))  # a mix written before widths
    assert (legacy.local_loads, legacy.local_stores) == (3.0, 2.0)


# ---------------------------------------------------------------------------------------------
# Committed data
# ---------------------------------------------------------------------------------------------
def flash2_fwd_key(d: int, warps: int, causal: bool = False, dtype: str = "fp16") -> str:
    consts = dict(CAUSAL=causal, HEADS_FIRST=False, D=d, BM=128, BN=64)
    return mix_key("flash2_fwd", dtype, warps, 2, consts)


@pytest.mark.parametrize("d, warps", [(64, 4), (128, 8)])
def test_committed_flash2_forward_mix(d, warps):
    mix, version = find_mix("flash2_fwd", flash2_fwd_key(d, warps), arch=90, triton_version="3.9.0")
    assert version == "3.9.0"
    loops = mix.innermost()
    assert len(loops) == 2  # _fwd_blocks twice: full blocks, then the masked ones
    bm, bn, threads = 128, 64, 32 * warps
    for loop in loops:
        # wgmma m64nNk16: each warpgroup (4 warps) owns 64·(BM/64)/(warps/4) rows, one HGMMA per 16 of K:
        # S = Q Kᵀ has K = d, O += P V has K = BN.
        rows_per_warpgroup = bm // (warps // 4)
        assert loop.opcode("HGMMA") == rows_per_warpgroup // 64 * (d // 16 + bn // 16)
        assert loop.opcode("LDGSTS") == 2 * bn * d * 2 // 16 // threads  # K and V tiles, 16 B per cp.async
        assert loop.opcode("MUFU") >= bm * bn // threads  # one exp2 per score element
    assert loops[1].instructions > loops[0].instructions  # the masked loop does more


def test_load_mixes_falls_back_to_nearest_version():
    versions = available_versions(90)
    assert "3.9.0" in versions
    assert load_mixes(90, "0.0.1").version == versions[0]  # older than any committed: the oldest
    newest = load_mixes(90, "99.0.0")
    assert newest.requested == "99.0.0" and newest.version == versions[-1]
    assert newest.mixes and all(m.meta["arch"] == "sm_90" for m in newest.mixes)
    with pytest.raises(KeyError, match="no mix"):
        newest.find("flash2_fwd", "no such key")


# ---------------------------------------------------------------------------------------------
# One real compile
# ---------------------------------------------------------------------------------------------
DOT_LOOP = textwrap.dedent('''
    import json, sys
    import torch
    import triton
    import triton.language as tl
    from iosim.kernels.sass import capture_launches, compile_sass

    @triton.jit
    def dot_loop(A, B, C, K, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
        rm, rn, rk = tl.arange(0, BM), tl.arange(0, BN), tl.arange(0, BK)
        a_ptrs = A + rm[:, None] * K + rk[None, :]
        b_ptrs = B + rk[:, None] * BN + rn[None, :]
        acc = tl.zeros((BM, BN), dtype=tl.float32)
        for _ in range(0, K, BK):
            acc = tl.dot(tl.load(a_ptrs), tl.load(b_ptrs), acc)
            a_ptrs += BK
            b_ptrs += BK * BN
        tl.store(C + rm[:, None] * BN + rn[None, :], tl.exp2(acc))

    a, b, c = torch.empty(64 * 256, dtype=torch.float16), torch.empty(256 * 64, dtype=torch.float16), torch.empty(64 * 64)
    def launcher():
        for bk in (32, 64):
            dot_loop[(1,)](a, b, c, 256, BM=64, BN=64, BK=bk, num_warps=4, num_stages=1)
        dot_loop[(1,)](a, b, c, 256, BM=16, BN=16, BK=32, num_warps=1, num_stages=1)  # mma.sync, ldmatrix
    _, launches = capture_launches(launcher)
    json.dump([compile_sass(launch).to_dict() for launch in launches], sys.stdout)
''')


@pytest.mark.sass
def test_compile_tiny_kernel_for_sm90(tmp_path):
    script = tmp_path / "dot_loop.py"
    script.write_text(DOT_LOOP)
    env = {**os.environ, "TRITON_INTERPRET": "0", "TRITON_CACHE_DIR": str(tmp_path / "cache")}
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    bk32, bk64, small = (KernelMix.from_dict(d) for d in json.loads(run.stdout))
    for mix, bk in ((bk32, 32), (bk64, 64)):
        (loop,) = mix.innermost()
        # One warpgroup, 64 × 64 tile: one wgmma m64n64k16 per 16 of K, which reads a 64 × 16 tile of A
        # and a 16 × 64 tile of B (fp16): 4 KiB over 128 threads, two 16-byte loads each. ptxas may
        # unroll the loop, so the body holds a whole number of source iterations (BK / 16 HGMMA each).
        assert loop.opcode("HGMMA") % (bk // 16) == 0 and loop.opcode("HGMMA") > 0
        assert 2 * loop.opcode("HGMMA") == loop.opcode("LDG")
        assert loop.pipe("tensor") == loop.opcode("HGMMA")
        assert mix.outside.opcode("MUFU") >= 64 * 64 // 128  # exp2 of the tile after the loop
        assert mix.n_regs and mix.meta["arch"] == "sm_90" and mix.meta["constexprs"]["BK"] == bk
        assert mix.key == mix_key("dot_loop", "fp16", 4, 1, {"BM": 64, "BN": 64, "BK": bk})
    # One warp, 16 x 16 tile: mma.sync m16n8k16 (two per 16 of K), its operands staged through shared memory:
    # each element of the 16 x 32 A and 32 x 16 B tiles (fp16) stored once and read once by ldmatrix, a
    # whole number of source iterations per body (four HMMA each).
    (loop,) = small.innermost()
    iterations, tile_bytes = loop.opcode("HMMA") // 4, (16 * 32 + 32 * 16) * 2
    assert loop.opcode("HMMA") % 4 == 0 and loop.opcode("LDSM") > 0 and not loop.opcode("HGMMA")
    assert sum(b * n for b, n in loop.shared.items()) == 2 * tile_bytes * iterations
