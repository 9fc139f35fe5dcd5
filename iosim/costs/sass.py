"""Per-loop SASS instruction mixes of one compiled kernel: opcodes and functional pipes per warp and iteration.

A kernel's compute time follows from what each warp issues on each pipe. This module reads the SASS
text that ``cuobjdump -sass`` or ``nvdisasm`` prints for one kernel, finds its loops (a branch back to
an earlier address closes a loop body), and counts, per loop body and for the code outside loops,
the instructions per opcode and per Nsight Compute pipe (``smsp__inst_executed_pipe_*``). Counts are
static, per warp: one pass through a loop body is one iteration of the SASS loop (ptxas may have
unrolled several source iterations into it). Pure: no torch, no triton; mixes of the repo's own
kernels are committed under ``iosim/costs/mixes`` and loaded with :func:`load_mixes`/:func:`find_mix`.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field, replace
from importlib import resources

from iosim.files import json_document

# Opcode → Nsight Compute pipe (the suffix of smsp__inst_executed_pipe_<pipe>) on sm_90.
# Sources: Nsight Compute Kernel Profiling Guide, section "Pipelines" (alu: bit manipulation, logic and
# integer instructions except IMAD/IMUL, fp32 compare/min/max; fma: FP32 FADD/FMUL/FFMA, IMAD/IMUL,
# IDP; fp16: paired half arithmetic, which on GA10x/GH100 the FMA pipes execute; xu: transcendentals
# (MUFU) and int<->float conversions; lsu: loads, stores, atomics, reductions to L1TEX, S2R, SHFL and
# CTA arrive/wait barriers; adu: branch address divergence and indexed constant loads; cbu: warp
# convergence, barriers and branches; uniform: the scalar uniform datapath; tensor: HMMA/IMMA/GMMA),
# the CUDA Binary Utilities "Hopper Instruction Set" table (what each opcode does) and NVIDIA forum
# answers on pipe assignment (forums.developer.nvidia.com/t/.../302018: on GH100 FP16x2 is issued to
# the FMA pipes; stackoverflow.com/q/61413176: ADU/ALU/CBU/LSU/XU roles).
# Doubtful, to be checked against measured counters (listed in DOUBTFUL):
#   F2FP (pack two fp32 into f16x2/bf16x2): conversions are "xu" per the guide, but the guide also says
#     Ampere+ does fast FP32->FP16 conversion on the ALU; we say alu.
#   SHFL: "lsu" per the guide's LSU description (shuffles go to L1TEX); some tools say adu.
#   IMAD.MOV / IMAD.SHL / IMAD.IADD are moves and adds that ptxas places on the FMA pipe to balance
#     ALU load; opcode IMAD → fma regardless of modifier.
#   MOV: alu per the guide's "most bit manipulation"; could be counted elsewhere by ncu.
#   HADD2.F32 (fp16 → fp32 convert via the fp16 path): fp16 pipe, which ncu may fold into fma.
#   BAR, DEPBAR, WARPSYNC, BSSY/BSYNC: cbu; BAR may be counted on lsu ("CTA-level barriers").
#   LDC (constant load): adu when indexed, else uniform-ish; we say adu.
#   S2R / S2UR / CS2R: lsu / uniform / alu.
#   HGMMA / WARPGROUP.* (wgmma sync helpers): tensor / cbu.
PIPE_OPCODES: dict[str, tuple[str, ...]] = {
    "tensor": ("HGMMA", "HMMA", "IMMA", "QGMMA", "IGMMA", "BGMMA", "DMMA", "HFMA2.MMA"),
    "fma": ("FFMA", "FMUL", "FADD", "FFMA2", "FMUL2", "FADD2", "IMAD", "IMUL", "IDP", "IDP4A", "FSWZADD",
            "IMADSP", "IMUL32I", "IMAD32I", "FFMA32I", "FMUL32I", "FADD32I"),
    "fp16": ("HADD2", "HMUL2", "HFMA2", "HMNMX2", "HSET2", "HSETP2", "HADD2_32I", "HMUL2_32I", "HFMA2_32I"),
    "fp64": ("DFMA", "DADD", "DMUL", "DSETP", "DMNMX", "DSET"),
    "alu": ("FMNMX", "FMNMX3", "FSEL", "FSET", "FSETP", "FCHK", "ISETP", "IMNMX", "VIMNMX", "VIMNMX3",
            "VIADDMNMX", "LOP3", "LOP", "SHF", "SHL", "SHR", "IADD3", "IADD", "VIADD", "LEA", "LEA.HI", "SEL",
            "MOV", "PRMT", "PLOP3", "P2R", "R2P", "IABS", "POPC", "FLO", "BREV", "BMSK", "SGXT", "ISCADD",
            "F2FP", "CS2R", "VABSDIFF", "VABSDIFF4", "ICMP", "FCMP", "I2IP", "F2IP", "VOTE", "NOP"),
    "xu": ("MUFU", "F2I", "I2F", "F2F", "I2FP", "FRND", "I2I"),
    "lsu": ("LDG", "STG", "LDS", "STS", "LDSM", "STSM", "LDGSTS", "LDL", "STL", "LD", "ST", "ATOM", "ATOMG",
            "ATOMS", "RED", "REDG", "REDUX", "SHFL", "S2R", "MEMBAR", "FENCE", "CCTL", "ERRBAR", "LDGDEPBAR",
            "MATCH", "ARRIVES", "SYNCS", "STAS", "LDSLK", "CGAERRBAR", "QSPC", "LDTRAM"),
    "adu": ("LDC", "BRX", "JMX", "R2B", "B2R"),
    "cbu": ("BRA", "BRXU", "JMP", "CALL", "RET", "EXIT", "BAR", "BSSY", "BSYNC", "BREAK", "BMOV", "WARPSYNC",
            "DEPBAR", "YIELD", "KILL", "NANOSLEEP", "WARPGROUP", "ELECT", "PREEXIT", "BPT", "ENDCOLLECTIVE",
            "ACQBULK"),
    "tex": ("TEX", "TLD", "TLD4", "TXQ", "SULD", "SUST", "SUATOM", "SURED"),
}
DOUBTFUL = frozenset({"F2FP", "SHFL", "IMAD", "MOV", "HADD2", "BAR", "DEPBAR", "WARPSYNC", "LDC", "S2R", "CS2R",
                      "NOP", "WARPGROUP", "ELECT", "VOTE", "SYNCS", "ARRIVES"})
_PIPE_OF = {op: pipe for pipe, ops in PIPE_OPCODES.items() for op in ops}
UNIFORM = "uniform"  # U* opcodes (UIADD3, ULDC, UMOV, ...) and the uniform TMA/barrier ops run on the uniform datapath
OTHER = "other"  # an opcode the table does not know: counted, never guessed


def pipe_of(opcode: str) -> str:
    """The Nsight Compute pipe of an opcode (mnemonic without modifiers); ``other`` if unknown."""
    if opcode in _PIPE_OF:
        return _PIPE_OF[opcode]
    if (opcode.startswith("U") and opcode[1:] in _PIPE_OF) or opcode.startswith(("UTMA", "UBLKCP", "UCGABAR", "UTC")):
        return UNIFORM
    if opcode in ("ULDC", "UMOV", "USHF", "USEL", "ULOP3", "ULEA", "UIADD3", "UIMAD", "UISETP", "UPRMT", "USETMAXREG",
                  "S2UR", "R2UR", "VOTEU", "UPLOP3", "UFLO", "UPOPC", "UBREV", "USGXT", "USETSHMSZ", "CS2UR"):
        return UNIFORM
    return OTHER


# ---------------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------------
_INSN = re.compile(r"^\s*/\*([0-9a-fA-F]{4,})\*/\s+(.*?)\s*;")
_LABEL = re.compile(r"^\s*(\.L_x_\d+|\.L_\w+):\s*$")
_FUNCTION = re.compile(r"^\s*(?:Function\s*:\s*(\S+)|\.text\.(\S+?):)\s*$")
_PRED = re.compile(r"^@!?U?P[T0-9]+\s+")
_ADDR_TARGET = re.compile(r"\b(?:BRA|BRX|JMP|CALL\.REL|CALL\.REL\.NOINC)\b[^`]*?\s(0x[0-9a-fA-F]+)")
_LABEL_TARGET = re.compile(r"`\((\.L_\w+)\)")


@dataclass(frozen=True)
class Instruction:
    """One SASS instruction: byte address, opcode (``FFMA`` for ``@P0 FFMA.FTZ ...``), text, branch target."""

    address: int
    opcode: str
    text: str
    target: int | None = None
    control: int | None = None  # the scheduling bits ptxas put beside it (see :func:`control_fields`)


def control_fields(control: int) -> tuple[int, int, int, int]:
    """``(stall, write barrier, read barrier, wait mask)`` of an instruction's control bits (bits
    105-121 of the 128-bit Volta-to-Hopper encoding, i.e. the second 64-bit word shifted right by 41):
    cycles before the warp may issue its next instruction, the scoreboard (0-5; 7 = none) its result
    releases when written, the one it releases when its sources are read, and the scoreboards it
    waits for before issuing. Described in Jia et al., "Dissecting the NVIDIA Volta GPU
    Architecture via Microbenchmarking" (2018), §2.1, and used by every SASS assembler since."""
    return control & 0xF, (control >> 5) & 0x7, (control >> 8) & 0x7, (control >> 11) & 0x3F


def opcode_of(text: str) -> str:
    """``@!P0 HGMMA.64x64x16.F32 R0, ...`` → ``HGMMA``: mnemonic without predicate and modifiers."""
    text = _PRED.sub("", text.strip())
    return text.split(None, 1)[0].split(".", 1)[0] if text else ""


def parse_functions(text: str) -> dict[str, list[Instruction]]:
    """Every function's instructions in code order, from ``cuobjdump -sass`` or ``nvdisasm`` text."""
    raw: dict[str, list[list]] = {}
    labels: dict[str, int] = {}
    pending: list[str] = []
    current = None
    for line in text.splitlines():
        if m := _FUNCTION.match(line):
            current = m.group(1) or m.group(2)
            raw.setdefault(current, [])
        elif m := _LABEL.match(line):
            pending.append(m.group(1))
        elif (m := _INSN.match(line)) and current is not None:
            address = int(m.group(1), 16)
            labels.update({name: address for name in pending})
            pending.clear()
            raw[current].append([address, m.group(2), None])
        elif (m := _HIGH_WORD.match(line)) and current is not None and raw[current]:
            raw[current][-1][2] = int(m.group(1), 16) >> 41  # cuobjdump: the encoding's second word, own line
    return {name: [_instruction(a, t, labels, c) for a, t, c in insns] for name, insns in raw.items()}


_HIGH_WORD = re.compile(r"^\s*/\*\s*(0x[0-9a-fA-F]{16})\s*\*/\s*$")


def _instruction(address: int, text: str, labels: dict[str, int], control: int | None = None) -> Instruction:
    opcode = opcode_of(text)
    target = None
    if opcode in ("BRA", "BRX", "JMP"):
        if m := _LABEL_TARGET.search(text):
            target = labels.get(m.group(1))
        elif m := _ADDR_TARGET.search(text):
            target = int(m.group(1), 16)
    return Instruction(address, opcode, text, target, control)


def executable(insns: list[Instruction]) -> list[Instruction]:
    """The instructions without the padding after the last EXIT (a self-branch and NOPs, never run)."""
    end = len(insns)
    while end and (insns[end - 1].opcode == "NOP" or _self_branch(insns[end - 1])):
        end -= 1
    return insns[:end]


def _self_branch(insn: Instruction) -> bool:
    return insn.opcode == "BRA" and insn.target == insn.address


# ---------------------------------------------------------------------------------------------
# Loops and mixes
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LoopMix:
    """Instructions one warp issues per pass: per opcode, per pipe and in all; ``depth`` 1 for a
    top-level loop, 2 inside another, 0 for code outside every loop. A loop's counts exclude the
    loops nested in it (they are reported on their own), so ``innermost`` says whether it has none."""

    opcodes: dict[str, int] = field(default_factory=dict)
    pipes: dict[str, int] = field(default_factory=dict)
    instructions: int = 0
    depth: int = 0
    start: int = 0  # byte address of the first instruction (the back-branch target for a loop)
    end: int = 0  # byte address of the last instruction (the back branch for a loop)
    innermost: bool = True
    stall_cycles: int | None = None  # sum of the stall counts: one warp's issue cycles with no scoreboard wait
    waits: dict[str, list[int]] = field(default_factory=dict)  # producer opcode -> cycles issued between it
    # and each instruction that waits for its result (see :func:`scoreboard_waits`); None/empty without control bits
    # How far the loop's asynchronous loads run ahead of their use (:func:`pipeline_slack`): recorded for a model
    # of what a missed load costs (not priced yet: see docs/validation.md, long causal sequences).
    load_wait: int | None = None  # async-copy groups a pass lets stay in flight at its wait (DEPBAR.LE SB0, N)
    async_tensor: float = 0.0  # share of the pass's tensor instructions issued after its last wgmma wait
    # bytes one warp instruction moves through the SM's shared-memory data path -> such instructions per pass
    # (:func:`shared_accesses`; None: not recorded, mixes written before it was)
    shared: dict[int, int] | None = None
    # wavefronts one warp's pass takes on that path, each access's bank conflicts counted from its lanes' addresses
    # (:mod:`iosim.costs.banks`; None: not recorded, mixes written before it was)
    shared_wavefronts: float | None = None
    # FLOPs one warp's pass does on the tensor cores, from each MMA instruction's shape (:func:`mma_flops`): a
    # loop whose tiles are smaller (a masked copy over half tiles) does less a pass (None: not recorded)
    tensor_flops: float | None = None
    # bytes one thread's pass loads from and stores to local memory (spilled registers), by each LDL/STL's
    # width (None: not recorded; then a 4-byte word an instruction)
    local_load_bytes: int | None = None
    local_store_bytes: int | None = None
    # bytes one thread's pass loads from global memory (LDG, and LDGSTS's async copies) and stores to it (STG), by
    # each instruction's width: what the loop reads and writes a pass, to hold against what the schedule it is priced
    # on reads and writes (None: not recorded)
    global_load_bytes: int | None = None
    global_store_bytes: int | None = None
    # of those loads, the bytes that allocate in the SM's L1 (:func:`l1_cached`): LDG, LDGSTS without ``.BYPASS``;
    # co-resident CTAs loading the same tile share one copy of it (None: not recorded)
    l1_load_bytes: int | None = None

    @classmethod
    def of(cls, insns: list[Instruction], depth: int = 0, innermost: bool = True, loop: bool = False,
           wavefronts: dict[int, float | None] | None = None) -> LoopMix:
        """Counts of ``insns`` (in code order); ``loop``: they repeat, so results of one pass feed the next;
        ``wavefronts``: each shared access's wavefronts by its address (:func:`iosim.costs.banks.access_wavefronts`)."""
        from iosim.costs.banks import shared_wavefronts  # banks reads this module's instructions
        opcodes = Counter(i.opcode for i in insns)
        pipes = Counter()
        for opcode, n in opcodes.items():
            pipes[pipe_of(opcode)] += n
        stall, waits = scoreboard_waits(insns, loop) if insns and all(i.control is not None for i in insns) \
            else (None, {})
        load_wait, async_tensor = pipeline_slack(insns)
        return cls(opcodes=dict(sorted(opcodes.items())), pipes=dict(sorted(pipes.items())),
                   instructions=len(insns), depth=depth, start=insns[0].address if insns else 0,
                   end=insns[-1].address if insns else 0, innermost=innermost, stall_cycles=stall, waits=waits,
                   load_wait=load_wait, async_tensor=async_tensor, shared=shared_accesses(insns),
                   shared_wavefronts=None if wavefronts is None else round(shared_wavefronts(insns, wavefronts), 4),
                   tensor_flops=float(sum(map(mma_flops, insns))),
                   local_load_bytes=sum(access_bytes(i) for i in insns if i.opcode == "LDL"),
                   local_store_bytes=sum(access_bytes(i) for i in insns if i.opcode == "STL"),
                   global_load_bytes=sum(access_bytes(i) for i in insns if i.opcode in GLOBAL_LOADS),
                   global_store_bytes=sum(access_bytes(i) for i in insns if i.opcode == "STG"),
                   l1_load_bytes=sum(access_bytes(i) for i in insns if i.opcode in GLOBAL_LOADS and l1_cached(i)))

    def pipe(self, name: str) -> int:
        return self.pipes.get(name, 0)

    def opcode(self, name: str) -> int:
        return self.opcodes.get(name, 0)

    def exposed_cycles(self, opcode: str, latency: float) -> float:
        """Cycles one warp waits per pass for results of ``opcode`` that take ``latency`` cycles."""
        return sum(max(0.0, latency - d) for d in self.waits.get(opcode, ()))

    def to_dict(self) -> dict:
        out = {"opcodes": dict(self.opcodes), "pipes": dict(self.pipes), "instructions": self.instructions,
               "depth": self.depth, "start": self.start, "end": self.end, "innermost": self.innermost}
        if self.stall_cycles is not None:
            out.update(stall_cycles=self.stall_cycles, waits={k: list(v) for k, v in sorted(self.waits.items())})
        if self.load_wait is not None:
            out.update(load_wait=self.load_wait, async_tensor=round(self.async_tensor, 4))
        if self.shared is not None:
            out.update(shared={str(k): v for k, v in sorted(self.shared.items())})
        if self.shared_wavefronts is not None:
            out.update(shared_wavefronts=self.shared_wavefronts)
        if self.tensor_flops is not None:
            out.update(tensor_flops=self.tensor_flops)
        if self.local_load_bytes is not None:
            out.update(local_load_bytes=self.local_load_bytes, local_store_bytes=self.local_store_bytes)
        if self.global_load_bytes is not None:
            out.update(global_load_bytes=self.global_load_bytes, global_store_bytes=self.global_store_bytes)
        if self.l1_load_bytes is not None:
            out.update(l1_load_bytes=self.l1_load_bytes)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> LoopMix:
        shared = data.get("shared")
        return cls(**{**data, "opcodes": dict(data["opcodes"]), "pipes": dict(data["pipes"]),
                      "waits": {k: list(v) for k, v in data.get("waits", {}).items()},
                      "shared": None if shared is None else {int(k): int(v) for k, v in shared.items()}})


# Shared-memory data path: what each warp instruction moves through it (the 32 banks of 4 bytes that serve one
# 128-byte wavefront a clock, CUDA C++ Programming Guide, "Shared Memory" of compute capability 5.x-9.0).
_WIDTH_BYTES = {"U8": 1, "S8": 1, "U16": 2, "S16": 2, "32": 4, "64": 8, "128": 16}  # per thread, 4 unless named
_SHARED_PER_THREAD = ("LDS", "STS", "ATOMS", "LDGSTS")  # one element per thread, of the width its modifier names
_MATRICES = re.compile(r"\.M(?:88|816|832|T88|T816)\.(\d)\b")  # LDSM/STSM: .x1/.x2/.x4 8x8 matrices of 16 bits
_NEVER = re.compile(r"^@!U?PT\s")  # predicated on !PT: issued, never executed (ptxas padding)


def shared_bytes(insn: Instruction) -> int:
    """Bytes one warp instruction moves through the shared-memory data path: 32 threads' elements for
    LDS/STS/ATOMS and the shared-memory side of an LDGSTS async copy, 128 bytes per 8x8 matrix of
    LDSM/STSM, a 4-byte word per thread for SHFL (shuffles cross the same crossbar); 0 for anything
    else, and for an instruction predicated on ``!PT`` (never executed)."""
    executed, full = _mnemonic(insn)
    if not executed:
        return 0
    op = insn.opcode
    if op in _SHARED_PER_THREAD:
        return 32 * _width(full)
    if op in ("LDSM", "STSM"):
        m = _MATRICES.search(full)
        return 128 * int(m.group(1)) if m else 128
    if op == "SHFL":
        return 128
    return 0


GLOBAL_LOADS = ("LDG", "LDGSTS")  # loads from global memory through the SM's load path (TMA's UTMALDG names no width)


def access_bytes(insn: Instruction) -> int:
    """Bytes one thread moves with a load or store (``LDL.LU.64``: 8, ``LDGSTS.E.BYPASS.LTC128B.128``: 16), by its
    width modifier; 0 for an instruction predicated on ``!PT`` (never executed)."""
    executed, full = _mnemonic(insn)
    return _width(full) if executed else 0


def l1_cached(insn: Instruction) -> bool:
    """Whether a global load allocates its lines in the SM's L1: a plain ``LDG`` (``ld.global``, ``.ca``) or an async
    copy that caches (``LDGSTS`` without ``.BYPASS``), not ``LDG...STRONG.GPU`` (``.cg``: served by the L2 alone, as
    FlagAttention's forward loads its tiles) nor ``.BYPASS`` (``cp.async.cg``, Triton's 16-byte copies). PTX ISA,
    "Cache Operators"; the modifiers as cuobjdump prints them for sm_90."""
    mods = _mnemonic(insn)[1].split(".")[1:]
    if insn.opcode == "LDG":
        return "STRONG" not in mods
    return insn.opcode == "LDGSTS" and "BYPASS" not in mods


def _mnemonic(insn: Instruction) -> tuple[bool, str]:
    """(whether it ever executes: not predicated on ``!PT``, its mnemonic with modifiers: ``LDL.LU.64``)."""
    text = insn.text.strip()
    return not _NEVER.match(text), _PRED.sub("", text).split(None, 1)[0]


def _width(mnemonic: str) -> int:
    """Bytes per thread a load or store's width modifier names (``.64``: 8), 4 unless named."""
    return next((_WIDTH_BYTES[m] for m in mnemonic.split(".")[1:] if m in _WIDTH_BYTES), 4)


_GMMA_SHAPE = re.compile(r"^(\d+)x(\d+)x(\d+)$")  # wgmma: HGMMA.64x128x16 (M x N x K of the warpgroup's product)
# mma.sync shapes as SASS writes them (HMMA.16816: m16 n8 k16), PTX ISA "Matrix shape" tables
_MMA_SHAPES = {"884": (8, 8, 4), "1684": (16, 8, 4), "1688": (16, 8, 8), "16816": (16, 8, 16), "8816": (8, 8, 16),
               "16832": (16, 8, 32), "8832": (8, 8, 32), "16864": (16, 8, 64), "168128": (16, 8, 128),
               "168256": (16, 8, 256)}
WARPGROUP = 4  # warps that issue one wgmma together (Hopper): each issues the instruction


def mma_flops(insn: Instruction) -> float:
    """FLOPs (2 per multiply-add) one warp's issue of a tensor-core instruction does: M·N·K of its shape, a
    wgmma's shared by the four warps of its warpgroup; 0 for anything else or a shape not known."""
    executed, full = _mnemonic(insn)
    modifiers = full.split(".")[1:]
    if pipe_of(insn.opcode) != "tensor" or not executed or not modifiers:
        return 0.0
    m = _GMMA_SHAPE.match(modifiers[0])
    if m:
        return 2.0 * int(m.group(1)) * int(m.group(2)) * int(m.group(3)) / WARPGROUP
    shape = _MMA_SHAPES.get(modifiers[0])
    return 2.0 * shape[0] * shape[1] * shape[2] if shape else 0.0


def shared_accesses(insns: list[Instruction]) -> dict[int, int]:
    """Bytes per warp instruction -> how many such instructions ``insns`` issue through shared memory."""
    out = Counter(b for b in map(shared_bytes, insns) if b)
    return dict(sorted(out.items()))


_LOAD_WAIT = re.compile(r"\bDEPBAR\.LE\s+SB0\s*,\s*(0x[0-9a-fA-F]+|\d+)")


def pipeline_slack(insns: list[Instruction]) -> tuple[int | None, float]:
    """How far a loop's asynchronous loads run ahead of their use: the async-copy groups its wait lets
    stay in flight (``DEPBAR.LE SB0, N``: N further tiles in flight; None without such a wait), and the
    share of its tensor instructions issued after its last wgmma wait (products still running while
    the warps reach the next pass's load wait, covering that much of the load's latency)."""
    waits = [int(m.group(1), 0) for i in insns if i.opcode == "DEPBAR" and (m := _LOAD_WAIT.search(i.text))]
    tensor = [n for n, i in enumerate(insns) if pipe_of(i.opcode) == "tensor"]
    last_wait = max((n for n, i in enumerate(insns) if i.opcode == "WARPGROUP" and "DEPBAR" in i.text), default=-1)
    after = sum(1 for n in tensor if n > last_wait) / len(tensor) if tensor else 0.0
    return (min(waits) if waits else None), after


def scoreboard_waits(insns: list[Instruction], loop: bool = False) -> tuple[int, dict[str, list[int]]]:
    """One warp's issue cycles through ``insns`` by their stall counts, and for every scoreboard wait
    on a variable-latency result (a load, MUFU, shuffle, conversion: whatever ptxas gave a write
    barrier) the producer's opcode and the cycles issued between producer and waiter. A wait costs
    ``max(0, latency − distance)``: what the compiler could not fill with independent instructions.
    In a loop (``loop``) a wait may be for a producer of the previous pass (distance across the back
    branch). Read barriers (a store's or an async copy's sources read) are short and not counted."""
    times, t = [], 0
    for insn in insns:
        times.append(t)
        t += control_fields(insn.control)[0]
    period = t
    last: dict[int, tuple[int, str]] = {}  # write barrier -> (issue time, producer opcode)
    if loop:  # producers still pending at the back branch, issued one period earlier
        for insn, at in zip(insns, times):
            _, wb, _, _ = control_fields(insn.control)
            if wb < 6:
                last[wb] = (at - period, insn.opcode)
    waits: dict[str, list[int]] = {}
    for insn, at in zip(insns, times):
        _, wb, _, mask = control_fields(insn.control)
        for b in range(6):
            if mask >> b & 1 and b in last:
                issued, producer = last.pop(b)
                waits.setdefault(producer, []).append(at - issued)
        if wb < 6:
            last[wb] = (at, insn.opcode)
    return period, {k: sorted(v) for k, v in sorted(waits.items())}


def loop_ranges(insns: list[Instruction]) -> list[tuple[int, int]]:
    """``(first, last)`` instruction indices of every loop, in code order: a branch at index ``b`` to
    an address at or before it closes the loop ``[target, b]``; back branches to one target merge."""
    index = {insn.address: k for k, insn in enumerate(insns)}
    last_back: dict[int, int] = {}
    cold = _cold_start(insns)
    for k, insn in enumerate(insns[:cold]):
        if insn.target is not None and insn.target <= insn.address and not _self_branch(insn):
            first = index.get(insn.target)
            if first is not None:
                last_back[first] = max(k, last_back.get(first, k))
    return sorted(last_back.items())


def _cold_start(insns: list[Instruction]) -> int:
    """Index of the first instruction after the last unconditional EXIT: out-of-line code the body jumps to
    and back from (the retry loops of a TMA copy's mbarrier wait), whose back branches close no loop of
    the kernel. ``len(insns)`` when nothing follows it."""
    for k in range(len(insns) - 1, -1, -1):
        if insns[k].opcode == "EXIT" and not _PRED.match(insns[k].text.strip()):
            return k + 1
    return len(insns)


def loop_mixes(insns: list[Instruction], wavefronts: dict[int, float | None] | None = None
               ) -> tuple[list[LoopMix], LoopMix]:
    """Every loop's own mix (nested loops excluded, depth counted) in code order, and the mix outside all loops;
    ``wavefronts`` as :meth:`LoopMix.of` takes it."""
    ranges = loop_ranges(insns)
    owner = [-1] * len(insns)  # the innermost loop holding each instruction: ranges in code order, so a later
    for n, (first, last) in enumerate(ranges):  # (nested) range that starts inside overrides its parent
        for k in range(first, last + 1):
            owner[k] = n
    loops = []
    for n, (first, last) in enumerate(ranges):
        depth = sum(f <= first and last <= la for f, la in ranges)
        nested = any(first <= f and la <= last and (f, la) != (first, last) for f, la in ranges)
        body = [insns[k] for k in range(first, last + 1) if owner[k] == n]
        loops.append(LoopMix.of(body, depth=depth, innermost=not nested, loop=not nested, wavefronts=wavefronts))
    outside = LoopMix.of([insn for k, insn in enumerate(insns) if owner[k] == -1], depth=0, wavefronts=wavefronts)
    return loops, outside


def mix_key(kernel: str, dtype: str, num_warps: int, num_stages: int, constexprs: dict) -> str:
    """The key a compiled variant is stored under: ``flash2_fwd|fp16|w4|s2|BM=128,BN=64,...`` (constexprs
    in argument order). Problem sizes are not in it: they change the code only through specialisation."""
    consts = ",".join(f"{k}={v}" for k, v in constexprs.items())
    return f"{kernel}|{dtype}|w{num_warps}|s{num_stages}|{consts}"


@dataclass(frozen=True)
class KernelMix:
    """The instruction mix of one compiled kernel: its loops in code order and the code outside them,
    with the resources ptxas gave it (registers per thread, spill bytes, shared and local bytes per CTA)."""

    kernel: str
    key: str = ""  # what identifies the compiled variant (constexprs, warps, stages, dtypes)
    n_regs: int | None = None
    spill_stores: int = 0  # STL instructions in the code (static count)
    spill_loads: int = 0  # LDL instructions in the code (static count)
    n_spill_bytes: int = 0  # local memory bytes per thread (ptxas "LOCAL"/ Triton's n_spills)
    shared_bytes: int | None = None
    local_bytes: int = 0
    num_warps: int | None = None
    loops: tuple[LoopMix, ...] = ()
    outside: LoopMix = field(default_factory=LoopMix)
    meta: dict = field(default_factory=dict)  # free-form provenance: arch, triton version, constexprs

    def innermost(self) -> list[LoopMix]:
        return [loop for loop in self.loops if loop.innermost]

    def loop_bodies(self) -> list[LoopMix]:
        """The innermost loops at the deepest nesting, the unmasked body first, then the masked one where the
        compiler emitted two loops one after the other: the one doing the most tensor-core work a pass (a
        masked copy may step over smaller tiles), then the fewest instructions (masks add instructions)."""
        loops = self.innermost()
        deepest = max((m.depth for m in loops), default=0)
        return sorted((m for m in loops if m.depth == deepest), key=lambda m: (-(m.tensor_flops or 0.0), m.instructions))

    def to_dict(self) -> dict:
        return {"kernel": self.kernel, "key": self.key, "n_regs": self.n_regs, "spill_stores": self.spill_stores,
                "spill_loads": self.spill_loads, "n_spill_bytes": self.n_spill_bytes,
                "shared_bytes": self.shared_bytes, "local_bytes": self.local_bytes, "num_warps": self.num_warps,
                "loops": [loop.to_dict() for loop in self.loops], "outside": self.outside.to_dict(),
                "meta": dict(self.meta)}

    @classmethod
    def from_dict(cls, data: dict) -> KernelMix:
        return cls(**{**data, "loops": tuple(LoopMix.from_dict(d) for d in data["loops"]),
                      "outside": LoopMix.from_dict(data["outside"]), "meta": dict(data.get("meta", {}))})


def split_loops(mix: KernelMix) -> tuple[KernelMix, KernelMix]:
    """A kernel that runs two loops one after the other (a backward's K/V-outer loop, then its Q-outer loop over
    the same CTA's rows) as two: its loops in code order, cut where the second half of its innermost loops begins
    (each loop may come as a masked and an unmasked copy), the code outside every loop with the first, the
    resources with both."""
    inner = [n for n, loop in enumerate(mix.loops) if loop.innermost]
    cut = inner[len(inner) // 2] if len(inner) >= 2 else len(mix.loops)
    first = replace(mix, loops=mix.loops[:cut], meta={**mix.meta, "part": "first loop"})
    second = replace(mix, loops=mix.loops[cut:], outside=LoopMix(), meta={**mix.meta, "part": "second loop"})
    return first, second


def kernel_mix(sass: str, kernel: str | None = None, **resources_) -> KernelMix:
    """The :class:`KernelMix` of ``kernel`` (the only/first function when None) in SASS text; ``resources_``
    are KernelMix fields known from elsewhere (n_regs, shared_bytes, local_bytes, key, ...)."""
    functions = parse_functions(sass)
    if not functions:
        raise ValueError("no SASS function found in the text")
    name = kernel if kernel is not None else next(iter(functions))
    if name not in functions:
        raise ValueError(f"kernel(={name!r}) not in the SASS; functions: {', '.join(functions)}")
    insns = executable(functions[name])
    from iosim.costs.banks import access_wavefronts  # banks reads this module's instructions
    loops, outside = loop_mixes(insns, access_wavefronts(insns, resources_.get("num_warps") or 4))
    opcodes = Counter(i.opcode for i in insns)
    return KernelMix(kernel=name, spill_stores=opcodes["STL"], spill_loads=opcodes["LDL"], loops=tuple(loops),
                     outside=outside, **resources_)


# ---------------------------------------------------------------------------------------------
# Committed data
# ---------------------------------------------------------------------------------------------
MIXES_PACKAGE = "iosim.costs.mixes"


MIXES_SUFFIXES = (".json.gz", ".json")  # mixes files are written compressed; plain ones (older, hand-made) still read


def mixes_filename(arch: int | str, triton_version: str, calibration: bool = False) -> str:
    """Our kernels' mixes file, or (``calibration``) that of the tile loops ``iosim calibrate`` times: gzip-compressed
    JSON (a Triton version's mixes are megabytes of text, a twentieth of it compressed)."""
    return f"{'calibration-' if calibration else ''}sm_{str(arch).removeprefix('sm_')}-triton-{triton_version}.json.gz"


def mixes_version(name: str, prefix: str) -> str | None:
    """The Triton version in a mixes file's ``name`` (``<prefix><version>.json[.gz]``); None for another file."""
    if not name.startswith(prefix):
        return None
    return next((name[len(prefix):-len(s)] for s in MIXES_SUFFIXES if name.endswith(s)), None)


def mixes_by_version(names, prefix: str) -> dict:
    """{Triton version: file name} of the mixes files among ``names`` (``<prefix><version>.json[.gz]``), the compressed
    one where a version has both."""
    found: dict = {}
    for name in sorted(names):
        version = mixes_version(name, prefix)
        if version and (version not in found or name.endswith(".gz")):
            found[version] = name
    return found


def _committed(arch: int | str, calibration: bool) -> dict:
    """{Triton version: the committed mixes file's name} for ``arch``."""
    prefix = mixes_filename(arch, "", calibration).removesuffix(MIXES_SUFFIXES[0])
    return mixes_by_version((p.name for p in resources.files(MIXES_PACKAGE).iterdir()), prefix)


def available_versions(arch: int | str, calibration: bool = False) -> list[str]:
    """Triton versions with committed mixes for ``arch``, oldest first."""
    return sorted(_committed(arch, calibration), key=_version_tuple)


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version)[:3])


def _ordinal(version: str) -> int:
    """``3.6.0`` → 3006000: versions on one line, so the nearest is the one least far along it."""
    major, minor, patch = (_version_tuple(version) + (0, 0, 0))[:3]
    return major * 1_000_000 + minor * 1_000 + patch


@dataclass(frozen=True)
class MixSet:
    """The committed mixes of one arch and Triton version; ``requested`` is the version asked for,
    ``version`` the one found (the nearest when the requested one has no file)."""

    arch: str
    version: str
    requested: str
    mixes: tuple[KernelMix, ...]

    def find(self, kernel: str, key: str) -> KernelMix:
        for mix in self.mixes:
            if mix.kernel == kernel and mix.key == key:
                return mix
        raise KeyError(f"no mix for kernel {kernel!r} with key {key!r} in {mixes_filename(self.arch, self.version)}")


def load_mixes(arch: int | str = 90, triton_version: str | None = None, calibration: bool = False) -> MixSet:
    """The committed mixes for ``arch`` and ``triton_version`` (the newest when None), falling back to the
    nearest committed version (``MixSet.version`` says which); ``calibration``: the calibration's tile loops."""
    versions = available_versions(arch, calibration)
    if not versions:
        raise FileNotFoundError(f"no committed SASS mixes for sm_{arch} in {MIXES_PACKAGE}")
    wanted = triton_version or versions[-1]
    target = _ordinal(wanted)
    version = wanted if wanted in versions else min(versions, key=lambda v: (abs(_ordinal(v) - target), _ordinal(v)))
    name = _committed(arch, calibration)[version]
    data = json_document(resources.files(MIXES_PACKAGE).joinpath(name).read_bytes(), name)
    mixes = tuple(KernelMix.from_dict(d) for d in data["mixes"])
    return MixSet(arch=str(arch).removeprefix("sm_"), version=version, requested=wanted, mixes=mixes)


def find_mix(kernel: str, key: str, arch: int | str = 90, triton_version: str | None = None) -> tuple[KernelMix, str]:
    """The committed mix of ``kernel`` compiled as ``key``, and the Triton version whose data gave it."""
    found = load_mixes(arch, triton_version)
    return found.find(kernel, key), found.version


def write_mixes(mixes: list[KernelMix], arch: int | str, triton_version: str) -> dict:
    """The JSON document of a mixes file (what the committed files hold)."""
    return {"schema": 1, "arch": f"sm_{str(arch).removeprefix('sm_')}", "triton": triton_version,
            "mixes": [m.to_dict() for m in mixes]}
