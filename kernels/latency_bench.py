"""Instruction latencies of the GPU at hand, in SM cycles: one warp alone on an SM runs a dependent chain of one instruction.

The simulator prices a compiled kernel's scoreboard waits (:func:`iosim.costs.sass.scoreboard_waits`): a
consumer of a variable-latency result waits ``max(0, latency − distance)`` cycles, the latency counted
from the producer's issue to the earliest issue of an instruction that reads its result. In a chain where
every step reads the step before, that is the period of one step, so cycles per step is the latency:

- ``lat_mufu_ex2``: ``ex2.approx.ftz.f32`` of the negated previous value: ``MUFU.EX2 Rd, -Rs`` (ptxas folds
  the negation into the operand, so a step is one MUFU and nothing is subtracted; x = 2^-x stays bounded);
- ``lat_mufu_rcp``: ``rcp.approx.ftz.f32`` of the negated previous value: ``MUFU.RCP Rd, -Rs`` (x, -1/x, x, ...;
  without the negation ptxas folds rcp(rcp(x)) into x and deletes the loop);
- ``lat_shfl``: ``shfl.sync.bfly.b32``, all 32 lanes, lane mask 2^(k mod 5) at step k (a reduction's butterfly
  distances): ``SHFL.BFLY``. The values differ by lane: ptxas deletes shuffles of a warp-uniform value;
- ``lat_lds``: ``ld.shared.u32`` of the address the previous load returned: ``LDS Rd, [Rs]``. Each lane
  chases its own cycle of 32 words, 128 bytes apart (bank = lane: no conflicts), in a 4 KiB ``.shared``
  array that the inline PTX declares itself (Triton hands out no pointer to shared memory);
- ``lat_fma``: ``fma.rn.f32`` x·x − 0.25: ``FFMA`` (a check of the method: ptxas gives it a fixed 4-cycle stall);
- ``lat_cvt_f16``: ``cvt.rn.f16x2.f32`` of the previous result read as fp32, twice: ``F2FP.F16.F32.PACK_AB``
  (fixed latency on sm_90: ptxas encodes its stall, no scoreboard).

The kernel reads ``%clock64`` (:func:`iosim.kernels.microbench._ptx`) three times around two loops of
``iters`` passes each: the first loop's body is ``UNROLLS[0]`` steps, the second's ``UNROLLS[1]`` (PTX
generated in Python, one chain through both loops), each loop start made to depend on the clock read
before it. Launched at two values of ``iters``, :func:`cycles_per_op` cancels what is not the chain.
Medians of ``REPS`` repetitions; one compile per instruction. ``python -m iosim.kernels.latency_bench``
prints the dict as JSON. What each chain compiles to for sm_90 is checked ahead of time
(:func:`chain_sass`, :func:`loop_bodies`, :func:`chain_steps`; ``tests/test_latency_bench.py``).
"""
from __future__ import annotations

import argparse
import functools
import json
import re
import statistics
import sys
from dataclasses import dataclass

from iosim.costs.sass import Instruction, executable, loop_ranges, parse_functions
from iosim.kernels.device import HarnessError, cuda_torch, one_line
from iosim.kernels.microbench import _ptx

LANES = 32  # one warp, one element per lane
UNROLLS = (32, 128)  # steps per pass of the two loops; 128 steps are 2 KiB of SASS, well inside the instruction caches
ITERS = (8, 40)  # passes per loop in the two launches (iters is not specialised: one compile serves both)
REPS = 5
SLOTS = 32  # words in each lane's shared-memory cycle
F32_075 = 0x3F400000  # 0.75f


@dataclass(frozen=True)
class Chain:
    """One benchmarked instruction: the PTX of step k ({d} = f({s}), 32-bit registers; {mask} = 2^(k mod 5)),
    what ptxas must make of it, and the 32-bit value the chain starts from (plus the lane index)."""

    step: str
    sass: str  # the SASS mnemonic with modifiers that every step must compile to ("MUFU.EX2")
    seed: int = F32_075


CHAINS = {
    "lat_mufu_ex2": Chain("{{ .reg .f32 t; neg.f32 t, {s}; ex2.approx.ftz.f32 {d}, t; }}", "MUFU.EX2"),
    "lat_mufu_rcp": Chain("{{ .reg .f32 t; neg.f32 t, {s}; rcp.approx.ftz.f32 {d}, t; }}", "MUFU.RCP"),
    "lat_shfl": Chain("shfl.sync.bfly.b32 {d}, {s}, {mask}, 0x1f, 0xffffffff;", "SHFL.BFLY", seed=0),
    "lat_lds": Chain("ld.shared.u32 {d}, [{s}];", "LDS", seed=0),
    "lat_fma": Chain("fma.rn.f32 {d}, {s}, {s}, 0fBE800000;", "FFMA"),  # x → x² − 0.25 → -0.207
    "lat_cvt_f16": Chain("cvt.rn.f16x2.f32 {d}, {s}, {s};", "F2FP.F16.F32.PACK_AB"),
}


def body_ptx(key: str, unroll: int) -> str:
    """PTX of one loop pass: ``unroll`` steps of ``CHAINS[key]``, each reading the one before, from $1 to $0.

    The ``nounroll`` pragma keeps ptxas from unrolling the loop by 4 (with a remainder loop)."""
    regs = ["$1", *(f"v{k}" for k in range(unroll))]
    steps = [CHAINS[key].step.format(d=regs[k + 1], s=regs[k], mask=1 << (k % 5)) for k in range(unroll)]
    return "\n".join(["{", '.pragma "nounroll";', f".reg .b32 v<{unroll}>;", *steps, f"mov.b32 $0, v{unroll - 1};",
                      "}"])


def shared_setup_ptx(slots: int = SLOTS) -> str:
    """PTX that declares a ``.shared`` array of ``slots`` words per lane, writes into each lane's word k
    (byte 4·lane + 128·k) the address of its word k + 1 (mod ``slots``), syncs the warp and returns the
    address of the lane's word 0: where its chase starts."""
    stores = [f"add.u32 n, a, {128 * ((k + 1) % slots)}; st.shared.u32 [a+{128 * k}], n;" for k in range(slots)]
    return "\n".join(["{", f".shared .align 128 .b32 lat_chase[{LANES * slots}];", ".reg .u32 a, n;",
                      "mov.u32 a, %laneid;", "shl.b32 a, a, 2;", "mov.u32 n, lat_chase;", "add.u32 a, a, n;",
                      *stores, "bar.warp.sync 0xffffffff;", "mov.u32 $0, a;", "}"])


@functools.cache
def _chain_kernel():
    import triton
    import triton.language as tl

    clock64, _, _ = _ptx()

    @triton.jit(do_not_specialize=["seed", "iters", "zero"])
    def latency_chain(out, seed, iters, zero, SHORT: tl.constexpr, LONG: tl.constexpr, SETUP: tl.constexpr):
        """One chain x = BODY(x) (PTX, 32-bit) through two loops of ``iters`` passes, BODY = SHORT then LONG,
        each between two ``%clock64`` reads; SETUP (PTX, or "") first turns x into the start value. Writes per
        lane the cycles of the first loop, of the second, and the last x."""
        lane = tl.arange(0, 32)
        x = lane + seed  # lane-dependent: ptxas deletes shuffles of a warp-uniform value
        if SETUP != "":
            x = tl.inline_asm_elementwise(SETUP, "=r,r", [x], dtype=tl.int32, is_pure=False, pack=1)
        c0 = clock64(x)
        x = x | (c0.to(tl.int32) & zero)  # zero is 0 at run time: the loop starts after the clock read
        for _ in range(iters):
            x = tl.inline_asm_elementwise(SHORT, "=r,r", [x], dtype=tl.int32, is_pure=False, pack=1)
        c1 = clock64(x)
        x = x | (c1.to(tl.int32) & zero)
        for _ in range(iters):
            x = tl.inline_asm_elementwise(LONG, "=r,r", [x], dtype=tl.int32, is_pure=False, pack=1)
        c2 = clock64(x)
        tl.store(out + lane, c1 - c0)
        tl.store(out + 32 + lane, c2 - c1)
        tl.store(out + 64 + lane, x.to(tl.int64))  # keeps the chain alive

    return latency_chain


def chain_loops(out, key: str, iters: int, unrolls=UNROLLS):
    """Launch the chain of ``CHAINS[key]`` on one warp: ``iters`` passes of ``unrolls[0]`` steps, then ``iters``
    of ``unrolls[1]``. ``out`` (int64, 96 elements) receives per lane the two loops' cycles and the last value."""
    chain = CHAINS[key]
    setup = shared_setup_ptx() if key == "lat_lds" else ""
    return _chain_kernel()[(1,)](out, chain.seed, iters, 0, SHORT=body_ptx(key, unrolls[0]),
                                 LONG=body_ptx(key, unrolls[1]), SETUP=setup, num_warps=1, num_stages=1)


def cycles_per_op(cycles: dict[tuple[int, int], float]) -> float:
    """Cycles per step from four timed loops, ``{(unroll, iters): cycles}``: two body lengths U1 < U2 × two
    pass counts I1 < I2.

    A loop takes T(U, I) = c(U) + I·(U·L + o): c the clock reads, the loop's entry and exit, the last step
    still in flight at the clock read and the first pass's cold instruction fetches; o the loop's own cost
    per pass (counter, branch). Per pass t(U) = (T(U, I2) − T(U, I1)) / (I2 − I1) cancels c; then
    L = (t(U2) − t(U1)) / (U2 − U1) cancels o.
    """
    unrolls, iters = sorted({u for u, _ in cycles}), sorted({i for _, i in cycles})
    if len(unrolls) != 2 or len(iters) != 2 or len(cycles) != 4:
        raise ValueError(f"cycles(={sorted(cycles)}) must hold two unrolls × two pass counts")
    (u1, u2), (i1, i2) = unrolls, iters
    per_pass = {u: (cycles[(u, i2)] - cycles[(u, i1)]) / (i2 - i1) for u in unrolls}
    return (per_pass[u2] - per_pass[u1]) / (u2 - u1)


def chain_latency(torch, key: str, unrolls=UNROLLS, iters=ITERS, reps: int = REPS) -> float:
    """Cycles per step of ``CHAINS[key]``: the median over ``reps`` repetitions of :func:`cycles_per_op`,
    each from one launch per pass count; lane 0's counts (the lanes of a warp run in step)."""
    out = torch.zeros(3 * LANES, dtype=torch.int64, device="cuda")
    chain_loops(out, key, iters[0], unrolls)  # compiles; brings the code into the L2
    torch.cuda.synchronize()
    samples = []
    for _ in range(reps):
        cycles = {}
        for i in iters:
            chain_loops(out, key, i, unrolls)
            first, second = out[0].item(), out[LANES].item()  # .item() waits for the launch
            cycles[(unrolls[0], i)], cycles[(unrolls[1], i)] = float(first), float(second)
        samples.append(cycles_per_op(cycles))
    return statistics.median(samples)


def instruction_latencies(torch, progress=None) -> dict:
    """``{key: cycles per step}`` for every chain in :data:`CHAINS`; one that fails (to compile, say) is
    reported through ``progress`` and left out."""
    out = {}
    for key in CHAINS:
        try:
            out[key] = chain_latency(torch, key)
        except Exception as e:  # one failing chain leaves the others
            if progress:
                progress(f"{key}: failed: {one_line(e)}")
    return out


# ---------------------------------------------------------------------------------------------
# What the chains compile to (ahead of time, no GPU)
# ---------------------------------------------------------------------------------------------
def chain_sass(key: str, arch: int = 90, unrolls=UNROLLS) -> str:
    """``cuobjdump -sass`` text of the chain kernel for ``key``, compiled for sm_``arch`` as a launch would
    compile it (signature and specialisation captured from a launch on CPU tensors). Needs compiled Triton
    kernels: not under ``TRITON_INTERPRET=1``."""
    import torch
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.compiler import compile as triton_compile

    from iosim.kernels.sass import _backend, capture_launches, disassemble

    out = torch.zeros(3 * LANES, dtype=torch.int64)
    _, (launch,) = capture_launches(chain_loops, out, key, ITERS[0], unrolls, arch=arch)
    options = _backend(arch).parse_options(dict(launch.options))
    compiled = triton_compile(ASTSource(_chain_kernel(), launch.signature, launch.constexprs, launch.attrs),
                              target=GPUTarget("cuda", arch, 32), options=options.__dict__)
    return disassemble(compiled.asm["cubin"])[0]


def loop_bodies(sass: str) -> list[list[Instruction]]:
    """The instructions of each loop (from the back branch's target to the back branch), in code order, in
    the SASS of one kernel."""
    (insns,) = parse_functions(sass).values()
    insns = executable(insns)
    return [insns[first:last + 1] for first, last in loop_ranges(insns)]


_REG = re.compile(r"\bR(\d+)\b")


def mnemonic(insn: Instruction) -> str:
    """``MUFU.EX2`` for ``@P0 MUFU.EX2 R5, -R4``: the opcode with its modifiers, without the predicate."""
    words = insn.text.split()
    return words[1] if words[0].startswith("@") else words[0]


def _operands(insn: Instruction) -> tuple[str | None, set[str]]:
    """(destination, sources) of a one-result instruction: its first general register (after a predicate
    destination such as SHFL's ``PT``) and every register after it."""
    operands = insn.text.split(mnemonic(insn), 1)[1]
    regs = ["R" + r for r in _REG.findall(operands)]
    return (regs[0], set(regs[1:])) if regs else (None, set())


def chain_steps(body: list[Instruction], name: str) -> int:
    """How many instructions of mnemonic ``name`` the loop body holds, checked to form one dependent chain:
    each reads the register the one before wrote, the first the last one's (the loop carries it), with
    nothing between them. A ValueError names the first step that does not."""
    steps = [i for i in body if mnemonic(i) == name]
    if not steps:
        raise ValueError(f"no {name} in the loop body")
    for prev, insn in zip([steps[-1], *steps[:-1]], steps):
        dest = _operands(prev)[0]
        if dest not in _operands(insn)[1]:
            raise ValueError(f"{insn.text!r} at {insn.address:#x} does not read {dest} ({prev.text!r})")
    return len(steps)


def main(argv=None) -> int:
    """Print the instruction latencies of the GPU at hand (SM cycles per dependent step) as JSON."""
    parser = argparse.ArgumentParser(prog="python -m iosim.kernels.latency_bench", description=main.__doc__)
    parser.parse_args(argv)
    try:
        torch = cuda_torch()
    except HarnessError as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    print(json.dumps(instruction_latencies(torch, progress=lambda msg: print(msg, file=sys.stderr))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
