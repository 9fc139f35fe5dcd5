"""Shared-memory bank conflicts read from compiled SASS: each thread's shared address, evaluated lane by lane.

A warp's shared-memory access takes as many wavefronts of the SM's shared-memory data path as its most
loaded bank has distinct 4-byte words to serve (32 banks of 4 bytes; one word read by many lanes is a
broadcast). A wide access is served in groups of lanes (8-byte: half-warps, 16-byte: quarter-warps;
``ldmatrix``/``stmatrix``: one 8x8 matrix, eight 16-byte rows, at a time), each group at least one wavefront.
Which words a lane touches follows from ``SR_TID.X`` through the integer code before the access, so this
module runs that code lane by lane for each warp of a CTA: a register holds 32 known values, or 32 values
plus one constant the warp shares (a uniform register, a kernel argument, the CTA's index: it moves every
lane's address alike and leaves the banks' load as it is), or is unknown. Code runs once in address order,
branches not followed: a loop's addresses differ between passes by what its warps share. An access whose
address is unknown is priced as conflict-free (its bytes at 128 a wavefront), as before this module.
The hardware's rule: NVIDIA, CUDA C++ Programming Guide, "Shared Memory" (compute capability 5.x+ banks);
``ldmatrix`` per matrix: PTX ISA, "Warp-level matrix load instruction: ldmatrix".
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from iosim.costs.sass import Instruction, shared_bytes

WARP = 32
BANKS = 32
WORD = 4  # bytes a bank serves per wavefront
WAVEFRONT_BYTES = BANKS * WORD  # what one wavefront serves without conflicts: 128 bytes
_MASK = 0xFFFFFFFF


@dataclass(frozen=True)
class Lanes:
    """One register across a warp: ``values`` per lane, plus an unknown constant all lanes share when
    ``shifted`` (what a uniform register or kernel argument adds); bank conflicts need only the former."""

    values: np.ndarray
    shifted: bool = False


def _known(v) -> Lanes:
    return Lanes(np.asarray(v, dtype=np.int64) & _MASK)


_UNIFORM = Lanes(np.zeros(WARP, dtype=np.int64), True)  # a warp-wide value not known here
_ZERO = _known(np.zeros(WARP, dtype=np.int64))

_SHARED_SPECIAL = ("SR_CTAID.X", "SR_CTAID.Y", "SR_CTAID.Z", "SR_CgaCtaId", "SR_SMID", "SR_NTID.X", "SR_NCTAID.X",
                   "SR_NCTAID.Y", "SR_NCTAID.Z", "SR_SWINHI", "SR_CLUSTERCTARANK")
_PRED_GUARD = re.compile(r"^@(!?)(U?P[T0-9]+)\s+")
_OPERAND = re.compile(r"^(-|~|!)?\|?([A-Za-z_0-9]+|c\[0x[0-9a-f]+\]\[0x[0-9a-f]+\])\|?((?:\.[A-Za-z0-9_]+)*)$")


def _split_operands(text: str) -> tuple[str, list[str]]:
    """``LOP3.LUT R3, R0, 0x1f, RZ, 0xc0, !PT`` → (``LOP3.LUT``, [``R3``, ``R0``, ...]), brackets kept whole."""
    head, _, rest = text.partition(" ")
    parts, depth, cur = [], 0, ""
    for ch in rest:
        if ch == "," and depth == 0:
            parts.append(cur.strip())
            cur = ""
            continue
        depth += (ch == "[") - (ch == "]")
        cur += ch
    if cur.strip():
        parts.append(cur.strip())
    return head, parts


class WarpState:
    """Registers and predicates of one warp (``warp`` of its CTA) as the code before an access leaves them."""

    def __init__(self, warp: int):
        lane = np.arange(WARP, dtype=np.int64)
        self.tid = Lanes(warp * WARP + lane)
        self.lane = Lanes(lane)
        self.regs: dict[str, Lanes | None] = {}
        self.preds: dict[str, np.ndarray | None] = {}
        self.alive = np.ones(WARP, dtype=bool)  # lanes not yet gone by an ``@P EXIT`` above

    # -- operands ------------------------------------------------------------------------------
    def value(self, operand: str) -> Lanes | None:
        """An operand's lanes: a register, an immediate, a uniform register or constant (shared unknown)."""
        m = _OPERAND.match(operand.replace(".reuse", ""))
        if not m or m.group(3) or "|" in operand:  # a half or byte selector (R2.H1), an absolute value: not modelled
            return None
        sign, name, _ = m.groups()
        if name in ("RZ", "URZ"):
            v = _ZERO
        elif re.fullmatch(r"-?0x[0-9a-fA-F]+|-?\d+", name):
            v = _known(np.full(WARP, int(name, 0)))
        elif name.startswith("UR") or name.startswith("c["):
            v = _UNIFORM
        elif re.fullmatch(r"R\d+", name):
            v = self.regs.get(name)
        else:
            return None
        if v is None or not sign:
            return v
        if sign == "-":
            return Lanes(-v.values & _MASK, v.shifted)
        return None if v.shifted else _known(~v.values)  # "~": bitwise not

    def predicate(self, name: str) -> np.ndarray | None:
        """Per-lane truth of a predicate operand (``PT``, ``!P0``); None where not known."""
        neg = name.startswith("!")
        name = name.lstrip("!")
        v = np.ones(WARP, dtype=bool) if name in ("PT", "UPT") else self.preds.get(name)
        return None if v is None else (~v if neg else v)

    def guard(self, text: str) -> tuple[np.ndarray | None, str]:
        """(lanes the instruction's ``@P`` guard enables, None if not known; the text without the guard)."""
        m = _PRED_GUARD.match(text)
        if not m:
            return self.alive.copy(), text
        p = self.predicate(m.group(2))
        if p is not None and m.group(1):
            p = ~p
        return (None if p is None else p & self.alive), text[m.end():]

    # -- execution -----------------------------------------------------------------------------
    def run(self, insn: Instruction) -> None:
        """Update the registers and predicates ``insn`` writes (unknown where it is not modelled)."""
        enabled, text = self.guard(insn.text.strip())
        mnemonic, ops = _split_operands(text)
        if mnemonic == "EXIT":  # lanes that leave; code after an unconditional exit is reached by a branch
            if not _PRED_GUARD.match(insn.text.strip()):
                self.alive = np.ones(WARP, dtype=bool)
            elif enabled is not None:
                self.alive = self.alive & ~enabled
            return
        # destinations: a register first, or one or two predicates first (ISETP, LOP3 P0, SHFL PT), then a register
        lead = [op for op in ops[:2] if re.fullmatch(r"P\d|PT", op)]
        dest = ops[0] if ops and not lead else ""
        if lead and mnemonic.split(".")[0] in _PREDICATE_THEN_REGISTER and len(ops) > len(lead):
            dest = ops[len(lead)]
        if not lead and not re.fullmatch(r"R\d+", dest):
            return  # stores, branches, barriers, uniform-datapath code: no vector register or predicate written
        result, evaluated = _evaluate(self, mnemonic, ops)
        preds = {**{p: None for p in lead}, **evaluated}  # a predicate written and not modelled is unknown
        if _PRED_GUARD.match(insn.text.strip()):  # a guarded write: lanes where it is off keep the old value
            result = _blend(enabled, result, self.regs.get(dest))
            preds = {p: _blend_pred(enabled, v, self.preds.get(p)) for p, v in preds.items()}
        if re.fullmatch(r"R\d+", dest):
            first = int(dest[1:])
            for r in range(first, first + _registers_written(mnemonic)):
                self.regs[f"R{r}"] = result if r == first else None
        for p, v in preds.items():
            if p != "PT":
                self.preds[p] = v


_PREDICATE_THEN_REGISTER = ("SHFL", "LOP3")  # write a predicate and then a register (others write either first)


def _registers_written(mnemonic: str) -> int:
    """Registers an instruction writes from its destination on: 2 for 64-bit results, 4 for 128-bit."""
    mods = mnemonic.split(".")[1:]
    if "128" in mods:
        return 4
    if "64" in mods or "WIDE" in mods:
        return 2
    m = re.search(r"\.M(?:88|T88|816|T816|832)\.(\d)", mnemonic)
    return int(m.group(1)) if m else 1


def _blend(enabled, new: Lanes | None, old: Lanes | None) -> Lanes | None:
    if enabled is None or new is None or old is None or new.shifted != old.shifted:
        return None
    return Lanes(np.where(enabled, new.values, old.values), new.shifted)


def _blend_pred(enabled, new, old):
    if enabled is None or new is None or old is None:
        return None
    return np.where(enabled, new, old)


def _lop3(a: np.ndarray, b: np.ndarray, c: np.ndarray, lut: int) -> np.ndarray:
    """LOP3's three-input function by its truth table (``lut`` = f(0xF0, 0xCC, 0xAA))."""
    out = np.zeros_like(a)
    for k in range(8):
        if lut >> k & 1:
            out |= (a if k & 4 else ~a) & (b if k & 2 else ~b) & (c if k & 1 else ~c)
    return out & _MASK


def _signed(x: np.ndarray) -> np.ndarray:
    return np.where(x & 0x80000000, x - (1 << 32), x)


def _compare(op: str, a: np.ndarray, b: np.ndarray, signed: bool) -> np.ndarray | None:
    if signed:
        a, b = _signed(a), _signed(b)
    return {"LT": a < b, "LE": a <= b, "GT": a > b, "GE": a >= b, "EQ": a == b, "NE": a != b}.get(op)


def _evaluate(st: WarpState, mnemonic: str, ops: list[str]) -> tuple[Lanes | None, dict]:
    """The value an integer instruction writes to its destination register, and the predicates it sets."""
    parts = mnemonic.split(".")
    op, mods = parts[0], parts[1:]
    src = ops[1:]
    val = st.value

    def exact(*xs):  # all known, no shared unknown: values usable in any arithmetic
        return all(x is not None and not x.shifted for x in xs)

    if op == "S2R":  # the thread's index and lane; any other special register (CTA index, SM) the warp shares
        return {"SR_TID.X": st.tid, "SR_LANEID": st.lane, "SR_TID.Y": _ZERO, "SR_TID.Z": _ZERO}.get(
            src[0], _UNIFORM if src[0] in _SHARED_SPECIAL else None), {}
    if op in ("S2UR", "LDC", "ULDC"):
        return (_UNIFORM if op != "LDC" or "[R" not in ",".join(src) else None), {}
    if op == "MOV" and src:
        return val(src[0]), {}
    if op in ("IADD3", "IADD", "VIADD"):
        preds = {p: None for p in ops[1:] if re.fullmatch(r"P\d", p)}
        terms = [val(s) for s in src if not re.fullmatch(r"!?P[T0-9]", s)]
        if "X" in mods or any(t is None for t in terms):
            return None, preds
        return Lanes(sum(t.values for t in terms) & _MASK, any(t.shifted for t in terms)), preds
    if op == "IMAD" or op == "IMUL":
        if "SHL" in mods:  # IMAD.SHL.U32 d, a, 2^k, RZ: a << k
            a, b = val(src[0]), val(src[1])
            return (None if a is None or not exact(b) else Lanes(a.values * b.values & _MASK, a.shifted)), {}
        if "MOV" in mods:
            return val(src[-1]), {}
        if "IADD" in mods:
            a, c = val(src[0]), val(src[-1])
            return (None if a is None or c is None else Lanes((a.values + c.values) & _MASK, a.shifted or c.shifted)), {}
        if "HI" in mods or "WIDE" in mods or "X" in mods:
            a, b = val(src[0]), val(src[1])
            if "HI" in mods and exact(a, b) and "U32" in mods:
                hi = (a.values * b.values) >> 32
                c = val(src[2]) if len(src) > 2 else _ZERO
                return (Lanes((hi + c.values) & _MASK, c.shifted) if c is not None else None), {}
            return None, {}
        a, b = val(src[0]), val(src[1])
        c = val(src[2]) if len(src) > 2 else _ZERO
        if a is None or b is None or c is None:
            return None, {}
        if exact(a, b):
            return Lanes((a.values * b.values + c.values) & _MASK, c.shifted), {}
        if not b.shifted and np.all(b.values == b.values[0]):  # (shared + a) * k: the shared part stays shared
            return Lanes((a.values * b.values + c.values) & _MASK, True), {}
        return None, {}
    if op == "LOP3" and "LUT" in mods:
        preds = {ops[0]: None} if re.fullmatch(r"P\d", ops[0]) else {}
        regs = [s for s in src if not re.fullmatch(r"!?P[T0-9]", s)]
        if re.fullmatch(r"P\d", ops[0]):  # LOP3.LUT P0, RZ, a, b, c, lut, !PT: P0 = result != 0
            regs = regs[1:]
        if len(regs) < 4:
            return None, preds
        a, b, c = (val(s) for s in regs[:3])
        if not exact(a, b, c):
            return None, preds
        out = _lop3(a.values, b.values, c.values, int(regs[3], 0))
        if re.fullmatch(r"P\d", ops[0]):  # the predicate says whether the result is non-zero
            return _known(out), {ops[0]: out != 0}
        return _known(out), preds
    if op == "SHF":
        a, s, b = (val(x) for x in src[:3])
        if not exact(s) or a is None or b is None:
            return None, {}
        k = s.values & 31
        if "L" in mods:  # funnel (b:a) << k, high word if HI else the low
            if "HI" in mods:
                if not exact(a, b):
                    return None, {}
                return _known(((b.values << k) | (a.values >> (32 - k))) & _MASK), {}
            if a.shifted and not np.any(b.values):
                return Lanes(a.values << k & _MASK, True), {}
            if not exact(a, b):
                return None, {}
            return _known(a.values << k), {}
        if "R" in mods and exact(a, b):
            if "HI" in mods:  # (b:a) >> k, high word
                return _known((b.values >> k) if "U32" in mods else (_signed(b.values) >> k)), {}
            return _known(((a.values >> k) | (b.values << (32 - k))) & _MASK), {}
        return None, {}
    if op in ("SHL", "SHR"):
        a, s = val(src[0]), val(src[1])
        if not exact(a, s):
            return None, {}
        return _known(a.values << s.values if op == "SHL" else a.values >> s.values), {}
    if op == "LEA" and "X" in mods:  # the high word of a 64-bit address (carry in): not modelled
        return None, {}
    if op == "LEA" and "HI" not in mods:  # LEA d, a, b, k: (a << k) + b
        a, b = val(src[0]), val(src[1])
        k = int(src[2], 0) if len(src) > 2 and re.fullmatch(r"0x[0-9a-f]+|\d+", src[2]) else 0
        if a is None or b is None:
            return None, {}
        return Lanes(((a.values << k) + b.values) & _MASK, a.shifted or b.shifted), {}
    if op == "LEA" and "HI" in mods:  # LEA.HI d, a, b, c, k: b + ((c:a) >> (32 - k))
        a, b = val(src[0]), val(src[1])
        c = val(src[2]) if len(src) > 3 else _ZERO
        k = int(src[-1], 0) if re.fullmatch(r"0x[0-9a-f]+|\d+", src[-1]) else None
        if k is None or b is None or not exact(a, c):
            return None, {}
        return Lanes((b.values + (((c.values << 32) | a.values) >> (32 - k))) & _MASK, b.shifted), {}
    if op == "SGXT" and "U32" in mods:
        a, k = val(src[0]), val(src[1])
        return (_known(a.values & ((1 << int(k.values[0])) - 1)) if exact(a, k) else None), {}
    if op == "ISETP":
        # ISETP.GE.U32.AND P0, PT, a, b, PT
        preds = {ops[0]: None}
        if len(ops) > 1 and re.fullmatch(r"P\d", ops[1]):
            preds[ops[1]] = None
        regs = [s for s in ops[1:] if not re.fullmatch(r"!?P[T0-9]", s)]
        if len(regs) >= 2 and "AND" in mods and len(ops) >= 5 and ops[1] == "PT" and ops[-1] == "PT":
            a, b = val(regs[0]), val(regs[1])
            if exact(a, b):
                cmp = _compare(mods[0], a.values, b.values, "U32" not in mods)
                preds[ops[0]] = cmp
        return None, preds
    if op == "SEL":
        a, b, p = val(src[0]), val(src[1]), st.predicate(src[2])
        if a is None or b is None or p is None or a.shifted != b.shifted:
            return None, {}
        return Lanes(np.where(p, a.values, b.values), a.shifted), {}
    return None, {}


# ---------------------------------------------------------------------------------------------
# Wavefronts of one access
# ---------------------------------------------------------------------------------------------
_ADDRESS = re.compile(r"\[([^\]]*)\]")


def access_address(st: WarpState, insn: Instruction) -> np.ndarray | None:
    """Each lane's byte address (up to what the warp shares) of a shared access, None where not known."""
    m = _ADDRESS.search(insn.text)
    if not m:
        return None
    total = np.zeros(WARP, dtype=np.int64)
    for term in m.group(1).replace("-", "+-").split("+"):
        term, _, scale = term.strip().partition(".X")  # [R2.X4+UR4]: the index scaled by 4
        if not term:
            continue
        v = st.value(term.removesuffix(".64"))
        if v is None or (scale and not scale.isdigit()):
            return None
        total = total + v.values * (int(scale) if scale else 1)
    return total & _MASK


def _group_wavefronts(addresses: np.ndarray, width: int, group: int, active: np.ndarray) -> int:
    """Wavefronts of an access of ``width`` bytes a lane served ``group`` lanes at a time: per group,
    the most distinct words one bank serves (at least one wavefront per group with an active lane)."""
    total = 0
    for g in range(0, WARP, group):
        on = active[g:g + group]
        if not on.any():
            continue
        words = {int(a) // WORD + w for a in addresses[g:g + group][on] for w in range(max(1, width // WORD))}
        per_bank: dict[int, int] = {}
        for word in words:
            per_bank[word % BANKS] = per_bank.get(word % BANKS, 0) + 1
        total += max(per_bank.values())
    return total


_MATRIX_COUNT = re.compile(r"\.M(?:88|T88|816|T816|832)\.(\d)\b")


def wavefronts(st: WarpState, insn: Instruction) -> int | None:
    """Wavefronts one warp's execution of a shared-memory ``insn`` takes, from its lanes' addresses;
    None where an address is not known (or the instruction is not a lane-addressed shared access)."""
    nbytes = shared_bytes(insn)
    if not nbytes or insn.opcode not in ("LDS", "STS", "ATOMS", "LDSM", "STSM"):
        return None
    active, _ = st.guard(insn.text.strip())
    if active is None:
        return None
    if not active.any():
        return 0
    addresses = access_address(st, insn)
    if addresses is None:
        return None
    if insn.opcode in ("LDSM", "STSM"):  # 8x8 matrices of 16-byte rows, each row's address from one lane
        m = _MATRIX_COUNT.search(insn.text)
        matrices = int(m.group(1)) if m else 1
        return sum(_group_wavefronts(addresses[8 * i:8 * i + 8], 16, 8, active[8 * i:8 * i + 8])
                   for i in range(matrices))
    width = nbytes // WARP
    return _group_wavefronts(addresses, width, {8: 16, 16: 8}.get(width, WARP), active)


def ideal_wavefronts(insn: Instruction) -> int:
    """Wavefronts a shared access takes without conflicts: its bytes at 128 a wavefront, at least one."""
    return max(1, -(-shared_bytes(insn) // WAVEFRONT_BYTES))


def access_wavefronts(insns: Sequence[Instruction], warps: int) -> dict[int, float | None]:
    """Per shared-memory access (by its address in the code), wavefronts per warp execution averaged over
    those of the CTA's ``warps`` warps that issue it (an ``@P EXIT`` above may end some; a guard that turns
    every lane off still issues it, at no wavefront); None for one whose lanes' addresses are not known."""
    per_warp: dict[int, list[int | None]] = {}
    for w in range(max(1, warps)):
        st = WarpState(w)
        for insn in insns:
            if shared_bytes(insn) and st.alive.any():  # issued by this warp (its guard may turn every lane off)
                per_warp.setdefault(insn.address, []).append(wavefronts(st, insn))
            st.run(insn)
    return {address: None if None in counts else sum(counts) / len(counts) for address, counts in per_warp.items()}


def shared_wavefronts(insns: Iterable[Instruction], per_access: dict[int, float | None]) -> float:
    """Wavefronts one warp's pass through ``insns`` takes on the shared-memory path: each access's from
    its lanes where known (:func:`access_wavefronts`), else conflict-free; shuffles and async copies one
    wavefront per 128 bytes."""
    total = 0.0
    for insn in insns:
        if not shared_bytes(insn):
            continue
        known = per_access.get(insn.address)
        total += ideal_wavefronts(insn) if known is None else known
    return total
