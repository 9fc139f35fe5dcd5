"""The PyTorch operations a user's launcher runs between its Triton kernels, recorded while it is captured.

:func:`recording` watches one call of the launcher (and of autograd through it) with a ``TorchDispatchMode``:
every ATen operation that moves bytes — fills (``zeros_like``), copies and casts, reductions (the group sums of
dK and dV), arithmetic — with the tensors it reads and writes (whether each is contiguous: ATen copies a
transposed or broadcast view element by element) and how many Triton launches came before it.
Views, allocations (``empty``) and operations on tensors without a sequence dimension (scalars, offsets) move
nothing the schedule prices and are left out. :func:`launcher_ops` turns the records into
:class:`~iosim.schedule.problem.LauncherOp` s: shapes with the sequence lengths named (so they scale from the
capture's lengths to the problem's), the call's own tensors named (Q, K, V, O, dO, dQ, dK, dV: found by the
storage they share), and each placed before the schedule kernel whose launch comes next.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

from iosim.schedule.problem import LauncherOp, Operand

# out-of-place ops that take a tensor only for its shape, and in-place ones that overwrite it: no bytes read
FILLS = frozenset({"zeros", "zeros_like", "ones", "ones_like", "full", "full_like", "new_zeros", "new_ones",
                   "new_full", "zero_", "fill_", "fill", "normal_", "uniform_", "rand_like", "randn_like"})
MOVES_NOTHING = ("empty", "new_empty", "empty_like", "empty_strided", "new_empty_strided", "lift_fresh", "_local_scalar_dense",
                 "set_", "resize_", "_reshape_alias", "as_strided")
_KV_ROLES = ("K", "V", "dK", "dV")
_INPUT_ROLES = ("Q", "K", "V", "dO")  # the call's inputs a launcher may hand its kernels a copy of


@dataclass(frozen=True)
class _Tensor:
    storage: tuple  # (address, generation): tensors that share it are the same memory (see Recording.fresh)
    shape: tuple
    elem_bytes: int
    contiguous: bool = True  # its elements in order: False for a transposed or broadcast view


@dataclass(frozen=True)
class _Op:
    op: str
    phase: str
    after: int  # Triton launches recorded before it in its phase
    reads: tuple
    writes: tuple


class Recording:
    """What one captured call ran in PyTorch, phase by phase (``phase`` is set by the caller). A storage is
    known by its address and how many allocations that address has seen (its generation): a temporary freed
    and its memory taken again by a later tensor (a gradient) is not that tensor."""

    def __init__(self):
        self.ops: list[_Op] = []
        self.phase = "fwd"
        self.launches: list = []  # the phase's launch records, as the capture appends them
        self.generation: dict[int, int] = {}  # address -> allocations seen there
        self.allocations: list[tuple] = []  # (phase, launches before, address, generation) of each

    def fresh(self, t) -> None:
        """``t`` was just allocated: a new generation at its address."""
        address = _address(t)
        gen = self.generation[address] = self.generation.get(address, 0) + 1
        self.allocations.append((self.phase, len(self.launches), address, gen))

    def storage(self, t) -> tuple:
        address = _address(t)
        return address, self.generation.get(address, 0)

    def at_launch(self, address: int, phase: str, index: int) -> tuple:
        """The storage at ``address`` when launch ``index`` of ``phase`` ran."""
        gen = 0
        for p, before, a, g in self.allocations:
            if a == address and (PHASE_ORDER[p] < PHASE_ORDER[phase] or (p == phase and before <= index)):
                gen = g
        return address, gen

    def add(self, func, args, kwargs, out) -> None:
        import torch
        from torch.utils._pytree import tree_leaves

        name = _base(func)
        schema = func._schema
        mutated = [a for a, arg in zip(args, schema.arguments) if arg.alias_info is not None and arg.alias_info.is_write]
        aliases = [r.alias_info is not None for r in schema.returns]
        if aliases and all(aliases) and not mutated:  # a view of its input
            return
        outs = mutated or [t for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
        tensors = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        if not mutated and {_address(t) for t in outs} <= {_address(t) for t in tensors}:
            return  # a view without an alias annotation (``_unsafe_view``): its output is its input's memory
        if not mutated:
            for t in outs:  # new tensors: allocations
                self.fresh(t)
        if not outs or name in MOVES_NOTHING or name.startswith("empty"):
            return
        ins = [] if name in FILLS else [t for t in tensors if not (name == "copy_" and mutated and t is mutated[0])]
        self.ops.append(_Op(str(func), self.phase, len(self.launches), tuple(self._record(t) for t in ins),
                            tuple(self._record(t) for t in outs)))

    def _record(self, t) -> _Tensor:
        """A tensor by the memory it spans: a broadcast dimension (stride 0, ``expand``) repeats the same bytes
        and is left out of its shape."""
        shape = tuple(int(d) for d, st in zip(t.shape, t.stride()) if st != 0 or d == 1)
        return _Tensor(self.storage(t), shape, t.element_size(), bool(t.is_contiguous()))


PHASE_ORDER = {"fwd": 0, "bwd": 1}


def _base(func) -> str:
    """``aten.zeros_like.default`` -> ``zeros_like``."""
    return str(func).split(".")[1] if str(func).startswith("aten.") else str(func)


def _address(t) -> int:
    return t.untyped_storage().data_ptr()


@contextlib.contextmanager
def recording(rec: Recording | None = None):
    """``rec`` (a new :class:`Recording` if None) records every ATen operation dispatched inside the block."""
    from torch.utils._python_dispatch import TorchDispatchMode

    rec = Recording() if rec is None else rec

    class _Mode(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            rec.add(func, args, kwargs or {}, out)
            return out

    with _Mode():
        yield rec


def launcher_ops(rec: Recording, tensors: dict, seq_q: int, seq_k: int, next_kernel,
                 head_dim: int | None = None, kernel_args: set | None = None) -> tuple[LauncherOp, ...]:
    """The recorded operations as :class:`LauncherOp` s. ``tensors``: the call's tensors by role (``{"Q": q,
    ...}``); ``seq_q``, ``seq_k``: the capture's lengths; ``next_kernel(phase, after)``: the schedule kernel the
    first modelled launch at or after index ``after`` of that phase runs as (None: none follows); ``head_dim``: a
    last dimension of this size is the head dimension, not a length the capture happens to share;
    ``kernel_args``: storages the modelled kernels are passed (:meth:`Recording.at_launch`). A copy of one of the
    call's inputs that a kernel is passed in its place (K scaled, or repeated for every query head) is that input
    as the kernels see it: its write takes the input's name, its read of the call's tensor none. Operations whose tensors have no sequence
    dimension are left out."""
    roles = {rec.storage(t): role for role, t in tensors.items() if t is not None}
    out = []
    for op in rec.ops:
        names = {t.storage: roles.get(t.storage) for t in op.reads + op.writes}
        taken = [roles[t.storage] for t in op.reads if roles.get(t.storage) in _INPUT_ROLES]
        if (kernel_args and len(taken) == 1 and len(op.writes) == 1 and names[op.writes[0].storage] is None
                and op.writes[0].storage in kernel_args):  # the kernels' copy of one of the call's inputs
            names.update({t.storage: None for t in op.reads if roles.get(t.storage) == taken[0]})
            names[op.writes[0].storage] = taken[0]
        reads = tuple(_operand(t, names, seq_q, seq_k, head_dim, roles) for t in op.reads)
        writes = tuple(_operand(t, names, seq_q, seq_k, head_dim, roles) for t in op.writes)
        if not any(isinstance(d, str) for o in reads + writes for d in o.shape):
            continue
        out.append(LauncherOp(op.op, op.phase, next_kernel(op.phase, op.after), reads, writes))
    return tuple(out)


def _operand(t: _Tensor, roles: dict, seq_q: int, seq_k: int, head_dim: int | None = None,
             call: dict | None = None) -> Operand:
    """A recorded tensor with its sequence dimensions named: a key/value tensor's length (by ``roles``, or by
    ``call``, the call's own tensors) is ``Nk``, anything else's ``Nq`` first (where the capture's two lengths
    are equal they are one); a last dimension of ``head_dim`` keeps its size."""
    role = roles.get(t.storage)
    kv = role in _KV_ROLES or (call or {}).get(t.storage) in _KV_ROLES
    names = (("Nk", seq_k), ("Nq", seq_q)) if kv else (("Nq", seq_q), ("Nk", seq_k))
    last = len(t.shape) - 1
    shape = tuple(d if (n == last and d == head_dim) else next((name for name, size in names if d == size), d)
                  for n, d in enumerate(t.shape))
    return Operand(role, shape, t.elem_bytes, t.contiguous)


__all__ = ["Recording", "launcher_ops", "recording"]
