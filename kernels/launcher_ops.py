"""The PyTorch operations a user's launcher runs between its Triton kernels, recorded while it is captured.

:func:`recording` watches one call of the launcher (and of autograd through it) with a ``TorchDispatchMode``:
every ATen operation that moves bytes — fills (``zeros_like``), copies and casts, reductions (the group sums of
dK and dV), arithmetic — with the tensors it reads and writes and how many Triton launches came before it.
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


@dataclass
class _Tensor:
    storage: int  # the storage's address: tensors that share it are the same memory
    shape: tuple
    elem_bytes: int


@dataclass
class _Op:
    op: str
    phase: str
    after: int  # Triton launches recorded before it in its phase
    reads: list
    writes: list


class Recording:
    """What one captured call ran in PyTorch, phase by phase (``phase`` is set by the caller)."""

    def __init__(self):
        self.ops: list[_Op] = []
        self.phase = "fwd"
        self.launches: list = []  # the phase's launch records, as the capture appends them

    def add(self, func, args, kwargs, out) -> None:
        import torch
        from torch.utils._pytree import tree_leaves

        name = _base(func)
        schema = func._schema
        if name in MOVES_NOTHING or name.startswith("empty"):
            return
        mutated = [a for a, arg in zip(args, schema.arguments) if arg.alias_info is not None and arg.alias_info.is_write]
        aliases = [r.alias_info is not None for r in schema.returns]
        if aliases and all(aliases) and not mutated:  # a view of its input
            return
        outs = mutated or [t for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
        if not outs:
            return
        tensors = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        if not mutated and {_storage(t) for t in outs} <= {_storage(t) for t in tensors}:
            return  # a view without an alias annotation (``_unsafe_view``): its output is its input's memory
        ins = [] if name in FILLS else [t for t in tensors if not (name == "copy_" and mutated and t is mutated[0])]
        self.ops.append(_Op(str(func), self.phase, len(self.launches), [_record(t) for t in ins],
                            [_record(t) for t in outs]))


def _base(func) -> str:
    """``aten.zeros_like.default`` -> ``zeros_like``."""
    return str(func).split(".")[1] if str(func).startswith("aten.") else str(func)


def _storage(t) -> int:
    return t.untyped_storage().data_ptr()


def _record(t) -> _Tensor:
    """A tensor by the memory it spans: a broadcast dimension (stride 0, ``expand``) repeats the same bytes and is
    left out of its shape."""
    shape = tuple(int(d) for d, st in zip(t.shape, t.stride()) if st != 0 or d == 1)
    return _Tensor(_storage(t), shape, t.element_size())


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
                 head_dim: int | None = None) -> tuple[LauncherOp, ...]:
    """The recorded operations as :class:`LauncherOp` s. ``tensors``: the call's tensors by role (``{"Q": q,
    ...}``); ``seq_q``, ``seq_k``: the capture's lengths; ``next_kernel(phase, after)``: the schedule kernel the
    first modelled launch at or after index ``after`` of that phase runs as (None: none follows); ``head_dim``: a
    last dimension of this size is the head dimension, not a length the capture happens to share. Operations
    whose tensors have no sequence dimension are left out."""
    roles = {_storage(t): role for role, t in tensors.items() if t is not None}
    out = []
    for op in rec.ops:
        reads = tuple(_operand(t, roles, seq_q, seq_k, head_dim) for t in op.reads)
        writes = tuple(_operand(t, roles, seq_q, seq_k, head_dim) for t in op.writes)
        if not any(isinstance(d, str) for o in reads + writes for d in o.shape):
            continue
        out.append(LauncherOp(op.op, op.phase, next_kernel(op.phase, op.after), reads, writes))
    return tuple(out)


def _operand(t: _Tensor, roles: dict, seq_q: int, seq_k: int, head_dim: int | None = None) -> Operand:
    """A recorded tensor with its sequence dimensions named: a key/value tensor's length is ``Nk``, anything
    else's ``Nq`` first (where the capture's two lengths are equal they are one); a last dimension of
    ``head_dim`` keeps its size."""
    role = roles.get(t.storage)
    names = (("Nk", seq_k), ("Nq", seq_q)) if role in _KV_ROLES else (("Nq", seq_q), ("Nk", seq_k))
    last = len(t.shape) - 1
    shape = tuple(d if (n == last and d == head_dim) else next((name for name, size in names if d == size), d)
                  for n, d in enumerate(t.shape))
    return Operand(role, shape, t.elem_bytes)


__all__ = ["Recording", "launcher_ops", "recording"]
