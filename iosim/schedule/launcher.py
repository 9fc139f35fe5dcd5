"""What a user's launcher runs in PyTorch besides its Triton kernels, as kernels of the schedule.

A launcher does more than launch: ``torch.zeros_like(dq)`` before a kernel that stores dQ, ``reshape(...).sum(2)``
of dK and dV over each group of query heads, a cast, a ``contiguous()`` copy. Each is a CUDA kernel of its own
that moves bytes through the L2 and DRAM (FlagAttention's backward: 16 % of its DRAM bytes). The captured
operations (:class:`~iosim.schedule.problem.LauncherOp`, recorded by :mod:`iosim.kernels.launcher_ops`) become
PyTorch elementwise kernels (:func:`~iosim.schedule.common.elementwise`) placed before the schedule kernel they
precede. An operation that does what one of the schedule's own PyTorch kernels does (the same kind, fill, copy
or sum, the same bytes read and written, in the same pass: flash2's dQ fill and cast, its group sums) is that
kernel, not a second one; those of the schedule's own that the launcher does not run are dropped.
"""
from __future__ import annotations

import math
import re
from dataclasses import replace

from iosim.schedule.common import TensorSet, elementwise
from iosim.schedule.ir import READ, WRITE, Kernel
from iosim.schedule.problem import LauncherOp, RunConfig

# flash2's own kernels that stand for PyTorch operations of its launcher (kernels/flash2.py runs them in torch),
# by what they do: an operation does what one of them does if it is of that kind and moves the same bytes
TORCH_KERNELS = {"zeros_dq": "fill", "cast_dq": "copy", "sum_dk": "sum", "sum_dv": "sum"}
_KINDS = (("sum", "sum"), ("copy", "copy"), ("clone", "copy"), ("contiguous", "copy"))  # ATen name part -> kind
# operations that draw random numbers (reading nothing): ATen's distribution kernels, by the distribution they draw
_RANDOM = {"randn": "normal", "randn_like": "normal", "normal": "normal", "normal_": "normal",
           "rand": "uniform", "rand_like": "uniform", "uniform": "uniform", "uniform_": "uniform"}


def with_launcher_ops(kernels: list, ts: TensorSet, config: RunConfig) -> list:
    """``kernels`` with each of ``config.launcher_ops`` in its place: as the schedule's own PyTorch kernel where one
    does the same, else as a new PyTorch kernel before the kernel it precedes (at the end of its pass where that
    is None). The schedule's own PyTorch kernels that no operation does are dropped: the capture says what the
    launcher runs in PyTorch (a launcher that sums dK over a group in fp32 and then casts runs no bf16 sum)."""
    p = config.problem
    own = {n: _bytes(k, ts) for n, k in enumerate(kernels) if k.name in TORCH_KERNELS}
    added: dict[int, list] = {}  # position -> kernels to run before the kernel there, in captured order
    for op in config.launcher_ops:
        does = (_kind(op), op.bytes(p.seq_q, p.seq_k), op.phase)
        found = next((n for n, b in own.items() if (TORCH_KERNELS[kernels[n].name], b, _phase(kernels[n])) == does),
                     None)
        if found is not None:  # the schedule runs it already
            del own[found]
            continue
        added.setdefault(_position(kernels, op), []).append(_kernel(op, ts, config, sum(map(len, added.values()))))
    out = []
    for n, kernel in enumerate(kernels):
        out += added.get(n, [])
        if n not in own:
            out.append(kernel)
    return out + added.get(len(kernels), [])


def kernels_view(config: RunConfig) -> RunConfig:
    """The problem as the kernels see it: where the launcher hands them K and V copied for every query head
    (an operation writes K or V with ``heads`` heads: ``repeat_interleave``, ``repeat_kv``), they run without
    GQA, ``kv_heads`` = ``heads``."""
    p = config.problem
    if p.kv_heads == p.heads:
        return config
    full = p.batch * p.heads * p.seq_k * p.head_dim
    for op in config.launcher_ops:
        if any(o.tensor in ("K", "V") and o.numel(p.seq_q, p.seq_k) == full for o in op.writes):
            return config.with_(problem=replace(p, kv_heads=p.heads))
    return config


def _kind(op: LauncherOp) -> str:
    """What an operation does: ``normal`` or ``uniform`` (random numbers drawn), ``fill`` (anything else that reads
    nothing), ``sum``, ``copy`` (a copy or cast), or ``other``."""
    if not op.reads:
        return _RANDOM.get(_short(op.op), "fill")
    name = _short(op.op)
    return next((kind for part, kind in _KINDS if part in name), "other")


def _aten(op: LauncherOp, numel: list) -> str:
    """Which of ATen's kernels ``op`` runs (:func:`iosim.costs.code.aten_code`): its kind, and for a copy that
    reads fewer elements than it writes (a broadcast view, K repeated for each query head) or of a transposed
    view (an operand not contiguous) ATen's element-by-element ones, ``broadcast`` and ``strided``
    (``numel``: its operands' elements, writes first)."""
    kind = _kind(op)
    if kind == "copy" and min(numel[len(op.writes):], default=0) < max(numel[:len(op.writes)]):
        return "broadcast"
    if kind == "copy" and any(not o.contiguous for o in op.reads + op.writes):
        return "strided"
    return kind


def _phase(kernel: Kernel) -> str:
    return "fwd" if kernel.name.endswith("_fwd") else "bwd"


def _position(kernels: list, op: LauncherOp) -> int:
    """Index of the kernel ``op`` runs before: ``op.before``, else the end of its pass."""
    names = [k.name for k in kernels]
    if op.before is not None and op.before in names:
        return names.index(op.before)
    if op.phase == "fwd":
        return max((n + 1 for n, k in enumerate(kernels) if _phase(k) == "fwd"), default=0)
    return len(kernels)


def _bytes(kernel: Kernel, ts: TensorSet) -> tuple[int, int]:
    """(bytes read, bytes written) of one of the schedule's PyTorch kernels: every tensor it touches, whole."""
    size = {name: math.prod(spec[:4]) for name, spec in ts.specs.items()}
    reads = sum(size[pt.tensor] for pt in kernel.patterns if pt.kind == READ)
    writes = sum(size[pt.tensor] for pt in kernel.patterns if pt.kind == WRITE)
    return reads, writes


def _kernel(op: LauncherOp, ts: TensorSet, config: RunConfig, n: int) -> Kernel:
    """``op`` as an elementwise kernel: its operands laid out alike (slices × rows, each its own columns), the
    call's tensors as the schedule has them so that their lines are the same lines."""
    p = config.problem
    operands = op.writes + op.reads
    numel = [o.numel(p.seq_q, p.seq_k) for o in operands]
    slices, rows = _layout(operands, numel, ts, p.seq_q, p.seq_k)
    names = []
    for i, (o, count) in enumerate(zip(operands, numel)):
        name = o.tensor if o.tensor is not None else f"tmp{n}_{i}"  # each temporary its own tensor
        spec = ts.specs.get(name)
        cols = count // (slices * rows)
        if spec is not None and (spec[0], spec[1], spec[2], spec[3]) != (slices, rows, cols, o.elem_bytes):
            name = f"{name}_launcher{n}"  # the call's tensor in another layout: lines of its own
            spec = None
        if spec is None:
            ts.add(name, slices, rows, cols, o.elem_bytes)
        names.append(name)
    writes, reads = tuple(dict.fromkeys(names[:len(op.writes)])), tuple(dict.fromkeys(names[len(op.writes):]))
    widest = max(ts.specs[t][2] for t in names)
    fill = not op.reads
    return elementwise(f"torch_{_short(op.op)}", ts, reads, writes, slices, rows, widest,
                       simt_per_elem=0 if fill else 1.0, aten=_aten(op, numel))


def _layout(operands: tuple, numel: list, ts: TensorSet, seq_q: int, seq_k: int) -> tuple[int, int]:
    """(slices, rows) every operand is cut into: the first operand that is one of the call's tensors keeps the
    schedule's own; else the first written operand's leading dimensions and rows (a vector: one slice of one
    row). Where an operand's elements do not divide into them, one slice of as many rows as all share."""
    for o, count in zip(operands, numel):
        spec = ts.specs.get(o.tensor) if o.tensor else None
        if spec is not None and spec[0] * spec[1] * spec[2] == count:
            slices, rows = spec[0], spec[1]
            break
    else:
        dims = operands[0].dims(seq_q, seq_k)
        slices, rows = (math.prod(dims[:-2]), dims[-2]) if len(dims) >= 2 else (1, 1)
    if all(count % (slices * rows) == 0 for count in numel):
        return slices, rows
    return 1, math.gcd(*numel)


def _short(op: str) -> str:
    """``aten.zeros_like.default`` -> ``zeros_like``."""
    parts = op.split(".")
    return re.sub(r"\W", "_", parts[1] if len(parts) > 1 and parts[0] == "aten" else parts[0])


__all__ = ["TORCH_KERNELS", "kernels_view", "with_launcher_ops"]
